"""Writes: digests, the claim of each period's delivery, and the exactly-once send.

A delivery moves pending → sending → sent by compare-and-set updates. The row
is claimed (unique per subscription and period) before anything is sent, and
moved to `sending` in its own commit before the SMTP conversation starts. So a
second scheduler fire, a second cluster or a re-delivered task finds the row
and stops; a worker that dies mid-send leaves it in `sending`, which nothing
retries automatically: a person decides (resend or mark sent) in the admin.
"""

from __future__ import annotations

import smtplib
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import BadHeaderError, EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django_q.tasks import async_task

from agentrunner.agents import get_agent
from agentrunner.agents.registry import UnknownAgentType
from agentrunner.db import save_unique_name
from agentrunner.models import Team
from agentrunner.teams.services import team_or_default
from agentrunner.validators import validate_header_text
from digests.exceptions import DeliveryStateConflict, DigestInvalid
from digests.models import DeliveryStatus, DigestDelivery, DigestPeriod, DigestSubscription
from digests.rendering import RenderedDigest, digest_render, message_id
from runs.models import RUN_FINISHED, Run, RunStatus
from schedules.qsync import q_schedule_move, q_schedule_sync
from schedules.timing import Timing, TimingError, zone

log = structlog.get_logger("agentrunner.digests")

CLOSE_TASK = "digests.tasks.digest_period_close"
SEND_TASK = "digests.tasks.delivery_send"
# The most runs one digest ranks (the newest of its period).
MAX_RUNS_PER_DIGEST = 5000
# A pending delivery whose send message has not been picked up by then is sent again.
REDISPATCH_SECONDS = 120
# SMTP replies in the 5xx range are permanent: retrying cannot help.
PERMANENT_SMTP_CODES = range(500, 600)
EDITABLE = (
    "name",
    "enabled",
    "recipients",
    "flow",
    "agent_type",
    "schedule",
    "period",
    "send_at",
    "weekday",
    "timezone",
    "items_path",
    "rank_by",
    "rank_order",
    "limit",
    "include_failures",
    "skip_empty",
)


# --- subscriptions ---------------------------------------------------------------


def digest_timing(subscription: DigestSubscription) -> Timing | None:
    """When the digest's periods end (None for per-run digests)."""
    at = subscription.send_at
    if isinstance(at, str):
        at = datetime.strptime(at, "%H:%M").time()
    if at is None and subscription.period in (DigestPeriod.DAILY, DigestPeriod.WEEKLY):
        raise TimingError("Give the time of day to send the digest at.")
    cron = {
        DigestPeriod.HOURLY: "0 * * * *",
        DigestPeriod.DAILY: f"{at.minute} {at.hour} * * *",
        DigestPeriod.WEEKLY: f"{at.minute} {at.hour} * * {subscription.weekday}",
    }.get(subscription.period)
    return Timing(cron=cron, tz=subscription.timezone) if cron else None


def digest_check(subscription: DigestSubscription) -> None:
    """Raise DigestInvalid listing every problem."""
    errors: dict[str, list[str]] = {}
    try:
        validate_header_text(subscription.name)  # the subject line starts with it
    except ValidationError as exc:
        errors.setdefault("name", []).extend(exc.messages)
    sources = [bool(subscription.flow_id), bool(subscription.agent_type), bool(subscription.schedule_id)]
    if sum(sources) != 1:
        errors.setdefault("source", []).append("Give exactly one source: a flow, an agent or a schedule.")
    # Another team's flow or schedule is refused as one that does not exist (the API's words): it does not leak.
    if subscription.flow_id and subscription.flow.team_id != subscription.team_id:
        errors.setdefault("flow", []).append(f"No flow with slug {subscription.flow.slug!r}.")
    if subscription.schedule_id and subscription.schedule.team_id != subscription.team_id:
        errors.setdefault("schedule", []).append(f"No schedule with id {subscription.schedule_id}.")
    if subscription.agent_type:
        try:
            get_agent(subscription.agent_type)
        except UnknownAgentType as exc:
            errors.setdefault("agent_type", []).append(str(exc))
    if subscription.period == DigestPeriod.AFTER_RUN and not subscription.schedule_id:
        errors.setdefault("period", []).append("“After each scheduled run” needs a schedule as the source.")
    recipients = subscription.recipient_list
    if not recipients:
        errors.setdefault("recipients", []).append("Give at least one email address.")
    for address in recipients:
        try:
            validate_email(address)
        except ValidationError:
            errors.setdefault("recipients", []).append(f"{address!r} is not an email address.")
    if not subscription.limit or subscription.limit < 1:
        errors.setdefault("limit", []).append("List at least one result.")
    try:
        zone(subscription.timezone)
        digest_timing(subscription)
    except (TimingError, ValueError) as exc:
        errors.setdefault("timezone" if "zone" in str(exc) else "send_at", []).append(str(exc))
    if errors:
        raise DigestInvalid(errors)
    subscription.recipients = ", ".join(recipients)


