"""`acomplete()`: one LLM request, with budgets, retries, circuit breakers and failover across providers.

`acomplete` is the implementation, for async agents (and anything else on an event loop); `complete` is
the same for sync callers, through asgiref's `async_to_sync`. Providers are called through the SDKs'
async clients; every database access goes through `sync_to_async` (thread-sensitive, as Django requires),
so the event loop never blocks on the database.

Per request:
1. Budgets (see `budgets`): the estimate must fit the run's budget and the owner's and the team's monthly
   budgets, else an LLMCall row "refused_budget" is written and BudgetExceededError raised (the run ends
   BUDGET_EXCEEDED). If it fits, the estimate is reserved until the request ends, so concurrent requests
   cannot overspend.
2. Providers in LLM_PROVIDERS order, those without credentials left out. One whose breaker is open is
   skipped (an LLMCall row "breaker_open"); a half-open one gets exactly one test call, from one process.
   Every try sent counts against the team's LLM requests per minute (see `throttle`); a try over it is not
   sent: `rate_limited` is logged and LLMRateLimited raised, and the engine puts the step back until the
   team's window has room, without using up one of its attempts.
3. On a provider, retryable failures (timeout, connection error, HTTP 408/409/429/5xx, a malformed
   response) are tried again up to LLM_MAX_RETRIES times, after LLM_RETRY_BACKOFF_SECONDS doubling each
   time (+ up to 10 % jitter), or after the provider's Retry-After when it sends one. A Retry-After longer
   than RETRY_AFTER_MAX_SECONDS is not waited for: the next provider is tried at once. A cancelled step
   (`context.cancelled`) stops retrying and tries no further provider; an async agent's cancelled task
   stops at once (the call in flight is recorded as failed, the reservation released).
4. Other failures (HTTP 400, 401, 403, 404, 422, ...) are not retried on the same provider but fail
   over: another provider may accept what this one refused (another key, model or parameter set).
5. When no provider answers: LLMUnavailable (retryable: the engine tries the step again later) listing
   each provider's last error; if every provider rejected the request itself (no retryable failure and
   no open breaker among them), LLMRequestRejected (non-retryable: trying again cannot help).

Every try is an LLMCall row (tokens, cost from LLM_PRICES, latency, outcome).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema
import structlog
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings

from agentrunner.agents.base import AgentContext, BudgetExceededError
from agentrunner.llm import breaker, budgets, providers, records, throttle
from agentrunner.llm.exceptions import (
    LLMInvalidRequest,
    LLMNotConfigured,
    LLMOutputInvalid,
    LLMRateLimited,
    LLMRequestRejected,
    LLMUnavailable,
)

log = structlog.get_logger("agentrunner.llm")

MAX_BACKOFF_SECONDS = 30.0
BACKOFF_JITTER = 0.1  # up to 10 % added, so that workers that failed together do not retry together
RETRY_AFTER_MAX_SECONDS = 30.0
# Added to the longest a request can take to get how long its budget reservation counts (see budgets).
RESERVATION_MARGIN_SECONDS = 60.0
MAX_TOKENS_LIMIT = 128_000
ROLES = frozenset({"system", "user", "assistant"})
COST_PLACES = Decimal("0.00000001")
TOKENS_PER_MILLION = Decimal(1_000_000)
JSON_INSTRUCTION = (
    "Answer with one JSON value only, with no text or Markdown around it, that is valid against this "
    "JSON Schema:\n{schema}"
)


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    parsed_json: Any
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    latency_ms: int  # the answering call's; retries and failover before it are not included
    attempts: int = 1  # provider tries made for this request, failed ones included
    call_id: int | None = None  # the LLMCall row of the answering call

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd_text(self) -> str:
        """The cost as JSON-friendly text with 8 decimal places, e.g. "0.00012000"."""
        return format(self.cost_usd, "f")

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclasses.dataclass
class _Scope:
    """A request's rows (its ledger), and what it has tried so far."""

    ledger: records.Ledger
    request_limit: throttle.TeamRequestLimit = throttle.NO_LIMIT
    tries: int = 0
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    transient: bool = False  # some provider failed in a way that may pass (retryable error, open breaker)

    @property
    def context(self) -> AgentContext:
        return self.ledger.context


