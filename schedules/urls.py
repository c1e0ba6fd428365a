from django.urls import path

from schedules import apis

urlpatterns = [
    path("schedules", apis.ScheduleListCreateApi.as_view(), name="schedules-list"),
    path("schedules/<int:schedule_id>", apis.ScheduleDetailApi.as_view(), name="schedules-detail"),
    path("schedules/<int:schedule_id>/fires", apis.ScheduleFireListApi.as_view(), name="schedules-fires"),
    path("schedules/<int:schedule_id>/pause", apis.SchedulePauseApi.as_view(), name="schedules-pause"),
    path("schedules/<int:schedule_id>/resume", apis.ScheduleResumeApi.as_view(), name="schedules-resume"),
]
