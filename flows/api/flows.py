"""Stored flows: list, create, read, replace, change and delete them (`/flows`, `/flows/{slug}`)."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import NOT_FOUND, UNAUTHORIZED, JSONObjectField, role_response
from agentrunner.models import Role
from flows import selectors, services
from flows.api.examples import (
    BAD_PAGE,
    CLAIM_INTAKE_EXAMPLE,
    FLOW_IN_USE,
    HIDDEN,
    INVALID_DEFINITION,
    INVALID_FLOW,
)
from flows.models import Flow


class FlowOutputSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", default=None, allow_null=True)
    version = serializers.SerializerMethodField(help_text="The current version's number.")
    definition = serializers.SerializerMethodField(help_text="The current version's definition.")

    class Meta:
        model = Flow
        ref_name = "Flow"
        fields = ["id", "slug", "name", "description", "enabled", "owner", "version", "definition", "created_at"]

    def get_version(self, flow) -> int | None:
        current = flow.current_version
        return current.number if current else None

    def get_definition(self, flow) -> dict | None:
        current = flow.current_version
        return current.definition if current else None


class FlowInputSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    enabled = serializers.BooleanField(required=False, default=True)
    definition = JSONObjectField(help_text="Tasks and conditions: flow-manager format, extended (see README).")

    class Meta:
        ref_name = "FlowRequest"


class FlowUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
    definition = JSONObjectField(help_text="A changed definition becomes a new version; runs keep theirs.")

    class Meta:
        ref_name = "FlowUpdateRequest"


class FlowListApi(generics.ListAPIView):
    serializer_class = FlowOutputSerializer

    queryset = Flow.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.flow_list(team=self.request.acting.team)

    @extend_schema(
        operation_id="flows_list",
        summary="List flows",
        description="The acting team's stored flows with their current definition, by slug. Any member of the "
        "team (viewer and up) may read them.",
        responses={
            200: FlowOutputSerializer(many=True),
            400: BAD_PAGE,
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
        },
        tags=["flows"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class FlowCreateApi(APIView):
    @extend_schema(
        operation_id="flows_create",
        summary="Create a flow",
        description="A flow of the acting team; its slug is unique in the team (other teams may use the same "
        "slug). Needs the editor role.",
        request=FlowInputSerializer,
        responses={
            201: FlowOutputSerializer,
            400: INVALID_FLOW,
            401: UNAUTHORIZED,
            403: role_response(Role.EDITOR),
        },
        examples=[
            OpenApiExample(
                "claim intake",
                request_only=True,
                value={"slug": "claim-intake", "name": "Claim intake", "definition": CLAIM_INTAKE_EXAMPLE},
            )
        ],
        tags=["flows"],
    )
    def post(self, request):
        data = FlowInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        flow = services.flow_create(owner=request.user, team=request.acting.team, **data.validated_data)
        return Response(FlowOutputSerializer(flow).data, status=status.HTTP_201_CREATED)


class FlowDetailApi(APIView):
    @extend_schema(
        operation_id="flows_retrieve",
        summary="Get a flow",
        description=HIDDEN,
        responses={200: FlowOutputSerializer, 401: UNAUTHORIZED, 403: role_response(Role.VIEWER), 404: NOT_FOUND},
        tags=["flows"],
    )
    def get(self, request, slug):
        return Response(FlowOutputSerializer(selectors.flow_get(team=request.acting.team, slug=slug)).data)


def _flow_update(request, slug: str, *, partial: bool) -> Response:
    """PUT and PATCH: the same service, all fields or some."""
    flow = selectors.flow_get(team=request.acting.team, slug=slug)
    data = FlowUpdateSerializer(data=request.data, partial=partial)
    data.is_valid(raise_exception=True)
    flow = services.flow_update(flow=flow, user=request.user, **data.validated_data)
    return Response(FlowOutputSerializer(flow).data)


class FlowUpdateApi(APIView):
    @extend_schema(
        operation_id="flows_update",
        summary="Replace a flow",
        description="A changed definition becomes a new version; running runs keep the version they started with. "
        "Needs the editor role; another team's flow is a 404.",
        request=FlowUpdateSerializer,
        responses={
            200: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: role_response(Role.EDITOR),
            404: NOT_FOUND,
        },
        tags=["flows"],
    )
    def put(self, request, slug):
        return _flow_update(request, slug, partial=False)


class FlowPartialUpdateApi(APIView):
    @extend_schema(
        operation_id="flows_partial_update",
        summary="Change some of a flow's fields",
        description="Needs the editor role; another team's flow is a 404.",
        request=FlowUpdateSerializer(partial=True),
        responses={
            200: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: role_response(Role.EDITOR),
            404: NOT_FOUND,
        },
        tags=["flows"],
    )
    def patch(self, request, slug):
        return _flow_update(request, slug, partial=True)


class FlowDeleteApi(APIView):
    @extend_schema(
        operation_id="flows_destroy",
        summary="Delete a flow that never ran and no schedule uses",
        description="Needs the editor role; another team's flow is a 404.",
        responses={
            204: None,
            401: UNAUTHORIZED,
            403: role_response(Role.EDITOR),
            404: NOT_FOUND,
            409: FLOW_IN_USE,
        },
        tags=["flows"],
    )
    def delete(self, request, slug):
        services.flow_delete(flow=selectors.flow_get(team=request.acting.team, slug=slug))
        return Response(status=status.HTTP_204_NO_CONTENT)
