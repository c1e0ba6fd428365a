"""The failed-run queue: FAILED runs needing attention, retried (agent and flow runs) or dismissed, every decision
kept, in the API and the admin, within the acting team."""

from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agentrunner.models import Role
from runs import selectors, services
from runs.exceptions import RunAlreadyDecided
from runs.models import DecisionKind, Run, RunDecision, RunStatus, Step, StepStatus
from tests.conftest import client_for, join, staff_member, team_named
from tests.flows.factories import chain, flow
from tests.runs.factories import make_run

pytestmark = pytest.mark.django_db

QUEUE = "/api/v1/runs?status=FAILED&unresolved=1"
LIST = reverse("admin:runs_run_changelist")


def failed_agent_run(*, team=None, code="worker_lost", **fields):
    return make_run(RunStatus.FAILED, agent_type="pass", input={"x": 1}, error="boom", error_code=code, team=team,
                    **fields)  # fmt: skip


def failed_flow_run(slug="resumable"):
    f = flow(slug=slug, definition=chain(("a", "pass", {})))
    run, _ = services.flow_run_create(version=f.current_version, input={"x": 1})
    fail_again(run)
    return run


def fail_again(run, *, code="timeout"):
    """The run's (current) last step and the run itself fail now, as the engine ends a failed run."""
    later = timezone.now() + timedelta(seconds=1)
    Step.objects.filter(run=run).update(status=StepStatus.FAILED, error="boom")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error="boom", error_code=code, finished_at=later)


def queue_ids(api) -> list[str]:
    response = api.get(QUEUE)
    assert response.status_code == 200, response.content
    return [r["id"] for r in response.json()["results"]]


# --- the queue -----------------------------------------------------------------------------------


def test_queue__lists_failed_runs_nobody_decided_with_their_error_class(api):
    failed = failed_agent_run()
    make_run(RunStatus.COMPLETED, agent_type="pass")
    make_run(RunStatus.CANCELLED, agent_type="pass")
    dismissed = failed_agent_run(code="invalid_input")
    services.run_dismiss(run_id=dismissed.pk, reason="known bad input")

    body = api.get(QUEUE).json()

    assert [r["id"] for r in body["results"]] == [str(failed.pk)]
    row = body["results"][0]
    assert (row["error_code"], row["error_class"], row["needs_attention"], row["resolution"]) == (
        "worker_lost",
        "worker",
        True,
        None,
    )
    others = {r["id"] for r in api.get("/api/v1/runs?unresolved=0").json()["results"]}
    assert str(dismissed.pk) in others and str(failed.pk) not in others and len(others) == 3


@pytest.mark.parametrize(
    ("code", "expected"),
    [("worker_lost", "worker"), ("timeout", "timeout"), ("invalid_input", "input"), ("llm_unavailable", "llm"),
     ("max_steps", "flow"), ("non_retryable_error", "agent"), ("something_new", "other"), ("", "")],
)  # fmt: skip
def test_error_class__is_a_coarse_class_of_the_code(code, expected):
    assert selectors.error_class(code) == expected


def test_queue__is_the_acting_teams_only(api, outsider):
    mine = failed_agent_run()
    theirs = failed_agent_run(team=team_named("other"))

    assert queue_ids(api) == [str(mine.pk)]
    assert queue_ids(client_for(outsider)) == [str(theirs.pk)]


def test_list_with_decisions__queries_do_not_grow_with_runs(api, owner):
    def decided_runs(n):
        for _ in range(n):
            services.run_dismiss(run_id=failed_agent_run().pk, reason="seen", decided_by=owner)

    decided_runs(1)
    with CaptureQueriesContext(connection) as few:
        api.get("/api/v1/runs?limit=100")
    decided_runs(5)
    with CaptureQueriesContext(connection) as many:
        body = api.get("/api/v1/runs?limit=100").json()

    assert all(r["resolution"]["decided_by"] == "owner" for r in body["results"])
    assert len(many) == len(few)


def decision_reads(api, run) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        body = api.get(f"/api/v1/runs/{run.pk}").json()
    return sum("runs_rundecision" in q["sql"] for q in captured), body


