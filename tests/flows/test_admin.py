"""The flow admin (edit, versions, graph, Run now) and the flow parts of the run page."""

import copy
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agentrunner.models import Role
from flows import services
from flows.models import Flow, FlowVersion
from runs import services as run_services
from runs.models import AttemptStatus, Run, RunStatus, Step, StepAttempt, StepStatus
from tests.conftest import join

pytestmark = pytest.mark.django_db

FLOW_LIST = reverse("admin:flows_flow_changelist")
FLOW_ADD = reverse("admin:flows_flow_add")

# A small flow of `pass` agents (no concurrency limit, no worker needed): review, then approve or escalate.
DEFINITION = {
    "name": "Review",
    "start_task": "review",
    "tasks": [
        {"name": "review", "agent": "pass", "input": {"claim": "{{ input.claim }}"}},
        {"name": "approve", "agent": "pass", "input": {"result": {"route": "approved"}}},
        {"name": "escalate", "agent": "pass", "input": {}},
    ],
    "conditions": [
        {
            "name": "small",
            "source_task": "review",
            "when": "input.claim < 1000",
            "target_task_success": "approve",
            "target_task_failure": "escalate",
        }
    ],
}


def definition(**changes) -> dict:
    value = copy.deepcopy(DEFINITION)
    value.update(changes)
    return value


def make_flow(slug="review", **kwargs) -> Flow:
    return services.flow_create(slug=slug, name=kwargs.pop("name", "Review claims"), definition=definition(), **kwargs)


def change_url(flow) -> str:
    return reverse("admin:flows_flow_change", args=[flow.pk])


def run_url(flow) -> str:
    return reverse("admin:flows_flow_run", args=[flow.pk])


def form_data(flow_definition, **fields) -> dict:
    data = {"slug": "review", "name": "Review claims", "description": "", "enabled": "on"}
    data.update(fields)
    data["definition"] = flow_definition if isinstance(flow_definition, str) else json.dumps(flow_definition)
    return data


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def finish(run: Run, *names_and_statuses, seconds: float = 2.0) -> Run:
    """Make a flow run look finished: one step per (task, status) with one attempt each, via the ORM."""
    t0 = timezone.now() - timedelta(minutes=5)
    run.steps.all().delete()
    for sequence, (name, status) in enumerate(names_and_statuses):
        started = t0 + timedelta(seconds=sequence * seconds)
        step = Step.objects.create(
            run=run, sequence=sequence, name=name, agent_type="pass", status=status, attempts=1, max_attempts=1
        )
        StepAttempt.objects.create(
            step=step,
            number=1,
            status=AttemptStatus.SUCCESS if status == StepStatus.SUCCESS else AttemptStatus.FAILED,
            worker_id="w1",
            started_at=started,
            finished_at=started + timedelta(seconds=seconds * 0.8),
        )
    failed = names_and_statuses[-1][1] == StepStatus.FAILED
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED if failed else RunStatus.COMPLETED,
        started_at=t0,
        finished_at=t0 + timedelta(seconds=len(names_and_statuses) * seconds),
    )
    run.refresh_from_db()
    return run


def start(flow: Flow, run_input=None) -> Run:
    run, _ = run_services.flow_run_create(version=flow.current_version, input=run_input or {"claim": 10})
    return run


# --- list ------------------------------------------------------------------------------------------------------


def test_flow_list__shows_version_owner_and_runs(admin_client, admin_user):
    flow = make_flow(owner=admin_user)
    services.flow_update(flow=flow, definition=definition(name="Review, v2"))
    start(flow)
    start(flow)

    response = admin_client.get(FLOW_LIST)

    assert response.status_code == 200
    row = response.context["cl"].result_list[0]
    assert (row.version_number, row.run_count) == (2, 2)
    content = response.content.decode()
    assert '<td class="field-version_display">v2</td>' in content
    assert '<td class="field-runs_display">2</td>' in content
    assert f'<td class="field-owner nowrap">{admin_user.username}</td>' in content


# --- add and edit ----------------------------------------------------------------------------------------------


