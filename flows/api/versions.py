"""A flow's versions, newest first (`/flows/{slug}/versions`)."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers

from agentrunner.api import NOT_FOUND, UNAUTHORIZED, role_response
from agentrunner.models import Role
from flows import selectors
from flows.api.examples import BAD_PAGE, HIDDEN
from flows.models import FlowVersion


class FlowVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)

    class Meta:
        model = FlowVersion
        ref_name = "FlowVersion"
        fields = ["id", "number", "definition", "digest", "created_by", "created_at"]


class FlowVersionListApi(generics.ListAPIView):
    serializer_class = FlowVersionSerializer

    queryset = FlowVersion.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.flow_version_list(team=self.request.acting.team, slug=self.kwargs["slug"])

    @extend_schema(
        operation_id="flows_versions",
        summary="A flow's versions, newest first",
        description=HIDDEN,
        responses={
            200: FlowVersionSerializer(many=True),
            400: BAD_PAGE,
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
            404: NOT_FOUND,
        },
        tags=["flows"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
