"""Display helpers for the digest pages: delivery badges, periods and times in the digest's time zone.

Tables, lists and panels are templates (templates/admin/digests/includes/); here are one-element helpers and
the values those templates show. Model data is always escaped (`format_html`, template autoescaping).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from agentrunner.adminkit import BLUE, CELL_STYLE, CYAN, DARK_GREY, EMPTY, GREEN, GREY, ORANGE, RED, badge
from digests.models import DeliveryStatus, DigestDelivery
from digests.rendering import period_label
from digests.services import delivery_is_stuck

DELIVERY_COLOURS = {
    DeliveryStatus.PENDING: GREY,
    DeliveryStatus.SENDING: BLUE,
    DeliveryStatus.RETRYING: CYAN,
    DeliveryStatus.SENT: GREEN,
    DeliveryStatus.FAILED: RED,
    DeliveryStatus.EMPTY: DARK_GREY,
}
STUCK_LABEL = "Stuck while sending"
HEAD_STYLE = CELL_STYLE + "text-align:left;"


def delivery_badge(delivery: DigestDelivery, *, now: datetime | None = None) -> SafeString:
    if delivery_is_stuck(delivery, now=now):
        return badge(STUCK_LABEL, ORANGE)
    try:
        label = DeliveryStatus(delivery.status).label
    except ValueError:
        label = delivery.status
    return badge(label, DELIVERY_COLOURS.get(delivery.status, GREY))


def in_zone(value: datetime | None, tz: str, *, with_zone: bool = True) -> str:
    """`2026-11-21 08:00` in the digest's time zone (the zone the recipients read)."""
    if value is None:
        return EMPTY
    try:
        local = value.astimezone(ZoneInfo(tz))
    except (ValueError, KeyError):
        local = timezone.localtime(value)
    return f"{local:%Y-%m-%d %H:%M}" + (f" {tz}" if with_zone else "")


def relative(value: datetime, *, now: datetime | None = None) -> str:
    """ "in 3 h 5 min", "12 min ago": how far a moment is from now, roughly."""
    seconds = (value - (now or timezone.now())).total_seconds()
    minutes = round(abs(seconds) / 60)
    if minutes < 1:
        amount = "less than a minute"
    elif minutes < 60:
        amount = f"{minutes} min"
    elif minutes < 48 * 60:
        amount = f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"
    else:
        amount = f"{round(minutes / 1440)} days"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def delivery_period(delivery: DigestDelivery) -> str:
    """ "2026-11-20 08:00 – 2026-11-21 08:00 Europe/Paris", or the run's end for a per-run digest."""
    return period_label(start=delivery.period_start, end=delivery.period_end, tz=delivery.subscription.timezone)


def compact_period(delivery: DigestDelivery) -> str:
    """ "2026-11-19 08:00 → 11-20 08:00" in the digest's time zone, for tables whose header names the zone."""
    zone = ZoneInfo(delivery.subscription.timezone)
    start, end = delivery.period_start.astimezone(zone), delivery.period_end.astimezone(zone)
    if start == end:
        return f"{end:%Y-%m-%d %H:%M}"
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}"
    return f"{start:%Y-%m-%d %H:%M} → {end:%m-%d %H:%M}"


def delivery_kind(delivery: DigestDelivery) -> str:
    if delivery.manual:
        return "Send now"
    if delivery.run_id or delivery.period_key.startswith("run:"):
        return "after a run"
    return "scheduled"


def delivery_link(delivery: DigestDelivery, label: str | None = None) -> SafeString:
    url = reverse("admin:digests_digestdelivery_change", args=[delivery.pk])
    return format_html('<a href="{}">{}</a>', url, label or delivery_period(delivery))


def short_error(text: str, limit: int = 80) -> SafeString | str:
    """The start of an error, wrapped in a narrow column; the whole text as a tooltip."""
    if not text:
        return EMPTY
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return format_html(
        '<span title="{}" style="display:inline-block;min-width:16em;max-width:24em;white-space:normal;'
        'overflow-wrap:anywhere;color:#a41515">{}</span>',
        text,
        shown,
    )