def complete(
    *,
    messages: list[dict],
    system: str | None = None,
    model: str | None = None,
    max_tokens: int = 512,
    temperature: float | None = None,
    json_schema: dict | None = None,
    context: AgentContext,
) -> Completion:
    """`acomplete` for sync callers (sync agents, commands); not callable from a running event loop."""
    return async_to_sync(acomplete)(
        messages=messages,
        system=system,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        json_schema=json_schema,
        context=context,
    )


async def acomplete(
    *,
    messages: list[dict],
    system: str | None = None,
    model: str | None = None,
    max_tokens: int = 512,
    temperature: float | None = None,
    json_schema: dict | None = None,
    context: AgentContext,
) -> Completion:
    """Ask the configured LLM providers for a completion (the rules are in the module docstring).

    `context` names the run, step, owner and team that the calls are recorded, budgeted and limited against:
    ids of existing rows (as the engine passes them) or None; an AgentContext or an AsyncAgentContext.
    `temperature` None leaves the provider's default. With `json_schema`, the answer must be JSON valid
    against it and is returned parsed in `parsed_json`. Raises BudgetExceededError (a budget refused),
    LLMRateLimited (the team's requests per minute are used up: wait `retry_after`), LLMUnavailable
    (retryable), LLMRequestRejected, LLMNotConfigured, LLMInvalidRequest (not retryable), LLMOutputInvalid
    (retryable: the answer did not match `json_schema`).
    """
    _check_request(messages, max_tokens, temperature, json_schema)
    chain = providers.configured_providers()
    if not chain:
        raise LLMNotConfigured()
    if json_schema is not None:
        instruction = JSON_INSTRUCTION.format(schema=_schema_text(json_schema))
        system = f"{system}\n\n{instruction}" if system else instruction
    request = providers.Request(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        system=system,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        want_json=json_schema is not None,
    )
    ledger = records.Ledger(context=context, request_id=uuid.uuid4())
    scope = _Scope(ledger=ledger)
    bound = log.bind(
        run_id=str(context.run_id) if context.run_id else None,
        step_id=context.step_id,
        owner_id=context.owner_id,
        team_id=context.team_id,
        request_id=str(ledger.request_id),
    )
    if context.team_id is not None:
        scope.request_limit = await sync_to_async(throttle.team_request_limit)(team_id=context.team_id)

    estimate = _estimate(request)
    reservation, refusal = await sync_to_async(ledger.reserve)(
        estimate=estimate, model=model or "", hold_seconds=_longest_request_seconds(len(chain))
    )
    if reservation.refused is not None:
        refused = reservation.refused
        bound.warning(
            "llm_budget_refused", budget=refused.kind, used=refused.used, limit=refused.limit, estimate=estimate
        )
        raise BudgetExceededError(refusal)

    completion = None
    try:
        for provider in chain:
            completion = await _try_provider(scope, provider, providers.model_for(provider, model), request, bound)
            if completion is not None:
                break
    finally:
        if ledger.reservation_id is not None:  # no answer settled it (none came, or the task was cancelled)
            await sync_to_async(ledger.release)()
    if completion is None:
        _raise_all_failed(scope, bound)

    budgets.warn_on_crossing(
        reservation.budgets,
        spent=completion.total_tokens,
        run_id=context.run_id,
        owner_id=context.owner_id,
        team_id=context.team_id,
    )
    if json_schema is not None:
        completion = await _with_json(completion, json_schema)
    return completion


def _longest_request_seconds(provider_count: int) -> float:
    """How long a request may take at most, every try timing out after the longest wait; plus a margin."""
    tries = 1 + max(int(settings.LLM_MAX_RETRIES), 0)
    longest_wait = max(RETRY_AFTER_MAX_SECONDS, MAX_BACKOFF_SECONDS * (1 + BACKOFF_JITTER))
    per_provider = tries * float(settings.LLM_TIMEOUT_SECONDS) + (tries - 1) * longest_wait
    return provider_count * per_provider + RESERVATION_MARGIN_SECONDS