def test_one_run__decisions_read_once_and_only_for_a_run_that_can_have_one(api, owner):
    dismissed = failed_agent_run()
    services.run_dismiss(run_id=dismissed.pk, reason="seen", decided_by=owner)
    completed = make_run(RunStatus.COMPLETED, agent_type="pass", input={})
    resumed = failed_flow_run()
    services.run_retry(run_id=resumed.pk, decided_by=owner)

    reads, body = decision_reads(api, dismissed)
    assert reads == 1 and body["resolution"]["reason"] == "seen" and body["needs_attention"] is False
    reads, body = decision_reads(api, completed)  # an agent run that did not fail: nobody decided anything
    assert reads == 0 and body["resolution"] is None and body["needs_attention"] is False
    reads, body = decision_reads(api, resumed)  # a flow run resumed by a retry: no longer FAILED, still decided
    assert reads == 1 and body["status"] != RunStatus.FAILED and body["resolution"]["kind"] == "retry"


# --- retry ---------------------------------------------------------------------------------------


def test_retry_agent_run__starts_a_new_linked_run_and_keeps_the_decision(api, owner):
    failed = failed_agent_run()

    response = api.post(f"/api/v1/runs/{failed.pk}/retry")

    assert response.status_code == 202, response.content
    new = response.json()
    assert new["id"] != str(failed.pk) and new["rerun_of"] == str(failed.pk)
    assert (new["agent_type"], new["input"]) == ("pass", {"x": 1})
    decision = RunDecision.objects.get(run=failed)
    assert (decision.kind, decision.decided_by, str(decision.new_run_id)) == (DecisionKind.RETRY, owner, new["id"])
    old = api.get(f"/api/v1/runs/{failed.pk}").json()
    assert old["status"] == RunStatus.FAILED and old["error_code"] == "worker_lost"  # the record stays as it was
    assert old["needs_attention"] is False
    assert old["resolution"]["kind"] == "retry" and old["resolution"]["new_run"] == new["id"]
    assert queue_ids(api) == []


def test_retry_agent_run__new_run_failing_is_the_one_needing_attention(api):
    failed = failed_agent_run()
    new_id = api.post(f"/api/v1/runs/{failed.pk}/retry").json()["id"]
    fail_again(Run.objects.get(pk=new_id))

    assert queue_ids(api) == [new_id]
    again = api.post(f"/api/v1/runs/{failed.pk}/retry")  # the old failure was answered already
    assert again.status_code == 409 and again.json()["code"] == "already_decided"
    assert api.post(f"/api/v1/runs/{new_id}/retry").status_code == 202


def test_retry_flow_run__resumes_in_place_and_failing_again_needs_attention_again(api):
    run = failed_flow_run()

    response = api.post(f"/api/v1/runs/{run.pk}/retry")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"] == str(run.pk) and body["status"] == RunStatus.RUNNING
    assert body["resolution"]["kind"] == "retry" and body["resolution"]["new_run"] is None
    assert run.steps.count() == 2 and queue_ids(api) == []

    fail_again(run)
    assert queue_ids(api) == [str(run.pk)]
    assert api.get(f"/api/v1/runs/{run.pk}").json()["resolution"] is None
    assert api.post(f"/api/v1/runs/{run.pk}/retry").status_code == 202
    assert RunDecision.objects.filter(run=run).count() == 2  # every decision is kept


def test_retry__a_run_that_did_not_fail_is_409_and_nothing_is_decided(api):
    run = make_run(RunStatus.COMPLETED, agent_type="pass")
    response = api.post(f"/api/v1/runs/{run.pk}/retry")
    assert response.status_code == 409 and response.json()["code"] == "not_resumable"
    assert not RunDecision.objects.exists()


def test_retry__the_agent_is_gone__400_and_still_needs_attention(api):
    failed = failed_agent_run()
    Run.objects.filter(pk=failed.pk).update(agent_type="uninstalled")
    assert api.post(f"/api/v1/runs/{failed.pk}/retry").status_code == 400
    assert queue_ids(api) == [str(failed.pk)] and Run.objects.count() == 1


# --- dismiss -------------------------------------------------------------------------------------


