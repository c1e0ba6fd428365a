"""Pick a digest's top results: read a value by path from each run's result and sort; pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MISSING = object()


def value_at(data: Any, path: str) -> Any:
    """Follow a dotted path (`output.items.0.score`) into JSON data; MISSING where it leads nowhere."""
    if not path:
        return data
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return MISSING
    return data


def run_value(run, path: str) -> Any:
    """A path into a run's result; for a flow run, `score` also finds `output.score`."""
    found = value_at(run.result, path)
    if found is MISSING and run.flow_version_id and isinstance(run.result, dict):
        found = value_at(run.result.get("output"), path)
    return found


def run_output(run) -> Any:
    """What a run produced: a flow run's last output, an agent run's result."""
    if run.flow_version_id and isinstance(run.result, dict) and "output" in run.result:
        return run.result["output"]
    return run.result


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class Item:
    run: Any
    data: Any
    value: Any = None


@dataclass
class Ranking:
    top: list[Item]
    considered: int  # results found in the period's completed runs
    unranked: int  # of those, results without a number at `rank_by`


def rank(runs, *, items_path: str, rank_by: str, descending: bool, limit: int) -> Ranking:
    """Top `limit` results of completed runs (newest first when there is nothing to rank by)."""
    items: list[Item] = []
    for run in sorted(runs, key=lambda r: r.finished_at, reverse=True):
        found = run_value(run, items_path) if items_path else run_output(run)
        entries = found if items_path and isinstance(found, list) else ([] if found is MISSING else [found])
        items.extend(Item(run=run, data=entry) for entry in entries)
    if not rank_by:
        return Ranking(top=items[:limit], considered=len(items), unranked=0)
    ranked = []
    for item in items:
        value = value_at(item.data, rank_by)
        if value is MISSING and not items_path:
            value = run_value(item.run, rank_by)
        if is_number(value):
            item.value = value
            ranked.append(item)
    # sorted() is stable: equal values keep newest-first order.
    ranked.sort(key=lambda i: i.value, reverse=descending)
    return Ranking(top=ranked[:limit], considered=len(items), unranked=len(items) - len(ranked))
