"""The runs admin pages: as many queries with three times the rows, and no write on a GET."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.models import AgentPolicy, Run, RunStatus, Slot
from tests.runs.factories import add_admin_rows, add_steps, hold_slot, make_flow_run, make_run, make_waiting_run

pytestmark = pytest.mark.django_db

ROWS = 3  # the small page has ROWS of each kind of row, the large one 3 * ROWS
WRITES = ("INSERT", "UPDATE", "DELETE")
RUN_LIST = reverse("admin:runs_run_changelist")
SLOT_LIST = reverse("admin:runs_slot_changelist")
AGENT_LIST = reverse("admin:runs_agentpolicy_changelist")


def sql_of(client, url) -> list[str]:
    """The statements a GET of `url` sends (the page must open)."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return [q["sql"] for q in queries.captured_queries]


def writes_in(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.lstrip().upper().startswith(WRITES)]


def add_rows(count: int, *, prefix: str) -> None:
    """`count` of every kind of row the three lists show, the agent types included (retired agents)."""
    add_admin_rows(count, prefix=prefix)
    # The runs above hold and wait for "agent:<prefix>-<i>": make those agent types rows of the list.
    AgentPolicy.objects.bulk_create(AgentPolicy(agent_type=f"{prefix}-{i}") for i in range(count))


def assert_flat(client, url, *, grow, label: str) -> None:
    """The page sends as many queries after `grow()` tripled its rows as before."""
    client.get(url)  # warm the per-process caches (content types, sites) before counting
    small = sql_of(client, url)
    grow()
    large = sql_of(client, url)
    print(f"{label}: {len(small)} queries small, {len(large)} large")  # noqa: T201 (shown with -s)
    assert len(large) == len(small), "\n".join(large)


# --- lists -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [RUN_LIST, SLOT_LIST, AGENT_LIST], ids=["runs", "slots", "agent-types"])
def test_list__queries_do_not_grow_with_rows(admin_client, url):
    add_rows(ROWS, prefix="small")

    assert_flat(admin_client, url, grow=lambda: add_rows(2 * ROWS, prefix="large"), label=url)


def test_run_list__large_page_lists_every_kind_of_run(admin_client):
    add_rows(3 * ROWS, prefix="large")

    response = admin_client.get(RUN_LIST)

    kinds = {(bool(r.flow_version_id), r.status, r.is_waiting) for r in response.context["cl"].result_list}
    assert (True, RunStatus.COMPLETED, False) in kinds  # flow runs
    assert (False, RunStatus.PENDING, True) in kinds  # waiting for a slot
    assert (False, RunStatus.FAILED, False) in kinds
    assert response.context["cl"].result_count == Run.objects.count()


def test_slot_list__shows_every_slot(admin_client):
    add_rows(3 * ROWS, prefix="large")

    response = admin_client.get(SLOT_LIST)

    assert response.context["cl"].result_count == Slot.objects.count() == 3 * ROWS


# --- the run page ------------------------------------------------------------------------------


def change_url(run) -> str:
    return reverse("admin:runs_run_change", args=[run.pk])


def test_run_page__queries_do_not_grow_with_steps_attempts_and_reruns(admin_client):
    run = make_run(RunStatus.FAILED, error="Boom", error_code="retryable_error")
    add_steps(run, ROWS, attempts=2)
    for _ in range(ROWS):
        make_run(RunStatus.COMPLETED, rerun_of=run)

    def grow():
        add_steps(run, 2 * ROWS, attempts=3, first_sequence=ROWS + 1)
        for _ in range(2 * ROWS):
            make_run(RunStatus.COMPLETED, rerun_of=run)

    assert_flat(admin_client, change_url(run), grow=grow, label="run page")


def test_run_page__waiting_run__queries_do_not_grow_with_slot_holders(admin_client):
    key = "agent:wait"
    for _ in range(ROWS):
        hold_slot(make_run(RunStatus.RUNNING), key=key, limit=9 * ROWS)
    waiting = make_waiting_run(key=key)

    def grow():
        for _ in range(2 * ROWS):
            hold_slot(make_run(RunStatus.RUNNING), key=key)
            make_waiting_run(key=key)

    assert_flat(admin_client, change_url(waiting), grow=grow, label="waiting run page")
    content = admin_client.get(change_url(waiting)).content.decode()
    assert "Slots in use: <strong>9</strong>" in content


def test_run_page__flow_run__queries_do_not_grow_with_steps(admin_client):
    run = make_flow_run(slug="looping", steps=ROWS)

    assert_flat(
        admin_client,
        change_url(run),
        grow=lambda: add_steps(run, 2 * ROWS, first_sequence=ROWS),
        label="flow run page",
    )


# --- no write on GET ---------------------------------------------------------------------------


def test_get__no_runs_admin_page_writes(admin_client):
    add_rows(2, prefix="rows")
    holder = make_run(RunStatus.RUNNING)
    waiting = make_waiting_run(holder_run=holder)
    flow_run = Run.objects.filter(flow_version__isnull=False).first()
    policy = AgentPolicy.objects.get(agent_type="wait")
    urls = [
        RUN_LIST,
        f"{RUN_LIST}?status=WAITING",
        SLOT_LIST,
        AGENT_LIST,
        change_url(holder),
        change_url(waiting),
        change_url(flow_run),
        reverse("admin:runs_run_start"),
        f"{reverse('admin:runs_run_start')}?from={holder.pk}",
        reverse("admin:runs_run_live", args=[holder.pk]),
        reverse("admin:runs_run_live", args=[waiting.pk]),
        reverse("admin:runs_run_live", args=[flow_run.pk]),
        reverse("admin:runs_run_value", args=[holder.pk]) + "?of=input&at=/seconds",
        reverse("admin:runs_slot_change", args=[Slot.objects.first().pk]),
        reverse("admin:runs_agentpolicy_change", args=[policy.pk]),
    ]
    for url in urls:
        admin_client.get(url)  # the first GET of a session may store what the next ones read

    writes = {url: writes_in(sql_of(admin_client, url)) for url in urls}

    assert writes == {url: [] for url in urls}


def test_agent_types_list__get_writes_nothing_even_for_a_newly_registered_agent(admin_client):
    AgentPolicy.objects.filter(agent_type="wait").delete()  # as if "wait" were registered after the last migrate
    admin_client.get(AGENT_LIST)

    statements = sql_of(admin_client, AGENT_LIST)

    assert writes_in(statements) == []
    assert not AgentPolicy.objects.filter(agent_type="wait").exists()