def test_dismiss__keeps_who_when_and_why_and_leaves_the_run_as_it_was(api, owner):
    failed = failed_agent_run()

    response = api.post(f"/api/v1/runs/{failed.pk}/dismiss", {"reason": " API down on 3 Dec "}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == RunStatus.FAILED and body["needs_attention"] is False
    resolution = body["resolution"]
    assert (resolution["kind"], resolution["reason"], resolution["decided_by"], resolution["error_code"]) == (
        "dismiss",
        "API down on 3 Dec",
        "owner",
        "worker_lost",
    )
    assert queue_ids(api) == [] and Run.objects.count() == 1


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
def test_dismiss__without_a_reason_is_400(api, body):
    failed = failed_agent_run()
    response = api.post(f"/api/v1/runs/{failed.pk}/dismiss", body, format="json")
    assert response.status_code == 400 and "reason" in response.json()["errors"]
    assert not RunDecision.objects.exists()


def test_dismiss__twice_or_after_a_retry_is_409(api):
    failed = failed_agent_run()
    assert api.post(f"/api/v1/runs/{failed.pk}/dismiss", {"reason": "seen"}, format="json").status_code == 200
    second = api.post(f"/api/v1/runs/{failed.pk}/dismiss", {"reason": "again"}, format="json")
    assert second.status_code == 409 and second.json()["code"] == "already_decided"
    assert api.post(f"/api/v1/runs/{failed.pk}/retry").json()["code"] == "already_decided"
    running = make_run(RunStatus.RUNNING, agent_type="pass")
    answer = api.post(f"/api/v1/runs/{running.pk}/dismiss", {"reason": "x"}, format="json")
    assert answer.status_code == 409 and answer.json()["code"] == "not_failed"
    assert RunDecision.objects.count() == 1


def test_one_decision_per_failure__the_unique_index_refuses_a_second(owner):
    failed = failed_agent_run()
    RunDecision.objects.create(run=failed, kind=DecisionKind.DISMISS, reason="first", failed_at=failed.finished_at)
    with pytest.raises(RunAlreadyDecided):
        services.run_retry(run_id=failed.pk, decided_by=owner)
    assert Run.objects.count() == 1


# --- team rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["retry", "dismiss"])
def test_decisions__need_the_runner_role_and_another_teams_run_is_404(django_user_model, outsider, op):
    viewer = django_user_model.objects.create_user(username="viewer")
    join(viewer, Role.VIEWER)
    failed = failed_agent_run()
    url = f"/api/v1/runs/{failed.pk}/{op}"

    assert client_for(viewer).post(url, {"reason": "x"}, format="json").status_code == 403
    assert client_for(outsider).post(url, {"reason": "x"}, format="json").status_code == 404
    assert not RunDecision.objects.exists() and Run.objects.count() == 1


# --- admin ---------------------------------------------------------------------------------------


@pytest.fixture
def runner_client(client, django_user_model):
    """A runner of the default team who only views team "other"."""
    user = staff_member(django_user_model, "ops", (Role.RUNNER, None), (Role.VIEWER, team_named("other")))
    client.force_login(user)
    return client


def run_action(client, action, runs, **extra):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(r.pk) for r in runs], **extra}
    return client.post(LIST, data)


def test_admin_list__needs_attention_filter_and_notes(runner_client):
    needs = failed_agent_run()
    dealt = failed_agent_run(code="timeout")
    services.run_dismiss(run_id=dealt.pk, reason="seen")
    make_run(RunStatus.COMPLETED, agent_type="pass")

    response = runner_client.get(LIST + "?attention=needs")

    assert [r.pk for r in response.context["cl"].result_list] == [needs.pk]
    page = response.content.decode()
    assert "needs attention" in page and "<code>worker_lost</code> (worker)" in page
    decided = runner_client.get(LIST + "?attention=decided").context["cl"].result_list
    assert [r.pk for r in decided] == [dealt.pk]
    assert ">dismissed</span>" in runner_client.get(LIST).content.decode()


