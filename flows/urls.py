from django.urls import path

from agentrunner.api import operations
from flows.api import execute, flows, runs, validate, versions

urlpatterns = [
    path("flows", operations(get=flows.FlowListApi, post=flows.FlowCreateApi), name="flows-list"),
    path("flows/validate", validate.FlowValidateApi.as_view(), name="flows-validate"),
    path(
        "flows/<slug:slug>",
        operations(
            get=flows.FlowDetailApi,
            put=flows.FlowUpdateApi,
            patch=flows.FlowPartialUpdateApi,
            delete=flows.FlowDeleteApi,
        ),
        name="flows-detail",
    ),
    path("flows/<slug:slug>/versions", versions.FlowVersionListApi.as_view(), name="flows-versions"),
    path("flows/<slug:slug>/runs", runs.FlowRunStartApi.as_view(), name="flows-run"),
    path("flow/execute", execute.FlowExecuteApi.as_view(), name="flow-execute"),
]
