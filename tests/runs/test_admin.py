"""The admin: run list and page (read-only, cancel, re-run), agent types and concurrency slots."""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agentrunner.adminkit import human_duration
from agentrunner.agents import ConcurrencyPolicy, OnBusy
from agentrunner.models import Role
from runs import selectors, services
from runs.models import (
    AgentPolicy,
    AttemptStatus,
    Run,
    RunStatus,
    StepAttempt,
    StepStatus,
)
from tests.conftest import join
from tests.runs.factories import make_run, make_waiting_run

pytestmark = pytest.mark.django_db

RUN_LIST = reverse("admin:runs_run_changelist")
AGENT_LIST = reverse("admin:runs_agentpolicy_changelist")


def change_url(run):
    return reverse("admin:runs_run_change", args=[run.pk])


def run_action(client, action, *runs):
    """Tick `runs` in the run list and apply `action`; follow the redirect back to the list."""
    return client.post(RUN_LIST, {"action": action, "_selected_action": [r.pk for r in runs]}, follow=True)


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


# --- run list ----------------------------------------------------------------------------------


def test_run_list__shows_every_status_as_a_badge(admin_client):
    for status in RunStatus:
        make_run(status)
    make_waiting_run(holder_run=Run.objects.get(status=RunStatus.RUNNING))

    response = admin_client.get(RUN_LIST)

    assert response.status_code == 200
    content = response.content.decode()
    labels = ["Pending", "Running", "Completed", "Failed", "Cancelled", "Budget exceeded", "Waiting for slot"]
    for label in labels:
        assert f">{label}</span>" in content
    assert "5.0\xa0s" in content  # duration of a finished run (a number and its unit never part)


def test_run_list__queries_do_not_grow_with_the_number_of_runs(admin_client, django_assert_max_num_queries):
    User = get_user_model()

    def add_runs(prefix):
        for i, status in enumerate(RunStatus):
            user = User.objects.create_user(username=f"{prefix}-{i}")
            make_run(status, created_by=user, user_id=uuid.uuid4())

    add_runs("first")
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(RUN_LIST).status_code == 200
    for n in range(5):
        add_runs(f"more-{n}")

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(RUN_LIST)

    assert response.context["cl"].result_count == 6 * len(RunStatus)


def test_run_list__newest_first(admin_client):
    old = make_run(RunStatus.COMPLETED)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    new = make_run(RunStatus.COMPLETED)

    response = admin_client.get(RUN_LIST)

    assert [r.pk for r in response.context["cl"].result_list] == [new.pk, old.pk]


def test_run_list__search_by_run_id_finds_that_run(admin_client):
    wanted, _other = make_run(), make_run()

    response = admin_client.get(RUN_LIST, {"q": str(wanted.pk)})

    assert [r.pk for r in response.context["cl"].result_list] == [wanted.pk]


def test_run_list__search_by_short_id_and_user_id(admin_client):
    user_id = uuid.uuid4()
    wanted, _other = make_run(user_id=user_id), make_run()

    by_short = admin_client.get(RUN_LIST, {"q": str(wanted.pk)[:8]})
    by_user = admin_client.get(RUN_LIST, {"q": str(user_id)})

    assert [r.pk for r in by_short.context["cl"].result_list] == [wanted.pk]
    assert [r.pk for r in by_user.context["cl"].result_list] == [wanted.pk]


def test_run_list__junk_search_finds_nothing_without_an_error(admin_client):
    make_run()

    response = admin_client.get(RUN_LIST, {"q": "not-a-uuid <script>'%"})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


def test_run_list__search_by_agent_name(admin_client):
    wanted, _other = make_run(agent_type="pass"), make_run(agent_type="wait")

    response = admin_client.get(RUN_LIST, {"q": "pas"})

    assert [r.pk for r in response.context["cl"].result_list] == [wanted.pk]


def test_run_list__status_filter_waiting(admin_client):
    holder = make_run(RunStatus.RUNNING)
    waiting = make_waiting_run(holder_run=holder)

    response = admin_client.get(RUN_LIST, {"status": "WAITING"})

    assert [r.pk for r in response.context["cl"].result_list] == [waiting.pk]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0.05, "50 ms"), (1.23, "1.2 s"), (184, "3 min 4 s"), (7500, "2 h 5 min")],
)
def test_human_duration(seconds, text):
    assert human_duration(None if seconds is None else timedelta(seconds=seconds)) == text


