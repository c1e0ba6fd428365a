from django.urls import path

from flows import apis

urlpatterns = [
    path("flows", apis.FlowListCreateApi.as_view(), name="flows-list"),
    path("flows/validate", apis.FlowValidateApi.as_view(), name="flows-validate"),
    path("flows/<slug:slug>", apis.FlowDetailApi.as_view(), name="flows-detail"),
    path("flows/<slug:slug>/versions", apis.FlowVersionsApi.as_view(), name="flows-versions"),
    path("flows/<slug:slug>/runs", apis.FlowRunApi.as_view(), name="flows-run"),
    path("flow/execute", apis.FlowExecuteApi.as_view(), name="flow-execute"),
]
