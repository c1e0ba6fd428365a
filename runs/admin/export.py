"""The run list's "Download selected runs as CSV": one row per run, for a spreadsheet.

Streamed (the admin's "select all" may name every run of a team), a chunk of runs and their LLM totals at a
time. Times are ISO 8601 in UTC; input and result are JSON. A cell that a spreadsheet would read as a formula
(=, +, -, @, a tab or a carriage return first) starts with an apostrophe instead (CSV injection).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from agentrunner.llm.selectors import llm_aggregates, money
from agentrunner.models import LLMCall
from runs.models import Run

CHUNK = 500
COLUMNS = [
    "run id",
    "agent or flow",
    "status",
    "error code",
    "error",
    "user id",
    "created (UTC)",
    "started (UTC)",
    "finished (UTC)",
    "duration (s)",
    "LLM tokens",
    "LLM cost (USD)",
    "input (JSON)",
    "result (JSON)",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """The value as a CSV cell no spreadsheet runs as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_START) else text


def _time(moment) -> str:
    return moment.astimezone(UTC).isoformat() if moment else ""


def _label(run: Run) -> str:
    if run.flow_version_id:
        version = run.flow_version
        slug = version.flow.slug if version.flow_id else "inline"
        return f"flow {slug} v{version.number}"
    return run.agent_type


def _rows(runs: QuerySet[Run]) -> Iterator[list[str]]:
    yield COLUMNS
    chunk: list[Run] = []
    for run in runs.select_related("flow_version__flow").order_by("-created_at").iterator(chunk_size=CHUNK):
        chunk.append(run)
        if len(chunk) == CHUNK:
            yield from _chunk_rows(chunk)
            chunk = []
    yield from _chunk_rows(chunk)


def _chunk_rows(runs: list[Run]) -> Iterator[list[str]]:
    if not runs:
        return
    llm = {
        row["run_id"]: row
        for row in LLMCall.objects.filter(run__in=runs).values("run_id").order_by().annotate(**llm_aggregates())
    }
    for run in runs:
        totals = llm.get(run.pk, {})
        duration = run.duration
        yield [
            str(run.pk),
            _label(run),
            run.status,
            run.error_code,
            run.error,
            run.user_id or "",
            _time(run.created_at),
            _time(run.started_at),
            _time(run.finished_at),
            f"{duration.total_seconds():.3f}" if duration is not None else "",
            totals.get("total_tokens", 0),
            money(totals.get("cost_usd")),
            json.dumps(run.input, ensure_ascii=False, sort_keys=True),
            "" if run.result is None else json.dumps(run.result, ensure_ascii=False, sort_keys=True),
        ]


class _Echo:
    """A file-like object whose write returns what it was given (csv.writer into a stream)."""

    def write(self, value: str) -> str:
        return value


def _lines(rows: Iterable[list]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff"  # a byte order mark: spreadsheets then read the file as UTF-8
    for row in rows:
        yield writer.writerow([safe_cell(cell) for cell in row])


def runs_csv_response(runs: QuerySet[Run]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_lines(_rows(runs)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="runs-{timezone.now():%Y%m%d-%H%M}.csv"'
    return response