def test_add_page__starts_with_a_pretty_printed_example(admin_client):
    content = admin_client.get(FLOW_ADD).content.decode()

    assert "&quot;start_task&quot;: &quot;first&quot;" in content  # indented JSON, one key a line
    assert "Check the definition without saving" in content


def test_add_flow__creates_version_1_through_the_service(admin_client, admin_user):
    response = admin_client.post(FLOW_ADD, form_data(DEFINITION, description="Claims under 1000 pass"))

    flow = Flow.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:flows_flow_change", args=[flow.pk])
    assert (flow.slug, flow.name, flow.description, flow.enabled, flow.owner) == (
        "review",
        "Review claims",
        "Claims under 1000 pass",
        True,
        admin_user,
    )
    version = flow.versions.get()
    assert (version.number, version.definition, version.created_by) == (1, DEFINITION, admin_user)


def test_add_flow__taken_slug_is_a_form_error(admin_client):
    make_flow()

    response = admin_client.post(FLOW_ADD, form_data(DEFINITION))

    assert response.status_code == 200
    assert "A flow with the slug &#x27;review&#x27; already exists in this team." in response.content.decode()
    assert Flow.objects.count() == 1


def test_change_page__shows_the_current_definition_graph_and_versions(admin_client):
    flow = make_flow()

    content = admin_client.get(change_url(flow)).content.decode()

    assert "&quot;start_task&quot;: &quot;review&quot;" in content
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in content and 'data-task="escalate"' in content
    assert "First version." in content
    assert "v1, saved" in content


def test_edit_definition__creates_version_2_and_old_runs_keep_version_1(admin_client, admin_user):
    flow = make_flow()
    old_run = start(flow)
    changed = definition(name="Review (stricter)")
    changed["conditions"][0]["when"] = "input.claim < 500"

    response = admin_client.post(change_url(flow), form_data(changed, name="Review claims (strict)"), follow=True)

    assert response.status_code == 200
    flow.refresh_from_db()
    assert flow.name == "Review claims (strict)"
    assert [v.number for v in flow.versions.order_by("number")] == [1, 2]
    assert flow.current_version.definition == changed and flow.current_version.created_by == admin_user
    old_run.refresh_from_db()
    assert old_run.flow_version.number == 1 and old_run.flow_version.definition == DEFINITION
    assert any("it is now version 2" in m for m in messages_of(response))


def test_edit_without_changing_the_definition__keeps_the_version(admin_client):
    flow = make_flow()
    reformatted = json.dumps(DEFINITION, indent=4, sort_keys=True)  # same definition, other layout

    admin_client.post(change_url(flow), form_data(reformatted, enabled=""))

    flow.refresh_from_db()
    assert flow.enabled is False
    assert flow.versions.count() == 1


def test_edit__slug_cannot_change(admin_client):
    flow = make_flow()

    admin_client.post(change_url(flow), form_data(DEFINITION, slug="renamed"))

    flow.refresh_from_db()
    assert flow.slug == "review"


def test_invalid_definition__lists_every_error_at_its_path_and_saves_nothing(admin_client):
    flow = make_flow()
    bad = definition()
    bad["tasks"][1]["agent"] = "approver"
    bad["conditions"][0]["target_task_failure"] = "nowhere"

    response = admin_client.post(change_url(flow), form_data(bad))
    added = admin_client.post(FLOW_ADD, form_data(bad, slug="other"))

    assert response.status_code == 200 and added.status_code == 200
    content = response.content.decode()
    assert "The definition has 2 error(s)" in content and "Nothing was saved." in content
    assert (
        '<code style="color:#ba2121">tasks[1].agent</code> <span class="flow-problem-item">(task &#x27;approve&#x27;)'
        "</span> — unknown agent &#x27;approver&#x27;" in content
    )
    assert (
        '<code style="color:#ba2121">conditions[0].target_task_failure</code> <span class="flow-problem-item">'
        "(condition &#x27;small&#x27;)</span> — &#x27;nowhere&#x27; is not a task" in content
    )
    assert "&quot;approver&quot;" in content  # the editor keeps what was typed
    assert flow.versions.count() == 1
    assert Flow.objects.count() == 1