def test_admin_retry_action__retries_failed_runs_of_writable_teams_only(runner_client):
    mine = [failed_agent_run(), failed_flow_run()]
    done = make_run(RunStatus.COMPLETED, agent_type="pass")
    read_only = failed_agent_run(team=team_named("other"))

    run_action(runner_client, "retry_failed_runs", [*mine, done, read_only])

    assert set(RunDecision.objects.values_list("run_id", flat=True)) == {r.pk for r in mine}
    assert Run.objects.filter(rerun_of=mine[0]).exists()
    assert Run.objects.get(pk=mine[1].pk).status == RunStatus.RUNNING
    assert selectors.runs_needing_attention(Run.objects.all()).get() == read_only


def test_admin_dismiss_action__asks_for_the_reason_then_dismisses(runner_client):
    runs = [failed_agent_run(), failed_agent_run()]
    read_only = failed_agent_run(team=team_named("other"))

    asked = run_action(runner_client, "dismiss_failed_runs", [*runs, read_only])
    assert asked.status_code == 200 and "Why dismiss" in asked.content.decode()
    assert "1 selected run is left out" in asked.content.decode()
    assert not RunDecision.objects.exists()
    empty = run_action(runner_client, "dismiss_failed_runs", runs, post="yes", reason="")
    assert empty.status_code == 200 and not RunDecision.objects.exists()

    run_action(runner_client, "dismiss_failed_runs", runs, post="yes", reason="Known outage")

    assert sorted(RunDecision.objects.values_list("run_id", "reason")) == sorted((r.pk, "Known outage") for r in runs)
    assert not RunDecision.objects.filter(run=read_only).exists()


def test_admin_run_page__buttons_and_decision_history(runner_client):
    failed = failed_agent_run()
    change = reverse("admin:runs_run_change", args=[failed.pk])
    page = runner_client.get(change).content.decode()
    assert "Retry" in page and "Dismiss…" in page and "Nobody has retried or dismissed" in page

    dismiss = reverse("admin:runs_run_dismiss", args=[failed.pk])
    assert "Why dismiss" in runner_client.get(dismiss).content.decode()
    assert runner_client.post(dismiss, {"reason": "Entered <b>by hand</b>"}).status_code == 302

    page = runner_client.get(change).content.decode()
    assert "Dismissed" in page and "Entered &lt;b&gt;by hand&lt;/b&gt;" in page and "Dismiss…" not in page


def test_admin_run_page__retry_button_of_an_agent_run(runner_client):
    failed = failed_agent_run()
    response = runner_client.post(reverse("admin:runs_run_retry", args=[failed.pk]))
    assert response.status_code == 302
    new = Run.objects.get(rerun_of=failed)
    assert (
        "Started the new run" in runner_client.get(reverse("admin:runs_run_change", args=[failed.pk])).content.decode()
    )
    assert RunDecision.objects.get().new_run == new


def test_admin__another_teams_run_is_404_and_a_viewer_may_not_decide(runner_client, django_user_model):
    hidden = failed_agent_run(team=team_named("hidden"))
    assert runner_client.get(reverse("admin:runs_run_dismiss", args=[hidden.pk])).status_code == 404
    assert runner_client.post(reverse("admin:runs_run_retry", args=[hidden.pk])).status_code == 404
    viewed = failed_agent_run(team=team_named("other"))
    assert runner_client.post(reverse("admin:runs_run_dismiss", args=[viewed.pk]), {"reason": "x"}).status_code == 403
    assert runner_client.post(reverse("admin:runs_run_retry", args=[viewed.pk])).status_code == 403
    assert not RunDecision.objects.exists()


def test_engine_failure__a_run_the_engine_failed_is_queued_and_its_retry_failing_too_replaces_it(api):
    from runs import engine

    def start_and_fail(run):
        Step.objects.filter(run=run).update(max_attempts=1)  # fail at the first attempt, no retry wait
        engine.step_execute(step_id=run.steps.get().pk)
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED, run.error
        return run

    first, _ = services.run_create(agent_type="test-flaky", input={"succeed_on": 99})
    start_and_fail(first)
    assert queue_ids(api) == [str(first.pk)]
    assert api.get(QUEUE).json()["results"][0]["error_class"] == "agent"

    new_id = api.post(f"/api/v1/runs/{first.pk}/retry").json()["id"]
    start_and_fail(Run.objects.get(pk=new_id))

    assert queue_ids(api) == [new_id]
