"""django-q2 entry points for digests."""

from digests import services


def digest_period_close(subscription_id: int, intended_at: str | None = None) -> int | None:
    """Fired by django-q2's scheduler at the end of a period: claim its delivery and send it."""
    delivery = services.digest_period_close(subscription_id=subscription_id)
    return delivery.pk if delivery else None


def delivery_send(delivery_id: int) -> str | None:
    """Send one claimed delivery; a duplicate delivery of this task sends nothing."""
    return services.delivery_send(delivery_id=delivery_id)
