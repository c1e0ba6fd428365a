"""The admin's home page, the dashboard: every panel's figures, what each viewer may see, and its queries."""

import uuid
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.status import Stat

from agentrunner.models import BreakerState, LLMCall, LLMOutcome, OwnerBudget, ProviderBreaker, Role
from agentrunner.teams.services import team_default
from runs.models import AgentPolicy, OnBusyChoice, Run, RunStatus, StepStatus
from tests.conftest import join, team_named
from tests.runs.factories import hold_slot, make_flow_run, make_run, make_waiting_run
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")
WRITES = ("INSERT", "UPDATE", "DELETE")
PANELS = ["runs", "workers", "agents", "failures", "schedules", "providers", "budgets"]


def page(client):
    response = client.get(INDEX)
    assert response.status_code == 200
    return response, response.content.decode()


def staff_with(django_user_model, *codenames: str):
    user = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def staff_in(django_user_model, role: str, team=None, *, username="operator"):
    """A staff member with `role` in `team` (the default team) and every Django permission, which no longer
    decides anything."""
    user = staff_with(django_user_model)
    user.user_permissions.set(Permission.objects.all())
    join(user, role, team)
    return user


def llm_call(user, tokens: int, **fields) -> LLMCall:
    fields.setdefault("team", team_default())
    return LLMCall.objects.create(
        owner=user,
        request_id=uuid.uuid4(),
        provider="local",
        model="m",
        prompt_tokens=tokens,
        total_tokens=tokens,
        outcome=LLMOutcome.SUCCESS,
        **fields,
    )


def add_rows(count: int, *, prefix: str) -> None:
    """`count` of every kind of row a panel shows: runs in every state, slots held and waited for, LLM calls
    by users with and without a limit of their own, breakers, schedules."""
    from django.contrib.auth import get_user_model

    for i in range(count):
        for status in RunStatus:
            make_run(status, agent_type=f"{prefix}-{i}", error="Boom" if status == RunStatus.FAILED else "")
        key = f"agent:{prefix}-{i}"
        hold_slot(make_run(RunStatus.RUNNING, agent_type=f"{prefix}-{i}"), key=key)
        make_waiting_run(key=key)
        hold_slot(make_run(RunStatus.RUNNING), key=f"flow:{prefix}-{i}", limit=5)
        user = get_user_model().objects.create_user(f"{prefix}-{i}")
        if i % 2:
            OwnerBudget.objects.create(user=user, monthly_token_limit=1000 * (i + 1))
        llm_call(user, 10 + i)
        ProviderBreaker.objects.create(provider=f"{prefix[:8]}-{i}", state=BreakerState.OPEN, opened_at=timezone.now())
        schedule(name=f"{prefix}-{i}", interval_seconds=600 + 60 * i)


# --- what the panels say -------------------------------------------------------------------------


def test_dashboard__superuser_sees_every_panel_with_its_figures(admin_client, admin_user):
    for status, count in [(RunStatus.COMPLETED, 3), (RunStatus.FAILED, 2), (RunStatus.RUNNING, 1)]:
        for _ in range(count):
            make_run(status, error="The <b>document</b> was empty" if status == RunStatus.FAILED else "")
    old = make_run(RunStatus.COMPLETED)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))  # not in the last 24 h
    AgentPolicy.objects.update_or_create(
        agent_type="wait", defaults={"override": True, "concurrency_limit": 1, "on_busy": OnBusyChoice.QUEUE}
    )
    holder = make_run(RunStatus.RUNNING, agent_type="wait")
    hold_slot(holder, key="agent:wait", limit=1)
    make_waiting_run(key="agent:wait")
    llm_call(admin_user, 1234, cost_usd=Decimal("0.5"))
    OwnerBudget.objects.create(user=admin_user, monthly_token_limit=10_000)
    ProviderBreaker.objects.create(provider="openai", state=BreakerState.OPEN, opened_at=timezone.now())
    schedule(name="Nightly check", cron="0 3 * * *")

    response, content = page(admin_client)

    dashboard = response.context["dashboard"]
    assert set(PANELS) <= set(dashboard)
    counts = {row["label"]: row["count"] for row in dashboard["runs"]["rows"]}
    # 3 completed, 2 failed, 1 + 1 (the holder) running, 1 waiting (pending); the run of 25 h ago is not counted.
    assert counts == {
        "Running": 2,
        "Pending": 1,
        "Failed": 2,
        "Budget exceeded": 0,
        "Cancelled": 0,
        "Completed": 3,
    }
    assert dashboard["runs"]["total"] == 8
    failed = Run.objects.filter(status=RunStatus.FAILED).first()
    assert reverse("admin:runs_run_change", args=[failed.pk]) in content
    assert "The &lt;b&gt;document&lt;/b&gt; was empty" in content  # escaped
    wait = next(row for row in dashboard["agents"]["rows"] if row["agent_type"] == "wait")
    assert (wait["running"], wait["waiting"], wait["limit"], wait["slots_used"]) == (2, 1, "1 at once", 1)
    assert reverse("admin:runs_run_change", args=[holder.pk]) in str(wait["holders"][0]["link"])
    assert wait["holders"][0]["worker"] == "host:1:2"
    assert "Nightly check" in content and "every day at 03:00" in content
    assert "openai" in content and "switched off" in content
    assert "1,234" in content and "10,000" in content
    assert reverse("admin:runs_run_start") in content and "Start a run" in content
    assert reverse("admin:flows_flow_add") in content and "New flow" in content
    # The app list is still there, beside the panels.
    assert [app["app_label"] for app in response.context["app_list"]][:4] == ["runs", "flows", "schedules", "digests"]


