from django.urls import path

from agentrunner.api import operations
from agentrunner.teams import api

urlpatterns = [
    path("teams", operations(get=api.TeamListApi, post=api.TeamCreateApi), name="teams-list"),
    path("teams/<slug:slug>", operations(get=api.TeamDetailApi, patch=api.TeamUpdateApi), name="teams-detail"),
    path(
        "teams/<slug:slug>/members",
        operations(get=api.MemberListApi, post=api.MemberAddApi),
        name="teams-members",
    ),
    path(
        "teams/<slug:slug>/members/<str:username>",
        operations(patch=api.MemberRoleApi, delete=api.MemberRemoveApi),
        name="teams-member",
    ),
    path("teams/<slug:slug>/usage", api.TeamUsageApi.as_view(), name="teams-usage"),
    path("teams/<slug:slug>/tokens", operations(get=api.TokenListApi, post=api.TokenCreateApi), name="teams-tokens"),
    path("teams/<slug:slug>/tokens/<int:token_id>", api.TokenDeleteApi.as_view(), name="teams-token"),
]
