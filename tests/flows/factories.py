"""Small flow definitions for the tests."""

from flows import services


def chain(*tasks, conditions=None, **extra) -> dict:
    """A definition from (name, agent, input) tuples; by default each task leads to the next on success."""
    names = [t[0] for t in tasks]
    if conditions is None:
        conditions = [
            {
                "name": f"after-{a}",
                "source_task": a,
                "outcome": "success",
                "target_task_success": b,
                "target_task_failure": "end",
            }
            for a, b in zip(names, names[1:], strict=False)
        ]
    return {
        "name": "test flow",
        "start_task": names[0],
        "tasks": [{"name": n, "agent": agent, "input": data} for n, agent, data in tasks],
        "conditions": conditions,
        **extra,
    }


def flow(slug="test-flow", definition=None, **fields):
    return services.flow_create(slug=slug, name=slug, definition=definition or chain(("a", "pass", {})), **fields)