def test_dashboard__flow_runs_and_flow_limits_show_by_their_flow(admin_client):
    run = make_flow_run(slug="claim-intake")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error="No policy number")
    hold_slot(make_run(RunStatus.RUNNING), key="flow:claim-intake", limit=3)

    response, content = page(admin_client)

    failure = response.context["dashboard"]["failures"]["rows"][0]
    assert "flow <a href" in str(failure["what"]) and "claim-intake</a> v1" in str(failure["what"])
    assert reverse("admin:runs_run_change", args=[run.pk]) in content
    [group] = response.context["dashboard"]["agents"]["flows"]
    assert (group["name"], group["slots_used"], group["limit"]) == ("claim-intake", 1, "3 at once")


def test_dashboard__workers_panel_lists_running_clusters_only(admin_client, monkeypatch):
    started = timezone.now() - timedelta(hours=2)
    running = SimpleNamespace(host="worker-a", cluster_id="c1", status="Idle", workers=[11, 12], tob=started)
    stopping = SimpleNamespace(host="worker-b", cluster_id="c2", status="Stopping", workers=[21], tob=started)
    monkeypatch.setattr(Stat, "get_all", staticmethod(lambda: [stopping, running]))

    response, content = page(admin_client)

    panel = response.context["dashboard"]["workers"]
    assert panel["count"] == 2
    assert [c["host"] for c in panel["clusters"]] == ["worker-a"]
    assert "worker-b" not in content and "2 h 0 min" in content


def test_dashboard__empty_panels_say_so(admin_client):
    _, content = page(admin_client)

    assert "No runs in the last 24 hours." in content
    assert "Nothing is running or waiting right now." in content
    assert "No run has failed." in content
    assert "No schedule is active" in content
    assert "No worker is running" in content
    assert "No LLM calls this month yet." in content


def test_dashboard__status_links_open_the_filtered_run_list(admin_client):
    make_run(RunStatus.FAILED)
    response, _ = page(admin_client)
    failed = next(row for row in response.context["dashboard"]["runs"]["rows"] if row["label"] == "Failed")

    listed = admin_client.get(failed["url"])

    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 1


# --- who sees what -------------------------------------------------------------------------------


def test_dashboard__staff_of_no_team_sees_no_data_panel_whatever_their_permissions(client, django_user_model):
    make_run(RunStatus.FAILED, error="secret failure")
    schedule(name="Hidden schedule")
    user = staff_with(django_user_model)
    user.user_permissions.set(Permission.objects.all())
    client.force_login(user)

    response, content = page(client)

    assert set(response.context["dashboard"]) == {"actions", "workers"}
    assert response.context["dashboard"]["actions"] == []
    for hidden in (
        "secret failure",
        "Hidden schedule",
        "Runs in the last",
        "Start a run",
        "New flow",
        "LLM providers",
        "LLM use",
    ):
        assert hidden not in content


def test_dashboard__a_teams_viewer_sees_its_panels_but_not_the_services(client, django_user_model):
    make_run(RunStatus.FAILED, error="visible failure")
    client.force_login(staff_in(django_user_model, Role.VIEWER))

    response, content = page(client)

    # The LLM providers' breakers are the service's settings: superusers only.
    assert set(response.context["dashboard"]) == {
        "actions",
        "workers",
        "runs",
        "agents",
        "failures",
        "schedules",
        "budgets",
    }
    assert "visible failure" in content
    assert "Start a run" not in content  # viewing runs is not starting them
    assert "New flow" not in content
    assert reverse("admin:agentrunner_llmcall_changelist") in content  # not the per-user budgets page
    assert reverse("admin:agentrunner_ownerbudget_changelist") not in content