def test_invalid_json__says_where_the_mistake_is(admin_client):
    response = admin_client.post(FLOW_ADD, form_data('{\n  "name": "x",\n  "tasks": [}'))

    assert "This is not valid JSON: Expecting value at line 3, column 13." in response.content.decode()
    assert Flow.objects.count() == 0


def test_text_the_database_cannot_store__is_a_field_error_and_the_editor_shows_it_back(admin_client):
    unstorable = definition()
    unstorable["description"] = "a\ud800b"  # a lone surrogate: PostgreSQL's jsonb refuses it
    response = admin_client.post(FLOW_ADD, form_data(unstorable))
    assert response.status_code == 200
    content = response.content.decode()
    assert "lone surrogate" in content and "\\ud800" in content
    assert Flow.objects.count() == 0


def test_warnings__are_shown_but_do_not_block_saving(admin_client):
    flow = make_flow()
    with_orphan = definition()
    with_orphan["tasks"].append({"name": "orphan", "agent": "pass", "input": {}})

    response = admin_client.post(change_url(flow), form_data(with_orphan), follow=True)

    assert flow.versions.count() == 2
    assert any("Saved with 1 warning(s)" in m and "unreachable" in m for m in messages_of(response))
    content = admin_client.get(change_url(flow)).content.decode()
    assert "Warnings (the flow can be saved)" in content
    assert (
        '<code style="color:#8a6100">tasks[3]</code> <span class="flow-problem-item">(task &#x27;orphan&#x27;)'
        in content
    )
    assert "— task &#x27;orphan&#x27; is unreachable" in content


def test_version_history__shows_an_escaped_diff_against_the_version_before(admin_client, admin_user):
    flow = make_flow()
    changed = definition(description="<script>alert(1)</script>")
    services.flow_update(flow=flow, user=admin_user, definition=changed)

    content = admin_client.get(change_url(flow)).content.decode()

    assert "Compared with v1: 2 line(s) added, 1 removed" in content
    assert "+  &quot;description&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;</span>" in content
    assert "<script>alert(1)" not in content
    assert ">@ line 33</span>" in content  # where the change is, instead of a "@@ -33,4 +33,5 @@" hunk header
    assert f'<td style="padding:4px 8px;vertical-align:top">{admin_user.username}</td>' in content


def test_version_history__links_the_runs_of_each_version(admin_client):
    flow = make_flow()
    first = start(flow)
    services.flow_update(flow=flow, definition=definition(name="Review v2"))
    start(flow)
    runs_of_v1 = reverse("admin:runs_run_changelist") + f"?flow_version__id__exact={first.flow_version_id}"

    content = admin_client.get(change_url(flow)).content.decode()
    listed = admin_client.get(runs_of_v1)

    assert f'<a href="{runs_of_v1}">1</a>' in content
    assert [r.pk for r in listed.context["cl"].result_list] == [first.pk]


def test_delete__a_flow_without_runs_goes(admin_client):
    flow = make_flow()

    admin_client.post(reverse("admin:flows_flow_delete", args=[flow.pk]), {"post": "yes"})

    assert not Flow.objects.exists() and not FlowVersion.objects.exists()


def test_delete__a_flow_with_runs_is_refused(admin_client):
    flow = make_flow()
    start(flow)

    response = admin_client.post(reverse("admin:flows_flow_delete", args=[flow.pk]), {"post": "yes"})

    assert response.status_code == 200  # Django lists the runs that protect it
    assert Flow.objects.filter(pk=flow.pk).exists()


# --- Run now ---------------------------------------------------------------------------------------------------


def test_run_now__button_on_the_change_page(admin_client):
    flow = make_flow()

    assert f'href="{run_url(flow)}"' in admin_client.get(change_url(flow)).content.decode()


def test_run_now__page_names_the_input_fields_and_shows_the_graph(admin_client):
    flow = make_flow()

    response = admin_client.get(run_url(flow))

    content = response.content.decode()
    assert response.status_code == 200
    assert "The tasks read these input fields:" in content and "<code>claim</code>" in content
    assert "<svg" in content
    assert json.loads(response.context["form"]["input"].value()) == {"claim": ""}