# --- run page ----------------------------------------------------------------------------------


def test_run_page__shows_input_and_result_as_escaped_trees(admin_client):
    run = make_run(
        RunStatus.COMPLETED,
        agent_type="pass",
        input={"note": {"text": "<b>bold</b> café"}},  # one key per level: PostgreSQL reorders keys
        result={"answer": 42},
    )

    response = admin_client.get(change_url(run))

    content = response.content.decode()
    assert response.status_code == 200
    note = '<span class="jt-key">note</span> <span class="jt-meta">1 field</span></summary>'
    assert note in content
    assert '<span class="jt-key">text</span> <span class="jt-str">&lt;b&gt;bold&lt;/b&gt; café</span>' in content
    assert '<span class="jt-key">answer</span> <span class="jt-num">42</span>' in content
    assert "<b>bold</b>" not in content


def test_run_page__is_read_only(admin_client):
    run = make_run(RunStatus.COMPLETED)

    response = admin_client.get(change_url(run))

    assert 'name="_save"' not in response.content.decode()
    assert admin_client.get(reverse("admin:runs_run_add")).status_code == 403


def test_run_page__timeline_has_one_row_per_attempt(admin_client):
    run = make_run(RunStatus.FAILED, error="Boom again", error_code="retryable_error")
    step = run.steps.get()
    first = step.attempt_set.get()
    first.error, first.error_code = "Boom", "retryable_error"
    first.finished_at = first.started_at + timedelta(seconds=1)
    first.worker_id = "worker-a"
    first.save()
    StepAttempt.objects.create(
        step=step,
        number=2,
        status=AttemptStatus.FAILED,
        worker_id="worker-b",
        started_at=first.finished_at + timedelta(seconds=1),
        finished_at=run.finished_at,
        error="Boom again",
    )

    response = admin_client.get(change_url(run))

    content = response.content.decode()
    assert "attempt 1 of at most 2" in content and "attempt 2 of at most 2" in content
    assert "worker-a" in content and "worker-b" in content
    assert content.count("position:absolute") == 2  # one bar per attempt
    assert "Boom again" in content


def test_run_page__waiting_run_says_who_holds_the_slot(admin_client):
    holder = make_run(RunStatus.RUNNING)
    waiting = make_waiting_run(holder_run=holder)

    content = admin_client.get(change_url(waiting)).content.decode()

    assert "Why it waits" in content
    assert "Place in the queue: <strong>1</strong>" in content
    assert "Slots in use: <strong>1</strong> of <strong>1</strong>" in content
    assert f'href="{change_url(holder)}"' in content


def test_run_page__timeline_and_waits_for_escape_model_data(admin_client):
    holder = make_run(RunStatus.FAILED, agent_type="<i>agent</i>")
    holder.steps.update(name="<i>step</i>")
    StepAttempt.objects.filter(step__run=holder).update(error="<b>boom</b>", error_code="<u>code</u>")
    waiting = make_waiting_run(holder_run=holder, key="agent:<b>key</b>")

    timeline = admin_client.get(change_url(holder)).content.decode()
    waits_for = admin_client.get(change_url(waiting)).content.decode()

    assert "&lt;i&gt;step&lt;/i&gt;" in timeline and "<i>step</i>" not in timeline
    assert "&lt;b&gt;boom&lt;/b&gt;" in timeline and "<b>boom</b>" not in timeline
    assert "<code>&lt;u&gt;code&lt;/u&gt;</code>" in timeline
    assert "<code>agent:&lt;b&gt;key&lt;/b&gt;</code>" in waits_for and "<b>key</b>" not in waits_for
    assert "&lt;i&gt;agent&lt;/i&gt;" in waits_for and "<i>agent</i>" not in waits_for


def test_run_page__finished_run_has_rerun_but_no_cancel_button(admin_client):
    content = admin_client.get(change_url(make_run(RunStatus.COMPLETED))).content.decode()

    assert "Re-run</button>" in content
    assert "Cancel run</button>" not in content
    assert "Why it waits" not in content


# --- cancel and re-run -------------------------------------------------------------------------