def digest_sync(*, subscription: DigestSubscription) -> None:
    """Make django-q2's row fire at the end of each period (no row when paused or per-run)."""
    timing = digest_timing(subscription) if subscription.enabled else None
    q_schedule_sync(owner=subscription, func=CLOSE_TASK, label=f"digest: {subscription.name}", timing=timing)


def digests_repair() -> int:
    """Re-create the django-q2 row of enabled periodic digests that lost theirs (e.g. deleted by hand)."""
    missing = DigestSubscription.objects.filter(enabled=True, q_schedule__isnull=True).exclude(
        period=DigestPeriod.AFTER_RUN
    )
    for subscription in missing:
        with transaction.atomic():
            digest_sync(subscription=subscription)
    return len(missing)


@transaction.atomic
def digest_create(*, created_by=None, team: Team | None = None, **fields: Any) -> DigestSubscription:
    """Create a digest of `team` (the default team if None) and its django-q2 row; raise DigestInvalid with every
    problem. Its name is unique in the team; its flow or schedule must be the team's."""
    editable = {k: v for k, v in fields.items() if k in EDITABLE}
    subscription = DigestSubscription(created_by=created_by, team=team_or_default(team), **editable)
    digest_check(subscription)
    save_unique_name(subscription, invalid=DigestInvalid, within="team")
    digest_sync(subscription=subscription)
    log.info("digest_created", digest_id=subscription.pk, period=subscription.period)
    return subscription


@transaction.atomic
def digest_update(*, subscription: DigestSubscription, **fields: Any) -> DigestSubscription:
    """Change a digest (not its team); the current period keeps its start, its end follows the new timing."""
    for name, value in fields.items():
        if name in EDITABLE:
            setattr(subscription, name, value)
    # Giving a new source replaces the current one.
    for given, others in (
        ("flow", ("agent_type", "schedule")),
        ("agent_type", ("flow", "schedule")),
        ("schedule", ("flow", "agent_type")),
    ):
        if fields.get(given):
            for other in others:
                setattr(subscription, other, "" if other == "agent_type" else None)
    digest_check(subscription)
    save_unique_name(subscription, invalid=DigestInvalid, within="team")
    digest_sync(subscription=subscription)
    return subscription


@transaction.atomic
def digest_delete(*, subscription: DigestSubscription) -> None:
    q_schedule_sync(owner=subscription, func=CLOSE_TASK, label="", timing=None)
    subscription.delete()


# --- periods -----------------------------------------------------------------------