async def _try_provider(scope: _Scope, provider, model: str, request, bound) -> Completion | None:
    """Call one provider, retrying as its failures allow; None if it gave no answer."""
    if scope.context.cancelled:  # the step was cancelled or timed out: spend nothing more
        scope.errors[provider.name] = "not tried: the step was cancelled or timed out"
        scope.transient = True
        return None
    ledger = scope.ledger
    decision, skipped = await sync_to_async(ledger.admit)(provider=provider.name, model=model)
    if skipped:
        scope.errors[provider.name], scope.transient = skipped, True
        bound.info("llm_provider_skipped", provider=provider.name, reason="breaker_open")
        return None
    probing = decision.admission == breaker.Admission.PROBE
    max_tries = 1 if probing else 1 + max(int(settings.LLM_MAX_RETRIES), 0)
    failed_before = False
    for attempt in range(1, max_tries + 1):
        await _take_turn(scope, provider.name, probing, bound)
        scope.tries += 1
        started = time.perf_counter()
        try:
            answer = await providers.call(provider, model, request)
        except providers.ProviderFailure as failure:
            latency_ms = _ms_since(started)
            stop = await sync_to_async(ledger.try_failed)(
                provider=provider.name,
                model=model,
                decision=decision,
                attempt=attempt,
                latency_ms=latency_ms,
                failure=failure,
            )
            bound.warning(
                "llm_call_failed",
                provider=provider.name,
                model=model,
                attempt=attempt,
                error=str(failure),
                retryable=failure.retryable,
                latency_ms=latency_ms,
            )
            tries = f"{attempt} {'try' if attempt == 1 else 'tries'}"
            scope.errors[provider.name] = f"{failure} ({tries})"
            if failure.counts_for_breaker:
                failed_before = True
            if failure.retryable:
                scope.transient = True
            if not failure.retryable or stop or attempt == max_tries:
                return None
            delay = _retry_delay(failure, attempt)
            if delay is None:
                scope.errors[provider.name] += f"; Retry-After {failure.retry_after:g} s is too long to wait"
                return None
            bound.info("llm_retry", provider=provider.name, attempt=attempt, delay_seconds=round(delay, 3))
            if not await scope.context.sleep_async(delay):
                scope.errors[provider.name] += "; the step was cancelled or timed out"
                return None
            continue
        except asyncio.CancelledError:
            # The step's task was cancelled while the provider was working on the request: it was sent
            # (and may be billed), so it is recorded; its answer, if any, is never read.
            latency_ms = _ms_since(started)
            await sync_to_async(ledger.try_cancelled)(
                provider=provider.name, model=model, decision=decision, attempt=attempt, latency_ms=latency_ms
            )
            bound.info("llm_call_cancelled", provider=provider.name, model=model, attempt=attempt)
            raise
        latency_ms = _ms_since(started)
        cost = cost_usd(model, answer.prompt_tokens, answer.completion_tokens, served=answer.model)
        row = await sync_to_async(ledger.try_answered)(
            provider=provider.name,
            model=model,
            decision=decision,
            failed_before=failed_before,
            attempt=attempt,
            latency_ms=latency_ms,
            answer=answer,
            cost=cost,
        )
        bound.info(
            "llm_call",
            provider=provider.name,
            model=model,
            attempt=attempt,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost_usd=format(cost, "f"),
            latency_ms=latency_ms,
        )
        return Completion(
            text=answer.text,
            parsed_json=None,
            provider=provider.name,
            model=model,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost_usd=cost,
            latency_ms=latency_ms,
            attempts=scope.tries,
            call_id=row.pk,
        )
    return None


