from django.urls import path

from digests import apis

urlpatterns = [
    path("digests", apis.DigestListCreateApi.as_view(), name="digests-list"),
    path("digests/<int:digest_id>", apis.DigestDetailApi.as_view(), name="digests-detail"),
    path("digests/<int:digest_id>/deliveries", apis.DigestDeliveriesApi.as_view(), name="digests-deliveries"),
    path("digests/<int:digest_id>/send", apis.DigestSendApi.as_view(), name="digests-send"),
    path("digests/<int:digest_id>/preview", apis.DigestPreviewApi.as_view(), name="digests-preview"),
    path(
        "digests/deliveries/<int:delivery_id>/resend",
        apis.DeliveryResendApi.as_view(),
        name="digests-deliveries-resend",
    ),
    path(
        "digests/deliveries/<int:delivery_id>/mark-sent",
        apis.DeliveryMarkSentApi.as_view(),
        name="digests-deliveries-mark-sent",
    ),
]
