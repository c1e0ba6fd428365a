"""A digest's deliveries (`/digests/{id}/deliveries`), Send now (`/digests/{id}/send`), and the decisions about a
delivery nothing retries by itself (`/digests/deliveries/{id}/resend`, `/digests/deliveries/{id}/mark-sent`)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import NOT_FOUND, UNAUTHORIZED, role_response
from agentrunner.models import Role
from digests import selectors, services
from digests.api.examples import CANNOT_CHANGE, CANNOT_DECIDE, EXAMPLE_DELIVERY, HIDDEN, SEND_RACE, WRONG_STATE
from digests.exceptions import DeliveryStateConflict
from digests.models import DigestDelivery


class DeliveryOutputSerializer(serializers.ModelSerializer):
    digest = serializers.PrimaryKeyRelatedField(source="subscription", read_only=True)
    run = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="For a per-run digest: the run it reports."
    )
    run_ids = serializers.ListField(child=serializers.UUIDField(), help_text="The runs the digest covers.")
    needs_decision = serializers.SerializerMethodField(
        help_text="Failed, or stuck in `sending` (its worker died mid-send): nothing retries it; resend it or "
        "mark it sent."
    )
    recipients = serializers.SerializerMethodField()
    history = serializers.ListField(
        child=serializers.DictField(), help_text="Every send attempt and decision: at, attempt, outcome, error, by."
    )

    class Meta:
        model = DigestDelivery
        ref_name = "DigestDelivery"
        fields = [
            "id",
            "digest",
            "period_key",
            "period_start",
            "period_end",
            "manual",
            "run",
            "run_ids",
            "status",
            "needs_decision",
            "message_id",
            "recipients",
            "subject",
            "attempts",
            "next_attempt_at",
            "error",
            "history",
            "sending_started_at",
            "sent_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_needs_decision(self, delivery) -> bool:
        return selectors.delivery_needs_decision(delivery)

    def get_recipients(self, delivery) -> list[str]:
        return selectors.delivery_recipients(delivery)


class DigestDeliveryListApi(generics.ListAPIView):
    serializer_class = DeliveryOutputSerializer
    queryset = DigestDelivery.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        digest = selectors.digest_get(team=self.request.acting.team, digest_id=self.kwargs["digest_id"])
        return selectors.digest_deliveries(subscription=digest)

    @extend_schema(
        operation_id="digests_deliveries",
        summary="A digest's deliveries, newest first",
        description="One per period (or per run for `after_run` digests, or per Send now), with what happened "
        "to its email. `needs_decision` marks failed ones and ones stuck in `sending`. " + HIDDEN,
        responses={
            200: DeliveryOutputSerializer(many=True),
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
            404: NOT_FOUND,
        },
        tags=["digests"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class DigestSendApi(APIView):
    permission_actions = {"POST": "change"}  # a change of the digest (editor), as the admin's Send now

    @extend_schema(
        operation_id="digests_send",
        summary="Send the period so far now",
        description="Cuts the current period at now and queues its email: the runs since the last delivery. "
        "The next scheduled digest starts from now. With `skip_empty` and nothing to report the delivery is "
        "recorded as `empty` and nothing is mailed. Needs the editor role; another team's digest is a 404.",
        request=None,
        responses={
            202: DeliveryOutputSerializer,
            401: UNAUTHORIZED,
            403: CANNOT_CHANGE,
            404: NOT_FOUND,
            409: SEND_RACE,
        },
        examples=[OpenApiExample("queued", response_only=True, status_codes=["202"], value=EXAMPLE_DELIVERY)],
        tags=["digests"],
    )
    def post(self, request, digest_id):
        digest = selectors.digest_get(team=request.acting.team, digest_id=digest_id)
        delivery = services.digest_period_close(subscription_id=digest.pk, manual=True)
        if delivery is None:
            raise DeliveryStateConflict("Another send of this digest got there first.")
        return Response(DeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class DeliveryDecisionApi(APIView):
    """Resend or mark sent: a person's decision about a delivery of the team's digests, through the service."""

    permission_actions = {"POST": "change"}  # a change of the digest's delivery: the editor role, as in the admin

    def decide(self, request, delivery_id, service) -> Response:
        delivery = selectors.delivery_get(team=request.acting.team, delivery_id=delivery_id)
        delivery = service(delivery=delivery, by=request.user.get_username())
        return Response(DeliveryOutputSerializer(delivery).data)


class DeliveryResendApi(DeliveryDecisionApi):
    @extend_schema(
        operation_id="digests_deliveries_resend",
        summary="Send a delivery again",
        description="From `sending` (stuck), `failed` or `sent`. The email keeps its Message-ID, so mail "
        "programs that already have it usually show one copy; some recipients may still see it twice. Needs the "
        "editor role; another team's delivery is a 404.",
        request=None,
        responses={
            200: DeliveryOutputSerializer,
            401: UNAUTHORIZED,
            403: CANNOT_DECIDE,
            404: NOT_FOUND,
            409: WRONG_STATE,
        },
        examples=[OpenApiExample("queued again", response_only=True, value=EXAMPLE_DELIVERY)],
        tags=["digests"],
    )
    def post(self, request, delivery_id):
        return self.decide(request, delivery_id, services.delivery_resend)


class DeliveryMarkSentApi(DeliveryDecisionApi):
    @extend_schema(
        operation_id="digests_deliveries_mark_sent",
        summary="Record that a delivery reached its recipients",
        description="For a delivery stuck in `sending` or `failed` that you know was delivered (e.g. from the "
        "mail server's log). Nothing is sent. Needs the editor role; another team's delivery is a 404.",
        request=None,
        responses={
            200: DeliveryOutputSerializer,
            401: UNAUTHORIZED,
            403: CANNOT_DECIDE,
            404: NOT_FOUND,
            409: WRONG_STATE,
        },
        examples=[
            OpenApiExample(
                "marked sent", response_only=True, value={**EXAMPLE_DELIVERY, "status": "sent", "manual": False}
            )
        ],
        tags=["digests"],
    )
    def post(self, request, delivery_id):
        return self.decide(request, delivery_id, services.delivery_mark_sent)
