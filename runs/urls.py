from django.urls import path

from agentrunner.api import operations
from runs.api import agents, runs, steps

urlpatterns = [
    path("agents", agents.AgentListApi.as_view(), name="agents-list"),
    path("agents/run", agents.AgentRunApi.as_view(), name="agents-run"),
    path("agents/status/<uuid:run_id>", agents.AgentStatusApi.as_view(), name="agents-status"),
    path("agents/<str:agent_type>", agents.AgentUpdateApi.as_view(), name="agents-update"),
    path("runs", operations(get=runs.RunListApi, post=runs.RunStartApi), name="runs-list"),
    path("runs/<uuid:run_id>", operations(get=runs.RunDetailApi, delete=runs.RunCancelApi), name="runs-detail"),
    path("runs/<uuid:run_id>/steps", steps.RunStepsApi.as_view(), name="runs-steps"),
    path("runs/<uuid:run_id>/retry", runs.RunRetryApi.as_view(), name="runs-retry"),
    path("runs/<uuid:run_id>/dismiss", runs.RunDismissApi.as_view(), name="runs-dismiss"),
    path("runs/<uuid:run_id>/metrics", steps.RunMetricsApi.as_view(), name="runs-metrics"),
]