def test_run_now__starts_a_run_of_the_current_version_and_shows_it(admin_client, admin_user):
    flow = make_flow()
    services.flow_update(flow=flow, definition=definition(name="Review v2"))
    user_id = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"

    response = admin_client.post(run_url(flow), {"input": '{"claim": 250}', "user_id": user_id})

    run = Run.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:runs_run_change", args=[run.pk])
    assert (run.flow_version.number, run.input, str(run.user_id), run.created_by) == (
        2,
        {"claim": 250},
        user_id,
        admin_user,
    )
    assert run.steps.get().name == "review"


def test_run_now__prefills_the_latest_runs_input(admin_client):
    flow = make_flow()
    start(flow, {"claim": 777})

    response = admin_client.get(run_url(flow))

    assert json.loads(response.context["form"]["input"].value()) == {"claim": 777}


def test_run_now__busy_flow_is_a_form_error(admin_client):
    flow = services.flow_create(
        slug="one-at-a-time", name="One at a time", definition=definition(concurrency={"limit": 1, "on_busy": "reject"})
    )
    start(flow)

    response = admin_client.post(run_url(flow), {"input": '{"claim": 1}'})

    assert response.status_code == 200
    assert "is already running at its concurrency limit (1)" in response.content.decode()
    assert Run.objects.count() == 1


def test_run_now__disabled_flow_is_a_form_error(admin_client):
    flow = make_flow(enabled=False)

    response = admin_client.post(run_url(flow), {"input": "{}"})

    assert "is disabled; enable it to start runs." in response.content.decode()
    assert not Run.objects.exists()


def test_run_now__input_the_flow_cannot_use_is_an_error_at_the_input(admin_client):
    flow = make_flow()

    missing = admin_client.post(run_url(flow), {"input": '{"other": 1}'})
    not_an_object = admin_client.post(run_url(flow), {"input": "[1, 2]"})

    assert "Cannot resolve {{ input.claim }}" in missing.content.decode()
    assert "The input must be a JSON object" in not_an_object.content.decode()
    assert not Run.objects.exists()


def test_run_now__needs_the_runner_role_in_the_flows_team(client, django_user_model):
    flow = make_flow()
    viewer = django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True)
    join(viewer, Role.VIEWER)
    client.force_login(viewer)

    assert client.get(change_url(flow)).status_code == 200
    assert f'href="{run_url(flow)}"' not in client.get(change_url(flow)).content.decode()
    assert client.post(run_url(flow), {"input": "{}"}).status_code == 403
    assert not Run.objects.exists()


# --- the run page of a flow run --------------------------------------------------------------------------------


def run_page(client, run):
    return client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()


def test_run_page__names_the_flow_version_and_links_the_flow(admin_client):
    flow = make_flow()
    run = finish(start(flow), ("review", StepStatus.SUCCESS), ("approve", StepStatus.SUCCESS))

    content = run_page(admin_client, run)

    assert f'<a href="{change_url(flow)}">review</a> v1 (Review claims)' in content


def test_run_page__graph_highlights_the_path_the_run_took(admin_client):
    run = finish(start(make_flow()), ("review", StepStatus.SUCCESS), ("escalate", StepStatus.FAILED))

    content = run_page(admin_client, run)

    assert 'data-task="review" data-status="success"' in content
    assert 'data-task="escalate" data-status="failure"' in content
    assert 'data-task="approve"><title>Task approve, runs the agent pass — not run' in content
    assert content.count('data-taken="true"') == 3  # start → review → escalate → end


def test_run_page__graph_is_the_runs_version_not_the_current_one(admin_client):
    flow = make_flow()
    run = finish(start(flow), ("review", StepStatus.SUCCESS), ("approve", StepStatus.SUCCESS))
    renamed = definition()
    renamed["tasks"][2]["name"] = "handler"
    renamed["conditions"][0]["target_task_failure"] = "handler"
    services.flow_update(flow=flow, definition=renamed)

    content = run_page(admin_client, run)

    assert 'data-task="escalate"' in content and 'data-task="handler"' not in content
    assert "the flow is now at v2, this run keeps the version it started with" in content


