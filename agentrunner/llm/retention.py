"""Retention of LLM calls: LLM_CALL_RETENTION_DAYS, for the calls no kept run shows.

A call is deleted once it is older than the cutoff and its run is gone (run retention or an admin's delete) or
it had none, a batch at a time, oldest first, through the partial index of run-less calls. A run that is kept
keeps its calls, so its page still shows what it used. Each batch adds its calls to `DeletedLLMCalls` in the
delete's transaction, so the llm_* counters of /metrics never go down. The engine tick calls `llm_calls_purge`
(runs.retention): this package imports no app.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from django.db import transaction
from django.db.models import Count, Sum

from agentrunner.db import counts_add
from agentrunner.models import DeletedLLMCalls, LLMCall

log = structlog.get_logger("agentrunner.retention")

BATCH = 1000


def llm_calls_to_purge(*, before: datetime):
    """Calls made before `before` whose run is gone or that had none, oldest first."""
    return LLMCall.objects.filter(run__isnull=True, created_at__lt=before).order_by("created_at")


def llm_calls_purge(*, before: datetime, batch: int = BATCH) -> int:
    """Delete up to `batch` of the oldest calls `llm_calls_to_purge` names, and count them; return how many went."""
    with transaction.atomic():
        # Locked (SKIP LOCKED: a second purge takes the next ones), so what is counted is what is deleted.
        ids = list(
            llm_calls_to_purge(before=before).select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return 0
        sums = list(
            LLMCall.objects.filter(pk__in=ids)
            .order_by()
            .values("provider", "model", "outcome")
            .annotate(
                n=Count("pk"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), usd=Sum("cost_usd")
            )
        )
        deleted, _ = LLMCall.objects.filter(pk__in=ids).delete()
        counts_add(
            DeletedLLMCalls,
            {
                (r["provider"], r["model"], r["outcome"]): {
                    "count": r["n"],
                    "prompt_tokens": r["prompt"] or 0,
                    "completion_tokens": r["completion"] or 0,
                    "cost_usd": r["usd"] or 0,
                }
                for r in sums
            },
            keys=("provider", "model", "outcome"),
        )
    log.info("llm_calls_purged", calls=deleted, before=before.isoformat())
    return deleted
