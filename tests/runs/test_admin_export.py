"""The run list's "Download selected runs as CSV"."""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse

from agentrunner.models import LLMCall, Role
from runs.admin import export
from runs.models import Run, RunStatus
from tests.agentrunner.test_metrics import llm_call
from tests.conftest import team_named
from tests.flows.factories import flow
from tests.runs.factories import make_run
from tests.runs.test_admin_teams import staff

pytestmark = pytest.mark.django_db

RUN_LIST = reverse("admin:runs_run_changelist")


def download(client, runs) -> list[dict]:
    response = client.post(RUN_LIST, {"action": "download_csv", "_selected_action": [r.pk for r in runs]})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="runs-')
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")  # spreadsheets read it as UTF-8
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_download__one_row_per_run_with_times_llm_totals_and_json(admin_client):
    agent_run = make_run(RunStatus.FAILED, agent_type="pass", input={"claim": "C-1", "amount": 1200},
                         error="=HYPERLINK(\"http://evil\")", error_code="agent_error")  # fmt: skip
    Run.objects.filter(pk=agent_run.pk).update(started_at=agent_run.finished_at - timedelta(seconds=2.5))
    for tokens, cost in ((300, "0.25"), (100, "0.05")):
        call = llm_call("openai", "gpt-test", "success", prompt=tokens, cost=cost, team=agent_run.team)
        LLMCall.objects.filter(pk=call.pk).update(run=agent_run)
    version = flow(slug="claim-intake").current_version
    flow_run = make_run(RunStatus.COMPLETED, agent_type="", flow_version=version, result={"decision": "approved"})

    rows = {row["run id"]: row for row in download(admin_client, [agent_run, flow_run])}

    failed, completed = rows[str(agent_run.pk)], rows[str(flow_run.pk)]
    assert (failed["agent or flow"], failed["status"], failed["error code"]) == ("pass", "FAILED", "agent_error")
    assert failed["error"] == '\'=HYPERLINK("http://evil")'  # never run as a formula
    assert failed["duration (s)"] == "2.500"
    assert (failed["LLM tokens"], failed["LLM cost (USD)"]) == ("400", "0.30000000")
    assert failed["input (JSON)"] == '{"amount": 1200, "claim": "C-1"}' and failed["result (JSON)"] == ""
    assert failed["created (UTC)"].endswith("+00:00")
    assert completed["agent or flow"] == f"flow claim-intake v{version.number}"
    assert (completed["LLM tokens"], completed["LLM cost (USD)"]) == ("0", "0.00000000")
    assert completed["result (JSON)"] == '{"decision": "approved"}'


def test_download__in_chunks_every_run_once_newest_first(admin_client, monkeypatch):
    monkeypatch.setattr(export, "CHUNK", 2)
    runs = [make_run(RunStatus.COMPLETED, agent_type="pass", input={"i": i}) for i in range(5)]
    for run in runs:
        call = llm_call("openai", "gpt-test", "success", prompt=10, team=run.team)
        LLMCall.objects.filter(pk=call.pk).update(run=run)

    rows = download(admin_client, runs)

    assert [row["run id"] for row in rows] == [
        str(r.pk) for r in sorted(runs, key=lambda r: r.created_at, reverse=True)
    ]
    assert {row["LLM tokens"] for row in rows} == {"10"}


def test_download__a_viewer_gets_only_their_teams_runs(django_user_model):
    alpha, beta = team_named("alpha"), team_named("beta")
    ours, theirs = make_run(RunStatus.COMPLETED, team=alpha), make_run(RunStatus.COMPLETED, team=beta)
    viewer = staff(django_user_model, "vera", (Role.VIEWER, alpha))

    assert [row["run id"] for row in download(viewer, [ours, theirs])] == [str(ours.pk)]


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_safe_cell__what_a_spreadsheet_would_run_starts_with_an_apostrophe(text):
    assert export.safe_cell(text) == f"'{text}"
    assert export.safe_cell("1-1") == "1-1" and export.safe_cell(None) == ""