def digest_runs(*, subscription: DigestSubscription, start: datetime, end: datetime | None):
    """The finished runs of the digest's source in [start, end) that it reports, newest first.

    Only runs of the digest's team: an agent is shared by every team, its runs are not. A per-run digest mails
    each run once, in its own email: a run that already has its email is left out, so "Send now" and the preview
    of such a digest are about the runs not mailed yet.
    """
    runs = Run.objects.filter(team_id=subscription.team_id, finished_at__gte=start)
    if end is not None:
        runs = runs.filter(finished_at__lt=end)
    if subscription.flow_id:
        runs = runs.filter(flow_version__flow_id=subscription.flow_id)
    elif subscription.schedule_id:
        runs = runs.filter(schedule_id=subscription.schedule_id)
    else:
        runs = runs.filter(agent_type=subscription.agent_type, flow_version__isnull=True)
    statuses = list(RUN_FINISHED) if subscription.include_failures else [RunStatus.COMPLETED]
    # A cancelled run is someone's decision, not a result or a failure to report.
    statuses = [s for s in statuses if s != RunStatus.CANCELLED]
    if subscription.period == DigestPeriod.AFTER_RUN:
        mailed = DigestDelivery.objects.filter(subscription_id=subscription.pk, run_id=OuterRef("pk"))
        runs = runs.exclude(Exists(mailed))
    return runs.filter(status__in=statuses).order_by("-finished_at")


def digest_period_start(subscription: DigestSubscription, timing: Timing | None, end: datetime) -> datetime:
    """Where the period ending at `end` starts: the end of the previous delivery, else the previous boundary.

    For a per-run digest: the end of its last delivery that covered a period (a "Send now", or one from before it
    was per-run), else its creation; its per-run emails are left out run by run (digest_runs).
    """
    # A period starts where the previous one ended, so downtime never drops runs:
    # the first period after an outage covers the whole outage.
    previous = (
        subscription.deliveries.filter(run__isnull=True, period_end__lte=end)
        .order_by("-period_end")
        .values_list("period_end", flat=True)
        .first()
    )
    if subscription.period == DigestPeriod.AFTER_RUN:
        return max(previous, subscription.created_at) if previous else subscription.created_at
    return previous or timing.latest_at_or_before(end - timedelta(microseconds=1))


def digest_period_close(
    *, subscription_id: int, now: datetime | None = None, manual: bool = False
) -> DigestDelivery | None:
    """Claim the delivery of the period that just ended (or, manual, of the period so far) and send it."""
    now = now or timezone.now()
    subscription = DigestSubscription.objects.filter(pk=subscription_id).first()
    if subscription is None or (not subscription.enabled and not manual):
        return None
    timing = digest_timing(subscription)
    if timing is None and not manual:
        return None  # per-run digests are claimed by the tick
    timing = timing or Timing(cron="0 0 * * *", tz=subscription.timezone)
    if not manual:
        q_schedule_move(owner=subscription, next_run=timing.next_after(now))
    end = now if manual else timing.latest_at_or_before(now)
    key = f"manual:{now.isoformat()}" if manual else end.isoformat()
    with transaction.atomic():
        # Why: periods of one digest are cut one at a time, so two claims can
        # never both start where the last delivery ended.
        DigestSubscription.objects.select_for_update().filter(pk=subscription.pk).first()
        if not manual and subscription.deliveries.filter(run__isnull=True, period_end__gte=end).exists():
            return None
        start = digest_period_start(subscription, timing, end)
        runs = list(digest_runs(subscription=subscription, start=start, end=end)[:MAX_RUNS_PER_DIGEST])
        return _delivery_claim(subscription=subscription, key=key, start=start, end=end, runs=runs, manual=manual)


def digest_after_run_claims(*, limit: int = 100) -> int:
    """Claim a delivery for every finished run of a schedule that has a per-run digest."""
    claimed = 0
    now = timezone.now()
    for subscription in DigestSubscription.objects.filter(enabled=True, period=DigestPeriod.AFTER_RUN):
        # The runs not mailed yet, as "Send now" and the preview select them (end None: a run whose worker's
        # clock is a little ahead is not left behind).
        start = digest_period_start(subscription, None, now)
        finished = digest_runs(subscription=subscription, start=start, end=None).order_by("finished_at")[:limit]
        for run in finished:
            with transaction.atomic():
                claimed += bool(
                    _delivery_claim(
                        subscription=subscription,
                        key=f"run:{run.pk}",
                        start=run.finished_at,
                        end=run.finished_at,
                        runs=[run],
                        run=run,
                    )
                )
    return claimed


