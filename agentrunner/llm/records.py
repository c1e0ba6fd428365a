"""The gateway's database side: what one request writes, a method per moment of the request.

Sync ORM code. The gateway runs on an event loop and calls each method through `sync_to_async`: one
hop to the thread that Django's connection belongs to, a few statements, back.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from agentrunner.agents.base import AgentContext
from agentrunner.llm import breaker, budgets
from agentrunner.llm.providers import Answer, ProviderFailure
from agentrunner.models import LLMCall, LLMOutcome


@dataclass
class Ledger:
    """The LLMCall rows of one gateway request (one per try), and the budget reservation it holds."""

    context: AgentContext  # the run, step, owner and team the calls are recorded and budgeted against
    request_id: uuid.UUID
    reservation_id: int | None = None  # held from `reserve` until `try_answered` settles it or `release`

    def reserve(self, *, estimate: int, model: str, hold_seconds: float) -> tuple[budgets.Reservation, str]:
        """Reserve the estimate against the budgets; if one refuses, record the refusal and return its message."""
        context = self.context
        reservation = budgets.budget_reserve(
            run_id=context.run_id,
            owner_id=context.owner_id,
            team_id=context.team_id,
            token_budget=context.token_budget,
            estimate=estimate,
            request_id=self.request_id,
            hold_seconds=hold_seconds,
        )
        if reservation.refused is None:
            self.reservation_id = reservation.reservation_id
            return reservation, ""
        message = budgets.refusal_message(
            reservation.refused,
            estimate=estimate,
            run_id=context.run_id,
            owner_id=context.owner_id,
            team_id=context.team_id,
        )
        self._record(provider="", model=model, outcome=LLMOutcome.REFUSED_BUDGET, attempt=0, error=message)
        return reservation, message

    def release(self) -> None:
        """Give the reserved tokens back: the request ends without an answer."""
        if self.reservation_id is not None:
            budgets.reservation_release(reservation_id=self.reservation_id)
            self.reservation_id = None

    def admit(self, *, provider: str, model: str) -> tuple[breaker.Decision, str]:
        """Ask the provider's breaker; if it is open, record the skip and return why."""
        decision = breaker.breaker_admit(provider=provider)
        if decision.admission != breaker.Admission.REFUSED:
            return decision, ""
        since = f" since {decision.opened_at:%H:%M:%S} UTC" if decision.opened_at else ""
        error = f"skipped: circuit breaker open{since} after repeated failures"
        self._record(provider=provider, model=model, outcome=LLMOutcome.BREAKER_OPEN, attempt=0, error=error)
        return decision, error

    def try_failed(
        self,
        *,
        provider: str,
        model: str,
        decision: breaker.Decision,
        attempt: int,
        latency_ms: int,
        failure: ProviderFailure,
    ) -> bool:
        """Record a failed try and tell the breaker; True if the breaker says to stop trying this provider."""
        self._record(
            provider=provider,
            model=model,
            outcome=LLMOutcome.ERROR,
            attempt=attempt,
            latency_ms=latency_ms,
            error=str(failure),
        )
        if failure.counts_for_breaker:
            return breaker.breaker_record_failure(provider=provider, decision=decision, error=str(failure))
        if decision.admission == breaker.Admission.PROBE:  # it answered, about this request only: it is back
            breaker.breaker_release_probe(provider=provider)
        return False

    def try_cancelled(
        self, *, provider: str, model: str, decision: breaker.Decision, attempt: int, latency_ms: int
    ) -> None:
        """Record a try whose step was cancelled while the provider worked on it (sent, so maybe billed)."""
        self._record(
            provider=provider,
            model=model,
            outcome=LLMOutcome.ERROR,
            attempt=attempt,
            latency_ms=latency_ms,
            error="cancelled: the step was cancelled or timed out while waiting for the answer",
        )
        if decision.admission == breaker.Admission.PROBE:  # the test call tells nothing: another process may make it
            breaker.breaker_abandon_probe(provider=provider)

    def try_answered(
        self,
        *,
        provider: str,
        model: str,
        decision: breaker.Decision,
        failed_before: bool,
        attempt: int,
        latency_ms: int,
        answer: Answer,
        cost: Decimal,
    ) -> LLMCall:
        """Tell the breaker, record the answer and settle the budget reservation with its real usage."""
        breaker.breaker_record_success(provider=provider, decision=decision, failed_before=failed_before)
        # The call row replaces the reservation in one transaction: a budget check sees one of them, never
        # both (refusing too soon) nor neither (letting a concurrent request overspend). Without a
        # reservation (no budget applies) the row is one autocommitted INSERT.
        with transaction.atomic() if self.reservation_id is not None else contextlib.nullcontext():
            row = self._record(
                provider=provider,
                model=model,
                outcome=LLMOutcome.SUCCESS,
                attempt=attempt,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                total_tokens=answer.prompt_tokens + answer.completion_tokens,
                cost_usd=cost,
                latency_ms=latency_ms,
                error="usage not reported by the server: estimated from characters" if answer.usage_estimated else "",
            )
            if self.reservation_id is not None:
                budgets.reservation_release(reservation_id=self.reservation_id)
        self.reservation_id = None  # settled (after the commit: a failed one leaves it to `release`)
        return row

    def _record(self, *, provider: str, model: str, outcome: str, attempt: int, **values) -> LLMCall:
        return LLMCall.objects.create(
            run_id=self.context.run_id,
            step_id=self.context.step_id,
            owner_id=self.context.owner_id,
            team_id=self.context.team_id,
            step_attempt=self.context.attempt,
            request_id=self.request_id,
            provider=provider,
            model=model,
            outcome=outcome,
            attempt=attempt,
            **values,
        )


def answer_rejected(*, call_id: int, reason: str) -> None:
    """Note on a successful call's row why its answer was not used (the call itself is paid for)."""
    LLMCall.objects.filter(pk=call_id).update(error=f"answer rejected: {reason}"[:2000])
