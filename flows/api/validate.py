"""Checking a definition without saving it (`/flows/validate`)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import UNAUTHORIZED, StorableJSONField, error_response, role_response
from agentrunner.models import Role
from flows import services
from flows.definition import ERROR, validate_definition


class ValidateInputSerializer(serializers.Serializer):
    definition = StorableJSONField()

    class Meta:
        ref_name = "FlowValidateRequest"


class ProblemSerializer(serializers.Serializer):
    path = serializers.CharField()
    message = serializers.CharField()
    severity = serializers.ChoiceField(choices=["error", "warning"])

    class Meta:
        ref_name = "FlowProblem"


class ValidateOutputSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    problems = ProblemSerializer(many=True)

    class Meta:
        ref_name = "FlowValidation"


class FlowValidateApi(APIView):
    # Pure: it reads and writes nothing, so any member of the team may check a definition.
    permission_actions = {"POST": "view"}

    @extend_schema(
        operation_id="flows_validate",
        summary="Validate a definition without saving it",
        description="Every problem at once, by JSON path; warnings (e.g. unreachable tasks) do not make it invalid. "
        "Nothing is saved, so any member of the team (viewer and up) may call it. `max_steps` is checked against "
        "what the caller may ask for in the acting team: lower below the editor role (`FLOW_MAX_STEPS_NON_STAFF`).",
        request=ValidateInputSerializer,
        responses={
            200: ValidateOutputSerializer,
            400: error_response("No definition.", "Invalid request.", "invalid"),
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
        },
        tags=["flows"],
    )
    def post(self, request):
        data = ValidateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        limit = services.max_steps_allowed(user=request.user, team=request.acting.team)
        problems = validate_definition(data.validated_data["definition"], max_steps_limit=limit)
        valid = not any(p.severity == ERROR for p in problems)
        return Response({"valid": valid, "problems": [p.as_dict() for p in problems]})