def _delivery_claim(*, subscription, key, start, end, runs, manual=False, run=None) -> DigestDelivery | None:
    """Insert the period's delivery row (None if another process did) and send it after commit."""
    rendered = digest_render(subscription=subscription, runs=runs, start=start, end=end)
    empty = rendered.empty and subscription.skip_empty
    now = timezone.now()
    try:
        with transaction.atomic():
            delivery = DigestDelivery.objects.create(
                subscription=subscription,
                period_key=key,
                period_start=start,
                period_end=end,
                manual=manual,
                run=run,
                run_ids=[str(r.pk) for r in runs],
                status=DeliveryStatus.EMPTY if empty else DeliveryStatus.PENDING,
                message_id=message_id(subscription_id=subscription.pk, period_key=key),
                recipients=subscription.recipients,
                subject=rendered.subject,
                next_attempt_at=None if empty else now + timedelta(seconds=REDISPATCH_SECONDS),
            )
    except IntegrityError:
        return None
    log.info("digest_claimed", digest_id=subscription.pk, period=key, runs=len(runs), empty=empty)
    if not empty:
        transaction.on_commit(lambda: async_task(SEND_TASK, delivery.pk))
    return delivery


# --- sending -------------------------------------------------------------------------


def delivery_content(*, delivery: DigestDelivery) -> RenderedDigest:
    """Render a delivery again from the runs it covers (finished runs do not change), all of its digest's team."""
    runs = Run.objects.filter(team_id=delivery.subscription.team_id, pk__in=delivery.run_ids)
    runs = list(runs.select_related("flow_version__flow").order_by("-finished_at"))
    return digest_render(
        subscription=delivery.subscription, runs=runs, start=delivery.period_start, end=delivery.period_end
    )


def delivery_send(*, delivery_id: int) -> str | None:
    """Send one delivery if it is due; exactly one process gets to send it."""
    now = timezone.now()
    # Compare-and-set, committed before the SMTP conversation starts: a duplicate
    # task, or a retry racing a resend, updates nothing and stops here.
    won = (
        DigestDelivery.objects.filter(pk=delivery_id)
        .filter(Q(status=DeliveryStatus.PENDING) | Q(status=DeliveryStatus.RETRYING, next_attempt_at__lte=now))
        .update(status=DeliveryStatus.SENDING, sending_started_at=now, next_attempt_at=None)
    )
    if not won:
        return None
    delivery = DigestDelivery.objects.select_related("subscription").get(pk=delivery_id)
    attempt = delivery.attempts + 1
    try:
        content = delivery_content(delivery=delivery)
        _message(delivery=delivery, content=content).send(fail_silently=False)
    except (smtplib.SMTPException, OSError, BadHeaderError) as exc:
        return _send_failed(delivery=delivery, attempt=attempt, exc=exc)
    entry = {"at": timezone.now().isoformat(), "attempt": attempt, "outcome": "sent"}
    DigestDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SENT,
        sent_at=timezone.now(),
        attempts=attempt,
        error="",
        history=[*delivery.history, entry],
    )
    log.info("digest_sent", digest_id=delivery.subscription_id, delivery_id=delivery.pk, attempt=attempt)
    return DeliveryStatus.SENT


def _message(*, delivery: DigestDelivery, content: RenderedDigest) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject=content.subject,
        body=content.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=delivery.subscription.recipient_list,
        headers={"Message-ID": delivery.message_id},
    )
    message.attach_alternative(content.html, "text/html")
    return message


