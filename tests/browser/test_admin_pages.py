"""The admin in a real browser (headless Chromium), against gunicorn and a worker cluster: log in, write a flow in
the editor, run it, upload a document, cancel a run, preview a digest, as a person would."""

from __future__ import annotations

import json
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from digests import services as digest_services
from flows import services as flow_services
from flows.models import Flow
from runs import services as run_services
from runs.models import Run, RunStatus
from tests.browser.conftest import BASE_DIR, PASSWORD, log_in, step

# One server, cluster and browser for the module: `make test` keeps its tests on one xdist worker (loadgroup).
pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("browser")]

POLICY_PDF = BASE_DIR / "samples" / "policy.pdf"

# Claims under 1000 are settled (a 1 s wait, so that the run page is seen while the run goes on), others escalated.
CLAIM_FLOW = {
    "name": "Claim review",
    "start_task": "triage",
    "tasks": [
        {"name": "triage", "agent": "pass", "input": {"claim": "{{ input.claim }}"}},
        {"name": "settle", "agent": "wait", "input": {"seconds": 1}},
        {"name": "escalate", "agent": "pass", "input": {}},
    ],
    "conditions": [
        {
            "name": "small",
            "source_task": "triage",
            "when": "input.claim < 1000",
            "target_task_success": "settle",
            "target_task_failure": "escalate",
        }
    ],
}


def run_page(run: Run) -> str:
    return f"/admin/runs/run/{run.pk}/change/"


def status_of_run(page):
    return page.locator(".field-status_badge .readonly")


def test_log_in__a_wrong_password_is_refused_then_the_dashboard_opens(page, admin):
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", "not the password")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_contain_text("correct username and password")

    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")

    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.get_by_role("link", name="Start a run").first).to_be_visible()
    expect(page.locator("#user-tools")).to_contain_text("admin")
    step(page, "01-dashboard")


def test_flow_editor__a_problem_shows_at_its_path_and_the_fixed_flow_saves(page, admin):
    broken = json.loads(json.dumps(CLAIM_FLOW))
    broken["tasks"][1]["agent"] = "settler"  # no such agent
    text = json.dumps(broken, indent=2)
    [line] = [n for n, content in enumerate(text.splitlines(), start=1) if '"settler"' in content]
    log_in(page)

    page.goto("/admin/flows/flow/add/")
    page.locator("#id_name").press_sequentially("Claim review")  # typed: the slug follows the name
    expect(page.locator("#id_slug")).to_have_value("claim-review")
    expect(page.locator(".flow-editor.flow-editor-ready")).to_be_visible()  # CodeMirror over the text area
    set_definition(page, text)
    page.click(".flow-check-button")

    problems = page.locator(".flow-problems")
    expect(problems).to_contain_text(f"line {line} · tasks[1].agent")
    expect(problems).to_contain_text("Errors (the flow cannot be saved until they are fixed)")
    expect(page.locator(".CodeMirror-lint-marker-error").first).to_be_visible()  # the mark in the margin
    step(page, "02-flow-editor-problem")

    set_definition(page, json.dumps(CLAIM_FLOW, indent=2))
    page.click(".flow-check-button")
    expect(problems).to_contain_text("No problems found: the flow can be saved.")
    page.click("input[name=_save]")

    expect(page.locator(".messagelist .success")).to_contain_text("Claim review")
    expect(page).to_have_url(re.compile(r"/admin/flows/flow/\d+/change/$"))  # its own page, with Run now
    expect(page.locator("a", has_text=re.compile("run now", re.I)).first).to_be_visible()
    step(page, "03-flow-saved")
    flow = Flow.objects.get(slug="claim-review")
    assert flow.current_version.definition == CLAIM_FLOW


def set_definition(page, text: str) -> None:
    page.evaluate("text => document.querySelector('.CodeMirror').CodeMirror.setValue(text)", text)


