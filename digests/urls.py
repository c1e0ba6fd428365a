from django.urls import path

from agentrunner.api import operations
from digests.api import deliveries, digests

urlpatterns = [
    path("digests", operations(get=digests.DigestListApi, post=digests.DigestCreateApi), name="digests-list"),
    path(
        "digests/<int:digest_id>",
        operations(get=digests.DigestDetailApi, patch=digests.DigestUpdateApi, delete=digests.DigestDeleteApi),
        name="digests-detail",
    ),
    path("digests/<int:digest_id>/deliveries", deliveries.DigestDeliveryListApi.as_view(), name="digests-deliveries"),
    path("digests/<int:digest_id>/send", deliveries.DigestSendApi.as_view(), name="digests-send"),
    path("digests/<int:digest_id>/preview", digests.DigestPreviewApi.as_view(), name="digests-preview"),
    path(
        "digests/deliveries/<int:delivery_id>/resend",
        deliveries.DeliveryResendApi.as_view(),
        name="digests-deliveries-resend",
    ),
    path(
        "digests/deliveries/<int:delivery_id>/mark-sent",
        deliveries.DeliveryMarkSentApi.as_view(),
        name="digests-deliveries-mark-sent",
    ),
]
