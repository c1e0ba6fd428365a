"""Circuit breakers, one per provider, kept in the database so every worker and the web process share them.

closed --(LLM_BREAKER_FAILURES failures in a row)--> open --(LLM_BREAKER_RESET_SECONDS)--> half_open:
one process claims the single test call ("probe"); its success closes the breaker, its failure opens it
again. Every transition is a compare-and-set (`filter(<expected state>).update(...)`): when two processes
race, the one whose update touches the row wins and the other sees 0 rows and acts on the new state.
No row lock is held while a provider is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import structlog
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from agentrunner.models import BreakerState, ProviderBreaker

log = structlog.get_logger("agentrunner.llm")


class Admission(StrEnum):
    CLOSED = "closed"  # call as usual, retries allowed
    PROBE = "probe"  # this process holds the half-open breaker's one test call: one try, no retries
    REFUSED = "refused"  # open (or another process is probing): skip this provider


@dataclass(frozen=True)
class Decision:
    admission: Admission
    failures: int  # consecutive failures when admitted (a success resets them only if > 0)
    opened_at: object = None


def _threshold() -> int:
    return max(int(settings.LLM_BREAKER_FAILURES), 1)


def _probe_lease() -> timedelta:
    # A probe is a single try bounded by the client timeout; one that outlives this was lost (its process
    # died): another process may then take the probe over instead of the breaker staying half-open for ever.
    return timedelta(seconds=float(settings.LLM_TIMEOUT_SECONDS) + float(settings.LLM_BREAKER_RESET_SECONDS))


def _row(provider: str) -> ProviderBreaker:
    row = ProviderBreaker.objects.filter(provider=provider).first()
    if row is None:  # first use of this provider; get_or_create absorbs a concurrent first use
        row, _ = ProviderBreaker.objects.get_or_create(provider=provider)
    return row


def breaker_admit(*, provider: str) -> Decision:
    """Say whether a call to `provider` may go ahead, claiming the half-open probe if it is due."""
    row = _row(provider)
    now = timezone.now()
    if row.state == BreakerState.CLOSED:
        return Decision(Admission.CLOSED, row.consecutive_failures)
    reset = timedelta(seconds=float(settings.LLM_BREAKER_RESET_SECONDS))
    if row.state == BreakerState.OPEN and (row.opened_at is None or row.opened_at <= now - reset):
        due = Q(opened_at__isnull=True) | Q(opened_at__lte=now - reset)
        claimed = ProviderBreaker.objects.filter(due, provider=provider, state=BreakerState.OPEN).update(
            state=BreakerState.HALF_OPEN, probe_started_at=now, updated_at=now
        )
        if claimed == 1:
            log.info("llm_breaker_half_open", provider=provider)
            return Decision(Admission.PROBE, row.consecutive_failures)
    elif row.state == BreakerState.HALF_OPEN and (
        row.probe_started_at is None or row.probe_started_at <= now - _probe_lease()
    ):
        stale = Q(probe_started_at__isnull=True) | Q(probe_started_at__lte=now - _probe_lease())
        claimed = ProviderBreaker.objects.filter(stale, provider=provider, state=BreakerState.HALF_OPEN).update(
            probe_started_at=now, updated_at=now
        )
        if claimed == 1:
            log.warning("llm_breaker_probe_taken_over", provider=provider)
            return Decision(Admission.PROBE, row.consecutive_failures)
    return Decision(Admission.REFUSED, row.consecutive_failures, row.opened_at)


def breaker_record_success(*, provider: str, decision: Decision, failed_before: bool) -> None:
    """Close a half-open breaker after its probe succeeded; clear the failure count of a closed one."""
    now = timezone.now()
    if decision.admission == Admission.PROBE:
        closed = ProviderBreaker.objects.filter(provider=provider, state=BreakerState.HALF_OPEN).update(
            state=BreakerState.CLOSED, consecutive_failures=0, opened_at=None, probe_started_at=None, updated_at=now
        )
        if closed:
            log.info("llm_breaker_closed", provider=provider)
    elif decision.failures or failed_before:  # nothing to write in the common case
        ProviderBreaker.objects.filter(provider=provider, state=BreakerState.CLOSED, consecutive_failures__gt=0).update(
            consecutive_failures=0, updated_at=now
        )


def breaker_record_failure(*, provider: str, decision: Decision, error: str) -> bool:
    """Count a failure; open the breaker at the threshold (or re-open it after a failed probe).

    Return True if the breaker is no longer closed, i.e. this provider must not be tried again now.
    """
    now = timezone.now()
    if decision.admission == Admission.PROBE:
        ProviderBreaker.objects.filter(provider=provider, state=BreakerState.HALF_OPEN).update(
            state=BreakerState.OPEN,
            opened_at=now,
            probe_started_at=None,
            consecutive_failures=F("consecutive_failures") + 1,
            updated_at=now,
        )
        log.warning("llm_breaker_reopened", provider=provider, error=error)
        return True
    counted = ProviderBreaker.objects.filter(provider=provider, state=BreakerState.CLOSED).update(
        consecutive_failures=F("consecutive_failures") + 1, updated_at=now
    )
    if counted == 0:  # another process opened it meanwhile
        return True
    opened = ProviderBreaker.objects.filter(
        provider=provider, state=BreakerState.CLOSED, consecutive_failures__gte=_threshold()
    ).update(state=BreakerState.OPEN, opened_at=now, updated_at=now)
    if opened:
        log.warning("llm_breaker_opened", provider=provider, failures=_threshold(), error=error)
        return True
    return False


def breaker_release_probe(*, provider: str) -> None:
    """A probe that got an answer about the request itself (e.g. 400): the provider is up, close the breaker."""
    breaker_record_success(provider=provider, decision=Decision(Admission.PROBE, 0), failed_before=True)


def breaker_abandon_probe(*, provider: str) -> None:
    """A probe that ended without an answer either way (its step was cancelled): let another process make it."""
    ProviderBreaker.objects.filter(provider=provider, state=BreakerState.HALF_OPEN).update(
        probe_started_at=None, updated_at=timezone.now()
    )


def breaker_reset(*, provider: str) -> bool:
    """Close a provider's breaker by hand (admin action); return True if it was not already closed and clean."""
    now = timezone.now()
    changed = (
        ProviderBreaker.objects.filter(provider=provider)
        .exclude(state=BreakerState.CLOSED, consecutive_failures=0)
        .update(
            state=BreakerState.CLOSED, consecutive_failures=0, opened_at=None, probe_started_at=None, updated_at=now
        )
    )
    if changed:
        log.info("llm_breaker_reset", provider=provider)
    return bool(changed)
