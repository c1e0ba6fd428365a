"""Render a digest email (subject, plain text, HTML) from templates under templates/digests/email/."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from digests.models import DigestSubscription, RankOrder
from digests.ranking import rank
from runs.models import Run, RunStatus

EXCERPT_CHARS = 240


@dataclass
class RenderedDigest:
    subject: str
    text: str
    html: str
    empty: bool


def admin_url(name: str, *args) -> str:
    return settings.SITE_URL + reverse(name, args=args)


def message_id(*, subscription_id: int, period_key: str) -> str:
    """The same Message-ID for every send of one digest period, so a resend is recognisable."""
    domain = settings.EMAIL_MESSAGE_ID_DOMAIN or parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2]
    token = hashlib.sha256(period_key.encode()).hexdigest()[:24]
    return f"<digest-{subscription_id}-{token}@{domain or 'agentrunner.local'}>"


def _excerpt(data) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _run_label(run: Run) -> str:
    if run.flow_version_id:
        return f"flow {run.flow_version.flow.slug}" if run.flow_version.flow_id else "inline flow"
    return f"agent {run.agent_type}"


def period_label(*, start: datetime, end: datetime, tz: str) -> str:
    zone = ZoneInfo(tz)
    a, b = start.astimezone(zone), end.astimezone(zone)
    if a == b:
        return f"{b:%Y-%m-%d %H:%M} {tz}"
    if a.date() == b.date():
        return f"{a:%Y-%m-%d %H:%M} to {b:%H:%M} {tz}"
    return f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} {tz}"


def digest_render(
    *, subscription: DigestSubscription, runs: list[Run], start: datetime, end: datetime
) -> RenderedDigest:
    """Render the digest of these runs; the same runs always give the same email."""
    completed = [r for r in runs if r.status == RunStatus.COMPLETED]
    failed = [r for r in runs if r.status != RunStatus.COMPLETED] if subscription.include_failures else []
    ranking = rank(
        completed,
        items_path=subscription.items_path,
        rank_by=subscription.rank_by,
        descending=subscription.rank_order == RankOrder.DESC,
        limit=subscription.limit,
    )
    period = period_label(start=start, end=end, tz=subscription.timezone)
    zone = ZoneInfo(subscription.timezone)
    context = {
        "subscription": subscription,
        "period": period,
        "top": [
            {
                "position": position,
                "value": item.value,
                "excerpt": _excerpt(item.data),
                "run_id": str(item.run.pk),
                "run_label": _run_label(item.run),
                "finished_at": item.run.finished_at.astimezone(zone),
                "url": admin_url("admin:runs_run_change", item.run.pk),
            }
            for position, item in enumerate(ranking.top, start=1)
        ],
        "failures": [
            {
                "run_id": str(run.pk),
                "run_label": _run_label(run),
                "status": run.get_status_display(),
                "error": _excerpt(run.error or run.error_code or ""),
                "finished_at": run.finished_at.astimezone(zone),
                "url": admin_url("admin:runs_run_change", run.pk),
            }
            for run in sorted(failed, key=lambda r: r.finished_at, reverse=True)
        ],
        "completed_count": len(completed),
        "failed_count": len(runs) - len(completed),
        "considered": ranking.considered,
        "unranked": ranking.unranked,
        "digest_url": admin_url("admin:digests_digestsubscription_change", subscription.pk),
    }
    # Times in the email are in the digest's zone (its period label names it); the
    # template filter must not convert them back to the server's zone.
    with timezone.override(zone):
        return _render(context)


def _render(context: dict) -> RenderedDigest:
    subject = render_to_string("digests/email/subject.txt", context).strip().replace("\n", " ")
    return RenderedDigest(
        subject=subject,
        text=render_to_string("digests/email/body.txt", context),
        html=render_to_string("digests/email/body.html", context),
        empty=not context["top"] and not context["failures"],
    )