def start_run(**kwargs):
    run, _ = services.run_create(agent_type="wait", input={"seconds": 1}, **kwargs)
    return run


def test_cancel_action__cancels_a_pending_run_and_skips_finished_ones(admin_client):
    pending, done = start_run(), make_run(RunStatus.COMPLETED)

    response = run_action(admin_client, "cancel_runs", pending, done)

    pending.refresh_from_db()
    assert pending.status == RunStatus.CANCELLED
    assert Run.objects.get(pk=done.pk).status == RunStatus.COMPLETED
    assert messages_of(response) == ["1 run(s) cancelled; 1 skipped because they had already finished."]


def test_rerun_action__starts_a_new_run_linked_to_the_old_one(admin_client, admin_user):
    old = make_run(RunStatus.FAILED, user_id=uuid.uuid4())

    response = run_action(admin_client, "rerun_runs", old)

    new = Run.objects.get(rerun_of=old)
    assert (new.agent_type, new.input, new.user_id) == ("wait", old.input, old.user_id)
    assert new.created_by == admin_user
    assert str(new.pk)[:8] in messages_of(response)[0]


def test_rerun_action__busy_agent_gives_a_message_not_an_error(admin_client):
    services.agent_policy_update(agent_type="wait", limit=1, on_busy="reject")
    old = start_run()  # holds the only slot

    response = run_action(admin_client, "rerun_runs", old)

    assert response.status_code == 200
    assert not Run.objects.filter(rerun_of=old).exists()
    assert "already running at its concurrency limit" in messages_of(response)[0]


def test_rerun_action__invalid_input_gives_a_message(admin_client):
    old = make_run(RunStatus.FAILED, input={"seconds": "soon"})

    response = run_action(admin_client, "rerun_runs", old)

    assert "no longer matches" in messages_of(response)[0]


def test_rerun_action__unknown_agent_gives_a_message(admin_client):
    old = make_run(RunStatus.FAILED, agent_type="retired-agent")

    response = run_action(admin_client, "rerun_runs", old)

    assert "no longer installed" in messages_of(response)[0]


def test_cancel_button__cancels_and_returns_to_the_run(admin_client):
    run = start_run()

    response = admin_client.post(reverse("admin:runs_run_cancel", args=[run.pk]))

    assert response.status_code == 302 and response.url == change_url(run)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_rerun_button__starts_a_new_run(admin_client):
    old = make_run(RunStatus.COMPLETED)

    response = admin_client.post(reverse("admin:runs_run_rerun", args=[old.pk]))

    assert response.status_code == 302 and response.url == change_url(old)
    assert Run.objects.filter(rerun_of=old).count() == 1