async def _take_turn(scope: _Scope, provider_name: str, probing: bool, bound) -> None:
    """Count the try against the team's LLM request limit; over it, raise LLMRateLimited (nothing is sent)."""
    limit = scope.request_limit
    if not limit.limit:
        return
    decision = await sync_to_async(throttle.request_admit)(limit=limit)
    if decision.allowed:
        return
    if probing:  # the breaker's test call is not made: another process may make it
        await sync_to_async(breaker.breaker_abandon_probe)(provider=provider_name)
    bound.warning(
        "rate_limited",
        team=limit.slug,
        key=decision.key,
        limit=decision.limit,
        retry_after=decision.retry_after_seconds,
        provider=provider_name,
    )
    raise LLMRateLimited(
        f"The LLM request limit of team {limit.slug} ({decision.limit} per {throttle.window_seconds():g} s) is "
        f"reached: the step waits {decision.retry_after_seconds} s and tries again.",
        retry_after=decision.retry_after_seconds,
        key=decision.key or limit.key,
        limit=decision.limit or limit.limit,
    )


def _raise_all_failed(scope: _Scope, bound) -> None:
    listed = "; ".join(f"{name}: {error}" for name, error in scope.errors.items())
    bound.error("llm_unavailable", errors=scope.errors, transient=scope.transient)
    if scope.transient:
        raise LLMUnavailable(f"No LLM provider answered. {listed}", errors=scope.errors)
    raise LLMRequestRejected(f"Every LLM provider rejected the request. {listed}", errors=scope.errors)


def _retry_delay(failure: providers.ProviderFailure, attempt: int) -> float | None:
    """Seconds to wait before the next try on the same provider; None if the provider asks for too long."""
    if failure.retry_after is not None:
        return failure.retry_after if failure.retry_after <= RETRY_AFTER_MAX_SECONDS else None
    delay = min(float(settings.LLM_RETRY_BACKOFF_SECONDS) * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    return delay + random.uniform(0, delay * BACKOFF_JITTER)


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int, *, served: str | None = None) -> Decimal:
    """Price a call from LLM_PRICES (USD per million prompt / completion tokens); unlisted models cost 0."""
    prices = settings.LLM_PRICES or {}
    price = prices.get(model) or (prices.get(served) if served else None)
    if not price:
        return Decimal(0).quantize(COST_PLACES)
    try:
        prompt_price, completion_price = (Decimal(str(p)) for p in price)
    except (TypeError, ValueError, InvalidOperation):
        log.warning("llm_price_unreadable", model=model, price=price)
        return Decimal(0).quantize(COST_PLACES)
    cost = (prompt_tokens * prompt_price + completion_tokens * completion_price) / TOKENS_PER_MILLION
    return cost.quantize(COST_PLACES)


async def _with_json(completion: Completion, schema: dict) -> Completion:
    try:
        parsed = providers.parse_json_output(completion.text)
    except ValueError as exc:
        await _note_invalid(completion, f"not JSON ({exc})")
        raise LLMOutputInvalid(f"The model's answer is not JSON ({exc}).", completion=completion) from exc
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))
    if errors:
        described = "; ".join(
            f"{'.'.join(str(p) for p in e.absolute_path) or 'value'}: {e.message[:200]}" for e in errors[:5]
        )
        await _note_invalid(completion, f"does not match the JSON schema: {described}")
        raise LLMOutputInvalid(
            f"The model's answer does not match the JSON schema: {described}.", completion=completion
        )
    return dataclasses.replace(completion, parsed_json=parsed)


async def _note_invalid(completion: Completion, reason: str) -> None:
    if completion.call_id is not None:
        await sync_to_async(records.answer_rejected)(call_id=completion.call_id, reason=reason)


def _check_request(messages, max_tokens, temperature, json_schema) -> None:
    problems = []
    if not isinstance(messages, list) or not messages:
        problems.append("messages must be a non-empty list")
    else:
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                problems.append(f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}")
            elif not isinstance(message.get("content"), str):
                problems.append(f"messages[{index}].content must be a string")
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        problems.append(f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
        problems.append("temperature must be from 0 to 2")
    if json_schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(json_schema)
        except jsonschema.SchemaError as exc:
            problems.append(f"json_schema is not a valid JSON Schema ({exc.message})")
    if problems:
        raise LLMInvalidRequest("Invalid LLM request: " + "; ".join(problems) + ".")


def _estimate(request: providers.Request) -> int:
    chars = sum(len(m["content"]) for m in request.messages) + len(request.system or "")
    return -(-chars // providers.CHARS_PER_TOKEN) + request.max_tokens


def _schema_text(schema: dict) -> str:
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
