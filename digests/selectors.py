"""Reads: digests with their latest delivery, delivery lists, the period so far, and what needs a person.

Each read is of one team's digests (the acting team): another team's digest or delivery is DigestNotFound or
DeliveryNotFound, as a missing one. What belongs to a digest (its deliveries, its preview) is read through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from digests.exceptions import DeliveryNotFound, DigestNotFound
from digests.models import DeliveryStatus, DigestDelivery, DigestPeriod, DigestSubscription, Weekday
from digests.rendering import RenderedDigest, digest_render
from digests.services import MAX_RUNS_PER_DIGEST, delivery_is_stuck, digest_period_start, digest_runs, digest_timing
from schedules.timing import Timing

# A manual send of a per-run digest has no period of its own: digest_period_close falls back to days.
MANUAL_FALLBACK_CRON = "0 0 * * *"


def with_latest_delivery(digests: QuerySet[DigestSubscription]) -> QuerySet[DigestSubscription]:
    """Fetch each digest's newest delivery (`latest_deliveries`, at most one) in one more query."""
    latest = DigestDelivery.objects.order_by("-created_at", "-pk")[:1]
    return digests.prefetch_related(Prefetch("deliveries", queryset=latest, to_attr="latest_deliveries"))


def digest_list(*, team) -> QuerySet[DigestSubscription]:
    """`team`'s digests with their source, creator and latest delivery, in two queries."""
    digests = DigestSubscription.objects.filter(team=team).select_related("flow", "schedule", "created_by")
    return with_latest_delivery(digests)


def digest_get(*, team, digest_id: int) -> DigestSubscription:
    """`team`'s digest as digest_list reads it; DigestNotFound if it has none with that id (another team's
    digest too)."""
    digest = digest_list(team=team).filter(pk=digest_id).first()
    if digest is None:
        raise DigestNotFound()
    return digest


def digest_latest_delivery(subscription: DigestSubscription) -> DigestDelivery | None:
    """The newest delivery: prefetched by digest_list, else one query."""
    if hasattr(subscription, "latest_deliveries"):
        return subscription.latest_deliveries[0] if subscription.latest_deliveries else None
    return subscription.deliveries.order_by("-created_at", "-pk").first()


def digest_deliveries(*, subscription: DigestSubscription) -> QuerySet[DigestDelivery]:
    """A digest's deliveries, newest first."""
    return subscription.deliveries.order_by("-created_at", "-pk")


def digest_next_send_at(subscription: DigestSubscription, *, now: datetime | None = None) -> datetime | None:
    """When the current period ends and its email goes out; None when paused or sent after each run."""
    timing = digest_timing(subscription) if subscription.enabled else None
    return timing.next_after(now or timezone.now()) if timing else None


def digest_period_words(subscription: DigestSubscription) -> str:
    """The period as people say it: "daily at 08:00 Europe/Paris", "after each run of schedule Nightly"."""
    at = subscription.send_at
    at = at if isinstance(at, str) else at.strftime("%H:%M")
    if subscription.period == DigestPeriod.AFTER_RUN:
        name = subscription.schedule.name if subscription.schedule_id else "its schedule"
        return f"after each run of schedule {name}"
    if subscription.period == DigestPeriod.HOURLY:
        return f"every hour, on the hour ({subscription.timezone})"
    if subscription.period == DigestPeriod.WEEKLY:
        return f"weekly on {Weekday(subscription.weekday).label} at {at} {subscription.timezone}"
    return f"daily at {at} {subscription.timezone}"


@dataclass
class Preview:
    start: datetime
    end: datetime
    run_count: int
    content: RenderedDigest


def digest_period_so_far(subscription: DigestSubscription, *, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The period "Send now" would cut now: from the last delivery's end (or the last period boundary) to now."""
    end = now or timezone.now()
    timing = digest_timing(subscription) or Timing(cron=MANUAL_FALLBACK_CRON, tz=subscription.timezone)
    # The same start digest_period_close(manual=True) gives.
    return digest_period_start(subscription, timing, end), end


def digest_preview(*, subscription: DigestSubscription, now: datetime | None = None) -> Preview:
    """What "Send now" would mail now: the runs since the last delivery (or period boundary), or for a per-run
    digest the runs not mailed yet; writes nothing."""
    start, end = digest_period_so_far(subscription, now=now)
    runs = list(
        digest_runs(subscription=subscription, start=start, end=end).select_related("flow_version__flow")[
            :MAX_RUNS_PER_DIGEST
        ]
    )
    content = digest_render(subscription=subscription, runs=runs, start=start, end=end)
    return Preview(start=start, end=end, run_count=len(runs), content=content)


def delivery_recipients(delivery: DigestDelivery) -> list[str]:
    """The addresses a delivery was sent to (stored as the digest's recipients were then)."""
    return [a.strip() for a in delivery.recipients.replace("\n", ",").split(",") if a.strip()]


def delivery_list(*, team) -> QuerySet[DigestDelivery]:
    """The deliveries of `team`'s digests, with their digest."""
    return DigestDelivery.objects.filter(subscription__team=team).select_related("subscription")


def delivery_get(*, team, delivery_id: int) -> DigestDelivery:
    """A delivery of `team`'s digests, with its digest; DeliveryNotFound if it has none with that id (another
    team's delivery too)."""
    delivery = delivery_list(team=team).filter(pk=delivery_id).first()
    if delivery is None:
        raise DeliveryNotFound()
    return delivery


def delivery_stuck_ids(*, now: datetime | None = None) -> list[int]:
    """Deliveries left in `sending` by a worker that died mid-send (few rows: the rule is delivery_is_stuck)."""
    sending = DigestDelivery.objects.filter(status=DeliveryStatus.SENDING).only("status", "sending_started_at")
    return [d.pk for d in sending if delivery_is_stuck(d, now=now)]


def deliveries_needing_decision(
    *, deliveries: QuerySet[DigestDelivery], now: datetime | None = None
) -> QuerySet[DigestDelivery]:
    """Of `deliveries` (one team's: delivery_list, or the teams an admin page shows), the failed ones and the
    ones stuck in `sending`: nothing retries them; a person resends or marks them sent."""
    return deliveries.filter(Q(status=DeliveryStatus.FAILED) | Q(pk__in=delivery_stuck_ids(now=now)))


def delivery_needs_decision(delivery: DigestDelivery, *, now: datetime | None = None) -> bool:
    return delivery.status == DeliveryStatus.FAILED or delivery_is_stuck(delivery, now=now)