def test_buttons__post_with_the_csrf_token_from_the_page(admin_user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    run = start_run()
    page = browser.get(change_url(run)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    cancel_url = reverse("admin:runs_run_cancel", args=[run.pk])
    assert f'action="{cancel_url}"' in page

    assert browser.post(cancel_url).status_code == 403  # no token
    assert browser.post(cancel_url, {"csrfmiddlewaretoken": token}).status_code == 302

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_delete__only_finished_runs(admin_client):
    done, pending = make_run(RunStatus.COMPLETED), make_run(RunStatus.PENDING)

    assert admin_client.get(reverse("admin:runs_run_delete", args=[done.pk])).status_code == 200
    assert admin_client.get(reverse("admin:runs_run_delete", args=[pending.pk])).status_code == 403


def test_buttons__need_post(admin_client):
    run = start_run()

    assert admin_client.get(reverse("admin:runs_run_cancel", args=[run.pk])).status_code == 405
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING


def test_buttons__need_the_runner_role(client):
    viewer = get_user_model().objects.create_user(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="change_run"))  # no longer decides anything
    join(viewer, Role.VIEWER)
    client.force_login(viewer)
    run = start_run()

    assert client.get(change_url(run)).status_code == 200
    assert client.post(reverse("admin:runs_run_cancel", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING


# --- agent types -------------------------------------------------------------------------------


def test_agent_types__list_has_a_row_per_registered_agent(admin_client):
    response = admin_client.get(AGENT_LIST)

    assert response.status_code == 200
    listed = {p.agent_type for p in response.context["cl"].result_list}
    assert {"wait", "pass"} <= listed
    content = response.content.decode()
    assert "Waits the given number of seconds" in content  # the registry's description
    assert "unlimited" in content


def test_agent_types__counts_running_and_waiting(admin_client):
    holder = make_run(RunStatus.RUNNING)
    make_waiting_run(holder_run=holder)

    response = admin_client.get(AGENT_LIST)

    wait = next(p for p in response.context["cl"].result_list if p.agent_type == "wait")
    assert (wait.running_count, wait.waiting_count) == (1, 1)


def test_agent_types__agent_installed_since_the_last_migrate_is_named_then_listed_after_migrate(admin_client):
    AgentPolicy.objects.filter(agent_type="wait").delete()  # as if "wait" had been installed since

    before = admin_client.get(AGENT_LIST)
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")  # what `manage.py migrate` ends with
    after = admin_client.get(AGENT_LIST)

    assert "wait" not in {p.agent_type for p in before.context["cl"].result_list}
    assert "Installed but not listed yet: wait." in before.content.decode()
    assert "wait" in {p.agent_type for p in after.context["cl"].result_list}
    assert "Installed but not listed yet" not in after.content.decode()


def test_agent_types__list_and_api_agree_on_the_policy_in_effect(admin_client):
    services.agent_policy_update(agent_type="wait", limit=3, on_busy="reject")

    response = admin_client.get(AGENT_LIST)

    rows = {p.agent_type: p for p in response.context["cl"].result_list}
    api = {a["agent_type"]: a["concurrency"] for a in selectors.agent_list()}
    assert api["wait"] == {"limit": 3, "on_busy": "reject"} == selectors.agent_policy_of(rows["wait"]).as_dict()
    assert api["pass"] == {"limit": None, "on_busy": "queue"} == selectors.agent_policy_of(rows["pass"]).as_dict()
    assert "3 at once" in response.content.decode()


def test_agent_types__retired_agent_shows_a_dash(admin_client):
    AgentPolicy.objects.create(agent_type="retired-agent")

    content = admin_client.get(AGENT_LIST).content.decode()

    assert "no longer installed" in content


def test_agent_type_save__goes_through_the_service(admin_client):
    services.agent_policies_sync()
    policy = AgentPolicy.objects.get(agent_type="wait")

    response = admin_client.post(
        reverse("admin:runs_agentpolicy_change", args=[policy.pk]),
        {"override": "on", "concurrency_limit": "2", "on_busy": "queue"},
    )

    assert response.status_code == 302
    assert selectors.agent_policy_get(agent_type="wait") == ConcurrencyPolicy(limit=2, on_busy=OnBusy.QUEUE)


def test_agent_type_save__raising_the_limit_releases_waiting_runs(admin_client):
    services.agent_policy_update(agent_type="wait", limit=1, on_busy="queue")
    first, second = start_run(), start_run()
    assert second.steps.get().status == StepStatus.WAITING
    policy = AgentPolicy.objects.get(agent_type="wait")

    admin_client.post(
        reverse("admin:runs_agentpolicy_change", args=[policy.pk]),
        {"override": "on", "concurrency_limit": "2", "on_busy": "queue"},
    )

    assert first.steps.get().status == StepStatus.QUEUED
    assert second.steps.get().status == StepStatus.QUEUED


def test_agent_type_save__zero_is_not_a_limit(admin_client):
    services.agent_policies_sync()
    policy = AgentPolicy.objects.get(agent_type="wait")

    response = admin_client.post(
        reverse("admin:runs_agentpolicy_change", args=[policy.pk]),
        {"override": "on", "concurrency_limit": "0", "on_busy": "queue"},
    )

    assert response.status_code == 200  # the form again, with the error
    assert selectors.agent_policy_get(agent_type="wait") == ConcurrencyPolicy()


def test_agent_type_form__starts_from_the_built_in_policy(admin_client):
    services.agent_policies_sync()
    policy = AgentPolicy.objects.get(agent_type="wait")
    response = admin_client.get(reverse("admin:runs_agentpolicy_change", args=[policy.pk]))

    form = response.context["adminform"].form

    assert form.initial["on_busy"] == "queue"  # WaitAgent's default, not the row's placeholder
    assert form.initial["concurrency_limit"] is None


def test_agent_types__cannot_be_added_or_deleted(admin_client):
    services.agent_policies_sync()
    policy = AgentPolicy.objects.get(agent_type="wait")

    assert admin_client.get(reverse("admin:runs_agentpolicy_add")).status_code == 403
    assert admin_client.get(reverse("admin:runs_agentpolicy_delete", args=[policy.pk])).status_code == 403


def test_agent_type_page__shows_the_input_schema(admin_client):
    services.agent_policies_sync()
    policy = AgentPolicy.objects.get(agent_type="wait")

    content = admin_client.get(reverse("admin:runs_agentpolicy_change", args=[policy.pk])).content.decode()

    assert "&quot;required&quot;: [" in content


# --- slots -------------------------------------------------------------------------------------


def test_slot_list__is_read_only_and_links_the_run(admin_client):
    holder = make_run(RunStatus.RUNNING)
    make_waiting_run(holder_run=holder)

    response = admin_client.get(reverse("admin:runs_slot_changelist"))

    assert response.status_code == 200
    assert f'href="{change_url(holder)}"' in response.content.decode()
    assert admin_client.get(reverse("admin:runs_slot_add")).status_code == 403


# --- start a run from the admin -----------------------------------------------------

START_URL = "/admin/runs/run/start/"


def test_start_page__lists_agents_with_their_input_schemas(admin_client):
    page = admin_client.get(START_URL).content.decode()
    assert "Start a run" in page
    for name in ("document-extractor", "policy-checker", "wait", "pass"):
        assert name in page
    assert "Start a run" in admin_client.get("/admin/runs/run/").content.decode()


def test_start_page__starts_a_run_and_goes_to_its_page(admin_client, admin_user):
    response = admin_client.post(START_URL, {"agent_type": "wait", "input": '{"seconds": 2}', "user_id": ""})
    run = Run.objects.get()
    assert response.status_code == 302 and response.url == f"/admin/runs/run/{run.pk}/change/"
    assert (run.agent_type, run.input, run.created_by) == ("wait", {"seconds": 2}, admin_user)


def test_start_page__shows_input_errors_at_the_input_field(admin_client):
    response = admin_client.post(START_URL, {"agent_type": "wait", "input": '{"seconds": "soon"}'})
    assert response.status_code == 200
    assert "seconds: &#x27;soon&#x27; is not of type &#x27;number&#x27;" in response.content.decode()
    response = admin_client.post(START_URL, {"agent_type": "wait", "input": "[1, 2"})
    assert "This is not valid JSON" in response.content.decode()
    assert Run.objects.count() == 0


@pytest.mark.parametrize("text", ["a\\u0000b", "a\\ud800b"])
def test_start_page__text_the_database_cannot_store_is_a_field_error_and_shows_back(admin_client, text):
    response = admin_client.post(START_URL, {"agent_type": "pass", "input": '{"x": "' + text + '"}'})
    assert response.status_code == 200
    assert "the database cannot store them" in response.content.decode()
    assert Run.objects.count() == 0


def test_start_page__busy_reject_agent_is_a_form_error(admin_client):
    services.run_create(agent_type="policy-checker", input={})
    response = admin_client.post(START_URL, {"agent_type": "policy-checker", "input": "{}"})
    assert response.status_code == 200
    assert "already running" in response.content.decode()
    assert Run.objects.count() == 1


def test_start_page__counts_against_the_run_start_limits_as_the_api_does(admin_client, settings):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 1
    assert admin_client.post(START_URL, {"agent_type": "pass", "input": "{}"}).status_code == 302
    response = admin_client.post(START_URL, {"agent_type": "pass", "input": "{}"})
    assert response.status_code == 200
    assert "Too many run starts by you in this team: try again in" in response.content.decode()
    assert Run.objects.count() == 1


def test_start_page__uploaded_document_becomes_the_extractor_input(admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("policy.txt", b"Policy Number: PL-9", content_type="text/plain")
    admin_client.post(START_URL, {"agent_type": "document-extractor", "input": "", "document": upload})
    assert Run.objects.get().input == {"filename": "policy.txt", "text": "Policy Number: PL-9"}


def test_start_page__needs_the_runner_role(client, django_user_model):
    viewer = django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="change_run"))  # no longer decides anything
    join(viewer, Role.VIEWER)
    client.force_login(viewer)
    assert client.get(START_URL).status_code == 403