def test_run_page__timeline_is_a_time_axis_with_labelled_bars(admin_client):
    run = finish(start(make_flow()), ("review", StepStatus.SUCCESS), ("approve", StepStatus.SUCCESS), seconds=5)

    content = run_page(admin_client, run)

    assert "Time since the first attempt started" in content
    scale = "<span>0 s</span><span>2.2 s</span><span>4.5 s</span><span>6.8 s</span><span>9.0 s</span>"
    assert scale in content  # the last attempt ends at 9 s
    assert content.count("position:absolute") == 2
    assert 'title="review, attempt 1: from 0 ms to 4.0 s' in content
    assert 'title="approve, attempt 1: from 5.0 s to 9.0 s' in content
    assert "left:55.56%;width:44.44%" in content  # 5 s to 9 s of 9 s


def test_run_page__queries_do_not_grow_with_the_number_of_steps(admin_client, django_assert_max_num_queries):
    looping = definition()
    looping["conditions"][0]["target_task_failure"] = "review"
    flow = services.flow_create(slug="loop", name="Loop", definition=looping)
    short = finish(start(flow), ("review", StepStatus.SUCCESS), ("approve", StepStatus.SUCCESS))
    long = finish(start(flow), *[("review", StepStatus.SUCCESS)] * 8, ("approve", StepStatus.SUCCESS))
    with CaptureQueriesContext(connection) as few:
        run_page(admin_client, short)

    with django_assert_max_num_queries(len(few.captured_queries)):
        content = run_page(admin_client, long)

    assert "×8" in content  # review ran eight times


def test_run_list__queries_do_not_grow_with_the_number_of_flow_runs(admin_client, django_assert_max_num_queries):
    flows = [make_flow(slug=f"flow-{i}") for i in range(4)]
    start(flows[0])
    with CaptureQueriesContext(connection) as few:
        admin_client.get(reverse("admin:runs_run_changelist"))
    for flow in flows:
        start(flow)
        start(flow)

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(reverse("admin:runs_run_changelist"))

    assert response.context["cl"].result_count == 9


def test_run_list__names_the_flow_of_a_flow_run(admin_client):
    flow = make_flow()
    start(flow)

    response = admin_client.get(reverse("admin:runs_run_changelist"), {"q": "revi"})

    assert response.context["cl"].result_count == 1
    assert f'flow <a href="{change_url(flow)}">review</a> v1</span>' in response.content.decode()


def test_rerun_button__starts_the_same_flow_version_again(admin_client, admin_user):
    flow = make_flow()
    run = finish(start(flow, {"claim": 5}), ("review", StepStatus.SUCCESS), ("approve", StepStatus.SUCCESS))
    services.flow_update(flow=flow, definition=definition(name="Review v2"))

    admin_client.post(reverse("admin:runs_run_rerun", args=[run.pk]))

    new = Run.objects.exclude(pk=run.pk).get()
    assert (new.flow_version_id, new.input, new.created_by) == (run.flow_version_id, {"claim": 5}, admin_user)


def test_run_page__resume_button_resumes_a_failed_flow_run(admin_client):
    from runs import services as run_services
    from runs.models import Run, RunStatus, Step
    from tests.flows.factories import chain
    from tests.flows.factories import flow as make_flow

    f = make_flow(slug="resumable", definition=chain(("a", "pass", {})))
    run, _ = run_services.flow_run_create(version=f.current_version, input={})
    Step.objects.filter(run=run).update(status="FAILED", error="boom")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error="boom")
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "Resume" in page
    response = admin_client.post(f"/admin/runs/run/{run.pk}/resume/")
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.steps.count() == 2


def test_rerun_of_a_flow_run_uses_its_pinned_version_and_links_back(admin_client):
    from runs import services as run_services
    from runs.models import Run
    from tests.flows.factories import chain
    from tests.flows.factories import flow as make_flow

    f = make_flow(slug="again", definition=chain(("a", "pass", {})))
    run, _ = run_services.flow_run_create(version=f.current_version, input={"k": 1})
    admin_client.post(f"/admin/runs/run/{run.pk}/rerun/")
    new = Run.objects.exclude(pk=run.pk).get()
    assert (new.flow_version_id, new.input, new.rerun_of_id) == (run.flow_version_id, {"k": 1}, run.pk)