def _send_failed(*, delivery: DigestDelivery, attempt: int, exc: Exception) -> str:
    code = getattr(exc, "smtp_code", None)
    # A header Django refuses (a line break in a name saved before names were checked) fails every attempt.
    permanent = code in PERMANENT_SMTP_CODES or isinstance(exc, smtplib.SMTPRecipientsRefused | BadHeaderError)
    error = f"{type(exc).__name__}: {exc}"
    if permanent or attempt >= settings.DIGEST_SEND_MAX_ATTEMPTS:
        status, next_at = DeliveryStatus.FAILED, None
    else:
        delay = settings.DIGEST_RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1)
        status, next_at = DeliveryStatus.RETRYING, timezone.now() + timedelta(seconds=delay)
    entry = {"at": timezone.now().isoformat(), "attempt": attempt, "outcome": "error", "error": error[:500]}
    DigestDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=status, attempts=attempt, error=error[:2000], next_attempt_at=next_at, history=[*delivery.history, entry]
    )
    log.warning(
        "digest_send_failed",
        digest_id=delivery.subscription_id,
        delivery_id=delivery.pk,
        attempt=attempt,
        status=status,
        error=error[:500],
    )
    return status


def deliveries_dispatch_due(*, now: datetime | None = None) -> int:
    """Send deliveries whose retry is due, and pending ones whose send message was lost."""
    now = now or timezone.now()
    due = list(
        DigestDelivery.objects.filter(
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING], next_attempt_at__lte=now
        ).values_list("pk", "status")[:100]
    )
    for pk, status in due:
        bumped = DigestDelivery.objects.filter(pk=pk, status=status, next_attempt_at__lte=now).update(
            status=DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=REDISPATCH_SECONDS)
        )
        if bumped:
            async_task(SEND_TASK, pk)
    return len(due)


def _refuse_fresh_sending(delivery: DigestDelivery) -> None:
    if delivery.status == DeliveryStatus.SENDING and not delivery_is_stuck(delivery):
        raise DeliveryStateConflict(
            "This delivery is being sent right now; decide only once it is stuck (its worker stopped)."
        )


def delivery_resend(*, delivery: DigestDelivery, by: str = "") -> DigestDelivery:
    """Send a delivery again (same Message-ID) after a person decided to: from stuck `sending`, `failed` or `sent`."""
    _refuse_fresh_sending(delivery)
    note = {"at": timezone.now().isoformat(), "outcome": "resend requested", "by": by}
    with transaction.atomic():
        moved = DigestDelivery.objects.filter(
            pk=delivery.pk, status__in=[DeliveryStatus.SENDING, DeliveryStatus.FAILED, DeliveryStatus.SENT]
        ).update(
            status=DeliveryStatus.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=REDISPATCH_SECONDS),
            history=[*delivery.history, note],
        )
        if not moved:
            raise DeliveryStateConflict(f"A delivery that is {delivery.get_status_display().lower()} cannot be resent.")
        transaction.on_commit(lambda: async_task(SEND_TASK, delivery.pk))
    delivery.refresh_from_db()
    return delivery


def delivery_mark_sent(*, delivery: DigestDelivery, by: str = "") -> DigestDelivery:
    """Record that a delivery stuck in `sending` (or failed) did reach its recipients."""
    _refuse_fresh_sending(delivery)
    note = {"at": timezone.now().isoformat(), "outcome": "marked sent", "by": by}
    moved = DigestDelivery.objects.filter(
        pk=delivery.pk, status__in=[DeliveryStatus.SENDING, DeliveryStatus.FAILED]
    ).update(status=DeliveryStatus.SENT, sent_at=timezone.now(), history=[*delivery.history, note])
    if not moved:
        raise DeliveryStateConflict(
            f"Only a delivery that is sending or failed can be marked sent (it is {delivery.get_status_display()})."
        )
    delivery.refresh_from_db()
    return delivery


def delivery_is_stuck(delivery: DigestDelivery, *, now: datetime | None = None) -> bool:
    """A `sending` delivery older than any SMTP conversation can take: its worker died mid-send."""
    if delivery.status != DeliveryStatus.SENDING or delivery.sending_started_at is None:
        return False
    limit = timedelta(seconds=settings.EMAIL_TIMEOUT * 2 + 30)
    return (now or timezone.now()) - delivery.sending_started_at > limit