@pytest.mark.parametrize(
    ("role", "buttons"),
    [(Role.VIEWER, []), (Role.RUNNER, ["Start a run"]), (Role.EDITOR, ["Start a run", "New flow"])],
)
def test_dashboard__buttons_follow_the_role(client, django_user_model, role, buttons):
    client.force_login(staff_in(django_user_model, role))

    response, content = page(client)

    assert [button["label"] for button in response.context["dashboard"]["actions"]] == buttons
    if buttons:
        assert client.get(reverse("admin:runs_run_start")).status_code == 200


def test_dashboard__counts_only_the_users_teams(client, django_user_model, admin_client):
    other = team_named("other")
    user = staff_in(django_user_model, Role.RUNNER)
    # Ours: one failed run, a slot held, a schedule, 100 LLM tokens. Theirs: the same, and more.
    make_run(RunStatus.FAILED, error="our failure")
    hold_slot(make_run(RunStatus.RUNNING, agent_type="wait"), key="agent:wait", limit=5)
    schedule(name="Our schedule")
    llm_call(user, 100)
    for _ in range(3):
        make_run(RunStatus.FAILED, error="their failure", team=other)
    theirs = make_run(RunStatus.RUNNING, agent_type="wait", team=other)
    hold_slot(theirs, key="agent:wait", limit=5)
    make_flow_run(slug="their-flow", team=other)
    schedule(name="Their schedule", team=other)
    llm_call(user, 5000, team=other)
    client.force_login(user)

    response, content = page(client)

    dashboard = response.context["dashboard"]
    counts = {row["label"]: row["count"] for row in dashboard["runs"]["rows"]}
    assert (counts["Failed"], counts["Running"], dashboard["runs"]["total"]) == (1, 1, 2)
    assert [row["error"] for row in dashboard["failures"]["rows"]] == ["our failure"]
    [wait] = [row for row in dashboard["agents"]["rows"] if row["agent_type"] == "wait"]
    assert (wait["running"], wait["slots_used"]) == (1, 1)
    assert str(theirs.pk) not in content and "their-flow" not in content
    assert "Our schedule" in content and "Their schedule" not in content
    assert dashboard["budgets"]["tokens"] == "100"
    assert [row["name"] for row in dashboard["budgets"]["teams"]] == ["Default team"]
    assert "their failure" not in content and "5,000" not in content and "5,100" not in content
    # A superuser sees every team.
    everyone = admin_client.get(INDEX).context["dashboard"]
    assert everyone["runs"]["total"] == 7 and everyone["budgets"]["tokens"] == "5,100"


# --- queries -------------------------------------------------------------------------------------


def sql_of(client) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        page(client)
    return [q["sql"] for q in queries.captured_queries]


def test_dashboard__queries_do_not_grow_with_rows_and_nothing_is_written(admin_client):
    add_rows(2, prefix="small")
    page(admin_client)  # warm the per-process caches (content types) before counting
    small = sql_of(admin_client)
    add_rows(6, prefix="large")

    large = sql_of(admin_client)

    print(f"dashboard: {len(small)} queries small, {len(large)} large")  # noqa: T201 (shown with -s)
    assert len(large) == len(small), "\n".join(large)
    assert [sql for sql in small + large if sql.lstrip().upper().startswith(WRITES)] == []
    dashboard = admin_client.get(INDEX).context["dashboard"]
    assert dashboard["runs"]["total"] == Run.objects.count()
    assert len(dashboard["failures"]["rows"]) == 8  # the newest few, not all of them
    assert len(dashboard["schedules"]["rows"]) == 6
    waiting = sum(row["waiting"] for row in dashboard["agents"]["rows"])
    assert waiting == Run.objects.filter(steps__status=StepStatus.WAITING).count() == 8


def test_dashboard__queries_do_not_grow_with_rows_for_a_teams_staff(client, django_user_model):
    client.force_login(staff_in(django_user_model, Role.ADMIN))
    add_rows(2, prefix="small")
    page(client)
    small = sql_of(client)
    add_rows(6, prefix="large")

    large = sql_of(client)

    assert len(large) == len(small), "\n".join(large)
    assert set(client.get(INDEX).context["dashboard"]) == {"actions", *PANELS} - {"providers"}
