from django.urls import path

from agentrunner.api import operations
from runs import apis

urlpatterns = [
    path("agents", apis.AgentListApi.as_view(), name="agents-list"),
    path("agents/run", apis.AgentRunApi.as_view(), name="agents-run"),
    path("agents/status/<uuid:run_id>", apis.AgentStatusApi.as_view(), name="agents-status"),
    path("agents/<str:agent_type>", apis.AgentUpdateApi.as_view(), name="agents-update"),
    path("runs", operations(get=apis.RunListApi, post=apis.RunStartApi), name="runs-list"),
    path("runs/<uuid:run_id>", apis.RunDetailApi.as_view(), name="runs-detail"),
    path("runs/<uuid:run_id>/steps", apis.RunStepsApi.as_view(), name="runs-steps"),
    path("runs/<uuid:run_id>/retry", apis.RunRetryApi.as_view(), name="runs-retry"),
    path("runs/<uuid:run_id>/metrics", apis.RunMetricsApi.as_view(), name="runs-metrics"),
]