def test_run_now__the_run_page_follows_the_run_and_shows_the_path_taken_and_the_timeline(page, admin):
    flow = flow_services.flow_create(slug="claim-review", name="Claim review", definition=CLAIM_FLOW, owner=admin)
    log_in(page)

    page.goto(f"/admin/flows/flow/{flow.pk}/change/")
    page.get_by_role("link", name="Run now").click()
    page.fill("#id_input", json.dumps({"claim": 500}))
    step(page, "04-run-now")
    page.click("input[type=submit][value='Start run']")

    expect(page).to_have_url(re.compile(r"/admin/runs/run/[0-9a-f-]+/change/$"))
    expect(page.locator(".messagelist .success")).to_contain_text("Started run")
    # The page was opened while the run went on; it updates itself and reloads once when the run has finished.
    expect(status_of_run(page)).to_contain_text("Completed")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    graph = page.locator(".field-flow_graph_display svg[data-flow-graph]")
    expect(graph.locator("g[data-task='triage'][data-status]")).to_have_count(1)
    expect(graph.locator("g[data-task='settle'][data-status]")).to_have_count(1)
    expect(graph.locator("g[data-task='escalate'][data-status]")).to_have_count(0)  # not on the way taken
    expect(graph.locator("g[data-taken='true']")).to_have_count(3)  # start → triage → settle → end
    timeline = page.locator(".field-timeline .run-timeline")
    expect(timeline.locator("tbody")).to_have_count(2)
    expect(timeline).to_contain_text("triage")
    expect(timeline).to_contain_text("settle")
    step(page, "05-run-page")
    run = Run.objects.get()
    assert run.status == RunStatus.COMPLETED, run.error


def test_start_a_run__an_uploaded_pdf_is_read_and_its_fields_shown(page, admin):
    log_in(page)

    page.goto("/admin/runs/run/start/")
    page.select_option("#id_agent_type", "document-extractor")
    page.set_input_files("#id_document", POLICY_PDF)
    step(page, "06-start-a-run")
    page.click("input[type=submit][value='Start run']")

    expect(page).to_have_url(re.compile(r"/admin/runs/run/[0-9a-f-]+/change/$"))
    expect(status_of_run(page)).to_contain_text("Completed")
    expect(page.locator(".field-result_pretty")).to_contain_text("policy_number")
    expect(page.locator(".field-result_pretty")).to_contain_text("PL-2025-004211")
    document = page.locator(".field-input_pretty .jt-doc")
    expect(document).to_have_text(f"PDF, {round(POLICY_PDF.stat().st_size / 1024)} KB — download")
    expect(document.get_by_role("link", name="download")).to_have_attribute("href", re.compile(r"."))
    step(page, "07-document-run")


def test_cancel_run__a_running_wait_ends_cancelled(page, admin):
    run, _ = run_services.run_create(agent_type="wait", input={"seconds": 30}, created_by=admin)
    log_in(page)

    page.goto(run_page(run))
    expect(status_of_run(page)).to_contain_text("Running")  # the live page sees the worker start it
    step(page, "08-running-run")
    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel this run? ..."
    page.get_by_role("button", name="Cancel run").click()

    expect(status_of_run(page)).to_contain_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    step(page, "09-cancelled-run")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_digest_preview__lists_the_finished_run_of_the_flow(page, admin):
    flow = flow_services.flow_create(slug="claim-review", name="Claim review", definition=CLAIM_FLOW, owner=admin)
    now = timezone.now()
    run = Run.objects.create(
        team=flow.team,
        flow_version=flow.current_version,
        input={"claim": 500},
        status=RunStatus.COMPLETED,
        result={"route": "settled"},
        started_at=now,
        finished_at=now,
    )
    digest = digest_services.digest_create(
        name="Claims today", flow=flow, recipients="claims@example.com", period="daily", rank_by=""
    )
    log_in(page)

    page.goto(f"/admin/digests/digestsubscription/{digest.pk}/change/")
    page.get_by_role("link", name="Preview").click()

    expect(page.locator(".email-facts")).to_contain_text("claims@example.com")
    text = page.locator("pre.email-text")
    expect(text).to_contain_text("flow claim-review")
    expect(text).to_contain_text(f"/admin/runs/run/{run.pk}/change/")
    frame = page.frame_locator("iframe.email-frame")
    expect(frame.locator("body")).to_contain_text("claim-review")
    step(page, "10-digest-preview")
