"""Stored flows: list, create, read, replace, change and delete them (`/flows`, `/flows/{slug}`)."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import NOT_FOUND, UNAUTHORIZED, JSONObjectField, ModelPermissions, permission_response
from flows import selectors, services
from flows.api.examples import BAD_PAGE, CLAIM_INTAKE_EXAMPLE, FLOW_IN_USE, HIDDEN, INVALID_DEFINITION
from flows.exceptions import FlowNotFound
from flows.models import Flow


class FlowPermissions:
    """Who may read, run and change stored flows: Django's model permissions on Flow."""

    permission_classes = [ModelPermissions]
    permission_model = Flow
    not_found = FlowNotFound


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


class FlowListApi(FlowPermissions, generics.ListAPIView):
    serializer_class = FlowOutputSerializer

    queryset = Flow.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.flow_list()

    @extend_schema(
        operation_id="flows_list",
        summary="List flows",
        description="Every stored flow with its current definition, by slug. Needs `flows.view_flow` (superusers "
        "have it; give it to others with a group): definitions may hold what staff wrote into task inputs.",
        responses={
            200: FlowOutputSerializer(many=True),
            400: BAD_PAGE,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "view"),
        },
        tags=["flows"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class FlowCreateApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_create",
        summary="Create a flow",
        description="Needs `flows.add_flow`.",
        request=FlowInputSerializer,
        responses={
            201: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "add"),
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
        flow = services.flow_create(owner=request.user, **data.validated_data)
        return Response(FlowOutputSerializer(flow).data, status=status.HTTP_201_CREATED)


class FlowDetailApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_retrieve",
        summary="Get a flow",
        description=HIDDEN,
        responses={200: FlowOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["flows"],
    )
    def get(self, request, slug):
        return Response(FlowOutputSerializer(selectors.flow_get(slug=slug)).data)


def _flow_update(request, slug: str, *, partial: bool) -> Response:
    """PUT and PATCH: the same service, all fields or some."""
    flow = selectors.flow_get(slug=slug)
    data = FlowUpdateSerializer(data=request.data, partial=partial)
    data.is_valid(raise_exception=True)
    flow = services.flow_update(flow=flow, user=request.user, **data.validated_data)
    return Response(FlowOutputSerializer(flow).data)


class FlowUpdateApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_update",
        summary="Replace a flow",
        description="A changed definition becomes a new version; running runs keep the version they started with. "
        "Needs `flows.change_flow`.",
        request=FlowUpdateSerializer,
        responses={
            200: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "change"),
            404: NOT_FOUND,
        },
        tags=["flows"],
    )
    def put(self, request, slug):
        return _flow_update(request, slug, partial=False)


class FlowPartialUpdateApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_partial_update",
        summary="Change some of a flow's fields",
        description="Needs `flows.change_flow`.",
        request=FlowUpdateSerializer(partial=True),
        responses={
            200: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "change"),
            404: NOT_FOUND,
        },
        tags=["flows"],
    )
    def patch(self, request, slug):
        return _flow_update(request, slug, partial=True)


class FlowDeleteApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_destroy",
        summary="Delete a flow that never ran and no schedule uses",
        description="Needs `flows.delete_flow`.",
        responses={
            204: None,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "delete"),
            404: NOT_FOUND,
            409: FLOW_IN_USE,
        },
        tags=["flows"],
    )
    def delete(self, request, slug):
        services.flow_delete(flow=selectors.flow_get(slug=slug))
        return Response(status=status.HTTP_204_NO_CONTENT)
