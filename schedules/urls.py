from django.urls import path

from agentrunner.api import operations
from schedules.api import fires, schedules

urlpatterns = [
    path(
        "schedules", operations(get=schedules.ScheduleListApi, post=schedules.ScheduleCreateApi), name="schedules-list"
    ),
    path(
        "schedules/<int:schedule_id>",
        operations(
            get=schedules.ScheduleDetailApi, patch=schedules.ScheduleUpdateApi, delete=schedules.ScheduleDeleteApi
        ),
        name="schedules-detail",
    ),
    path("schedules/<int:schedule_id>/fires", fires.ScheduleFireListApi.as_view(), name="schedules-fires"),
    path("schedules/<int:schedule_id>/pause", schedules.SchedulePauseApi.as_view(), name="schedules-pause"),
    path("schedules/<int:schedule_id>/resume", schedules.ScheduleResumeApi.as_view(), name="schedules-resume"),
]
