"""The REST API: contract, permissions and bad input (always a clear 4xx, never a 500)."""

import base64
import io
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from fpdf import FPDF
from rest_framework.test import APIClient

from runs import services
from runs.models import AgentPolicy, Run, RunStatus, StepStatus
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"


def error_shape(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"detail", "code", "errors"}, body
    assert body["detail"]
    return body


# --- authentication -------------------------------------------------------------


SOME_ID = "3f2b8c1e-0d4a-4e7b-9c55-1a2b3c4d5e6f"  # fixed: parallel test workers must collect the same ids


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/v1/agents"),
        ("post", "/api/v1/agents/run"),
        ("get", f"/api/v1/agents/status/{SOME_ID}"),
        ("patch", "/api/v1/agents/wait"),
        ("get", "/api/v1/runs"),
        ("post", "/api/v1/runs"),
        ("get", f"/api/v1/runs/{SOME_ID}"),
        ("delete", f"/api/v1/runs/{SOME_ID}"),
        ("get", f"/api/v1/runs/{SOME_ID}/steps"),
    ],
)
def test_every_endpoint_but_health_and_docs_requires_authentication(method, path):
    response = getattr(APIClient(), method)(path)
    error_shape(response, 401)


def test_health_docs_and_schema_are_open():
    client = APIClient()
    assert client.get("/api/v1/health").status_code in (200, 503)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    # Assets served locally (sidecar): it works offline. (Not a search for "cdn": the page embeds a random
    # CSRF token, which spelled it about once in 150 runs.)
    assets = re.findall(r'(?:src|href)="([^"]*)"', docs.content.decode())
    assert assets and all(url.startswith("/") for url in assets), assets
    assert client.get("/api/redoc/").status_code == 200
    assert client.get("/api/schema/").status_code == 200


def test_openapi_schema_validates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_health_without_workers__503_naming_the_failed_check():
    body = APIClient().get("/api/v1/health").json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["workers"]["ok"] is False
    assert "manage.py worker" in body["checks"]["workers"]["detail"]


def test_health__reuses_its_report_for_health_cache_seconds(settings, monkeypatch):
    from agentrunner import health

    settings.HEALTH_CACHE_SECONDS = 60
    monkeypatch.setattr(health, "_cached", None)
    first = APIClient().get("/api/v1/health")
    with CaptureQueriesContext(connection) as queries:
        second = APIClient().get("/api/v1/health")
    assert second.json() == first.json() and second.status_code == first.status_code == 503
    assert len(queries) == 0  # not even the database check
    settings.HEALTH_CACHE_SECONDS = 0
    third = APIClient().get("/api/v1/health").json()
    assert third["checked_at"] > first.json()["checked_at"]


# --- agents ---------------------------------------------------------------------


def test_agents_run__202_with_run_id_and_status_readable(api):
    response = api.post(
        "/api/v1/agents/run", {"agent_type": "wait", "user_id": USER_ID, "input": {"seconds": 1}}, format="json"
    )
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    status = api.get(f"/api/v1/agents/status/{run_id}").json()
    assert status == {"run_id": run_id, "state": "PENDING", "result": None, "error": None}
    assert str(Run.objects.get(pk=run_id).user_id) == USER_ID


def test_agents_run__unknown_agent_type_is_400_naming_valid_types(api):
    body = error_shape(api.post("/api/v1/agents/run", {"agent_type": "nope", "user_id": USER_ID}, format="json"), 400)
    assert body["code"] == "unknown_agent_type"
    for name in ("document-extractor", "policy-checker", "wait", "pass"):
        assert name in body["detail"]


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"agent_type": "wait", "user_id": "not-a-uuid", "input": {"seconds": 1}}, "user_id"),
        ({"agent_type": "wait", "input": {"seconds": 1}}, "user_id"),
        ({"user_id": USER_ID}, "agent_type"),
        ({"agent_type": 5, "user_id": USER_ID}, "agent_type"),
        ({"agent_type": "wait", "user_id": USER_ID, "input": [1, 2]}, "input"),
        ({"agent_type": "wait", "user_id": USER_ID, "input": "text"}, "input"),
        ({"agent_type": "wait", "user_id": USER_ID, "input": {"seconds": "long"}}, "input.seconds"),
        ({"agent_type": "wait", "user_id": USER_ID, "input": {"seconds": 3601}}, "input.seconds"),
        ({"agent_type": "wait", "user_id": USER_ID, "input": {}}, "input"),
        ({"agent_type": "document-extractor", "user_id": USER_ID, "input": {}}, "input"),
    ],
)
def test_agents_run__bad_input_is_400_listing_field_errors(api, payload, field):
    body = error_shape(api.post("/api/v1/agents/run", payload, format="json"), 400)
    assert field in body["errors"], body
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    "raw,content_type",
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1,2,3]", "application/json"),
        (b"null", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"agent_type=wait", "text/plain"),
    ],
)
def test_agents_run__malformed_bodies_are_4xx(api, raw, content_type):
    response = api.generic("POST", "/api/v1/agents/run", raw, content_type=content_type)
    assert 400 <= response.status_code < 500, response.content
    error_shape(response, response.status_code)


def test_huge_body_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"agent_type": "pass", "user_id": USER_ID, "input": {"x": "a" * 5000}})
    response = api.generic("POST", "/api/v1/agents/run", body, content_type="application/json")
    assert error_shape(response, 413)["code"] == "request_too_large"


def make_pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for line in text.splitlines():
        pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def test_agents_run__multipart_pdf_upload_becomes_pdf_input(api):
    upload = io.BytesIO(make_pdf("Policy Number: PL-77"))
    upload.name = "policy.pdf"
    response = api.post(
        "/api/v1/agents/run",
        {"agent_type": "document-extractor", "user_id": USER_ID, "file": upload},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    assert base64.b64decode(run.input["pdf_base64"]).startswith(b"%PDF")
    assert run.input["filename"] == "policy.pdf"


def test_agents_run__binary_non_pdf_upload_is_400(api):
    upload = io.BytesIO(b"\x00\xff\xfe binary")
    upload.name = "x.bin"
    response = api.post(
        "/api/v1/agents/run",
        {"agent_type": "document-extractor", "user_id": USER_ID, "file": upload},
        format="multipart",
    )
    assert "file" in error_shape(response, 400)["errors"]


def test_agents_run__second_run_of_busy_reject_agent_is_409(api):
    payload = {"agent_type": "policy-checker", "user_id": USER_ID, "input": {"fields": {}}}
    assert api.post("/api/v1/agents/run", payload, format="json").status_code == 202
    body = error_shape(api.post("/api/v1/agents/run", payload, format="json"), 409)
    assert "already running" in body["detail"]


def test_agents_status__unknown_and_malformed_ids_are_404(api):
    error_shape(api.get(f"/api/v1/agents/status/{uuid.uuid4()}"), 404)
    error_shape(api.get("/api/v1/agents/status/not-a-uuid"), 404)


def test_agents_list__schemas_and_effective_policies(api):
    agents = {a["agent_type"]: a for a in api.get("/api/v1/agents").json()["results"]}
    assert agents["document-extractor"]["concurrency"] == {"limit": 1, "on_busy": "reject"}
    assert agents["wait"]["input_schema"]["required"] == ["seconds"]


def test_agents_patch__superuser_changes_policy_effective_for_next_run(superuser_api, api):
    response = superuser_api.patch(
        "/api/v1/agents/wait", {"concurrency": {"limit": 1, "on_busy": "reject"}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["concurrency"] == {"limit": 1, "on_busy": "reject"}
    assert response.json()["overridden"] is True
    payload = {"agent_type": "wait", "user_id": USER_ID, "input": {"seconds": 1}}
    assert api.post("/api/v1/agents/run", payload, format="json").status_code == 202
    assert api.post("/api/v1/agents/run", payload, format="json").status_code == 409
    reset = superuser_api.patch("/api/v1/agents/wait", {"concurrency": None}, format="json")
    assert reset.json()["overridden"] is False
    assert api.post("/api/v1/agents/run", payload, format="json").status_code == 202


@pytest.mark.parametrize(
    "payload",
    [
        {"concurrency": {"limit": 0, "on_busy": "queue"}},
        {"concurrency": {"limit": "one", "on_busy": "queue"}},
        {"concurrency": {"limit": 1, "on_busy": "sometimes"}},
        {"concurrency": "fast"},
        {},
    ],
)
def test_agents_patch__bad_policy_is_400(superuser_api, payload):
    error_shape(superuser_api.patch("/api/v1/agents/wait", payload, format="json"), 400)


def test_agents_patch__limit_beyond_32_bits_is_400_and_the_policy_unchanged(superuser_api):
    before = list(AgentPolicy.objects.values_list("agent_type", "override", "concurrency_limit", "on_busy"))
    body = error_shape(
        superuser_api.patch(
            "/api/v1/agents/pass", {"concurrency": {"limit": 2**31, "on_busy": "queue"}}, format="json"
        ),
        400,
    )
    assert "concurrency.limit" in body["errors"], body
    assert list(AgentPolicy.objects.values_list("agent_type", "override", "concurrency_limit", "on_busy")) == before
    largest = {"concurrency": {"limit": 2**31 - 1, "on_busy": "queue"}}
    assert (
        superuser_api.patch("/api/v1/agents/pass", largest, format="json").json()["concurrency"]["limit"] == 2**31 - 1
    )


def test_agents_patch__only_superusers_403_unknown_404(api, staff_api, superuser_api):
    """An agent's policy is shared by every team: a team's admin or staff may not change it."""
    error_shape(api.patch("/api/v1/agents/wait", {"concurrency": None}, format="json"), 403)
    error_shape(staff_api.patch("/api/v1/agents/wait", {"concurrency": None}, format="json"), 403)
    error_shape(superuser_api.patch("/api/v1/agents/nope", {"concurrency": None}, format="json"), 404)


# --- runs -----------------------------------------------------------------------


def test_runs_create__202_full_run_and_idempotency(api):
    payload = {"agent_type": "wait", "input": {"seconds": 1}, "idempotency_key": "k-1"}
    first = api.post("/api/v1/runs", payload, format="json")
    assert first.status_code == 202
    run = first.json()
    assert set(run) >= {
        "id", "status", "agent_type", "flow", "input", "result", "error", "user_id",
        "created_at", "started_at", "finished_at", "blocked_by",
    }  # fmt: skip
    again = api.post("/api/v1/runs", payload, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == run["id"]
    assert Run.objects.count() == 1
    conflict = api.post("/api/v1/runs", {**payload, "input": {"seconds": 2}}, format="json")
    assert error_shape(conflict, 409)["code"] == "idempotency_conflict"


def test_runs_idempotency_keys_are_per_client(api, outsider):
    payload = {"agent_type": "wait", "input": {"seconds": 1}, "idempotency_key": "shared"}
    a = api.post("/api/v1/runs", payload, format="json").json()
    b = client_for(outsider).post("/api/v1/runs", payload, format="json").json()
    assert a["id"] != b["id"]


def test_runs_list__filters_and_pagination(api, owner):
    for _ in range(3):
        services.run_create(agent_type="pass", input={}, created_by=owner)
    services.run_create(agent_type="wait", input={"seconds": 1}, created_by=owner)
    Run.objects.filter(agent_type="wait").update(status=RunStatus.FAILED)
    page = api.get("/api/v1/runs?limit=2").json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    assert api.get("/api/v1/runs?status=FAILED").json()["count"] == 1
    assert api.get("/api/v1/runs?agent_type=pass").json()["count"] == 3
    assert api.get("/api/v1/runs?created_after=2999-01-01T00:00:00Z").json()["count"] == 0
    assert api.get("/api/v1/runs?created_before=2999-01-01T00:00:00Z").json()["count"] == 4


@pytest.mark.parametrize(
    "query",
    # schemathesis found the last two (a 500 on SQLite: beyond its 64-bit integers).
    ["status=NOPE", "created_after=yesterday", "limit=abc", "user_id=zzz", "schedule=-7.5e%2B236", "schedule=1.5"],
)
def test_runs_list__bad_filters_are_400(api, query):
    error_shape(api.get(f"/api/v1/runs?{query}"), 400)


@pytest.mark.parametrize(
    "query",
    [
        "created_after=2020-01-01T00:00:00%2B16:00",
        "created_after=2020-01-01T00:00:00-16:00",
        "created_before=2020-01-01T00:00:00%2B14:01",
        "created_before=2020-01-01T00:00:00%2B23:59",
        "created_after=0001-01-01T00:00:00%2B01:00",  # before year 1 in UTC
        "created_before=9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    ],
)
def test_runs_list__a_time_zone_offset_or_moment_out_of_range_is_400(api, query):
    body = error_shape(api.get(f"/api/v1/runs?{query}"), 400)
    assert query.split("=")[0] in body["errors"], body


def test_runs_list__offsets_up_to_14_hours_compare_in_utc(api, owner):
    run, _ = services.run_create(agent_type="pass", input={}, created_by=owner)
    at = run.created_at.replace(microsecond=0)
    east = (at + timedelta(hours=14, seconds=-1)).strftime("%Y-%m-%dT%H:%M:%S") + "%2B14:00"  # 1 s before the run
    west = (at - timedelta(hours=12, seconds=-2)).strftime("%Y-%m-%dT%H:%M:%S") + "-12:00"  # 2 s after it
    assert api.get(f"/api/v1/runs?created_after={east}").json()["count"] == 1
    assert api.get(f"/api/v1/runs?created_before={west}").json()["count"] == 1
    assert api.get(f"/api/v1/runs?created_after={west}").json()["count"] == 0


def test_runs_are_private_to_their_creator_but_staff_see_all(api, owner, outsider, staff_api):
    run, _ = services.run_create(agent_type="pass", input={}, created_by=owner)
    assert api.get(f"/api/v1/runs/{run.id}").status_code == 200
    error_shape(client_for(outsider).get(f"/api/v1/runs/{run.id}"), 404)
    error_shape(client_for(outsider).delete(f"/api/v1/runs/{run.id}"), 404)
    assert client_for(outsider).get("/api/v1/runs").json()["count"] == 0
    assert staff_api.get(f"/api/v1/runs/{run.id}").status_code == 200


def test_runs_detail__waiting_run_shows_blocked_by(api, owner):
    services.agent_policy_update(agent_type="wait", limit=1, on_busy="queue")
    holder, _ = services.run_create(agent_type="wait", input={"seconds": 5}, created_by=owner)
    waiting, _ = services.run_create(agent_type="wait", input={"seconds": 5}, created_by=owner)
    body = api.get(f"/api/v1/runs/{waiting.id}").json()
    assert body["blocked_by"] == {
        "concurrency_key": "agent:wait",
        "runs": [str(holder.id)],
        "slots_used": 1,
        "limit": 1,
        "position": 1,
    }
    assert api.get(f"/api/v1/runs/{holder.id}").json()["blocked_by"] is None


def test_runs_list__blocked_by_in_a_fixed_number_of_queries_however_many_runs_wait(api, owner):
    """It made one query per run (3 for 1 run, 42 for 40); now the page's waiting runs are looked up together."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    services.agent_policy_update(agent_type="wait", limit=1, on_busy="queue")
    holder, _ = services.run_create(agent_type="wait", input={"seconds": 5}, created_by=owner)

    def list_queries(waiting: int) -> tuple[int, dict]:
        for _ in range(waiting):
            services.run_create(agent_type="wait", input={"seconds": 5}, created_by=owner)
        with CaptureQueriesContext(connection) as queries:
            body = api.get("/api/v1/runs?limit=100").json()
        return len(queries), body

    few, _ = list_queries(1)
    many, body = list_queries(30)
    assert many == few, f"{few} queries for 2 runs, {many} for 32"
    blocked = [r["blocked_by"] for r in body["results"] if r["blocked_by"]]
    assert len(blocked) == 31 and sorted(b["position"] for b in blocked) == list(range(1, 32))
    assert all(b["runs"] == [str(holder.id)] and b["slots_used"] == 1 and b["limit"] == 1 for b in blocked)


def test_runs_cancel__queued_run_cancelled_at_once_and_second_cancel_409(api, owner):
    run, _ = services.run_create(agent_type="wait", input={"seconds": 5}, created_by=owner)
    response = api.delete(f"/api/v1/runs/{run.id}")
    assert response.status_code == 202
    assert response.json()["status"] == "CANCELLED"
    assert run.steps.get().status == StepStatus.CANCELLED
    assert error_shape(api.delete(f"/api/v1/runs/{run.id}"), 409)["code"] == "run_finished"


def test_runs_cancel__waiting_run_leaves_the_queue_and_holder_keeps_slot(owner):
    services.agent_policy_update(agent_type="wait", limit=1, on_busy="queue")
    holder, _ = services.run_create(agent_type="wait", input={"seconds": 5}, created_by=owner)
    waiting, _ = services.run_create(agent_type="wait", input={"seconds": 5}, created_by=owner)
    services.run_cancel(run_id=waiting.id)
    assert Run.objects.get(pk=waiting.pk).status == RunStatus.CANCELLED
    assert holder.slots.count() == 1


def test_runs_steps__timeline_with_attempts(api, owner):
    run, _ = services.run_create(agent_type="pass", input={"a": 1}, created_by=owner)
    steps = api.get(f"/api/v1/runs/{run.id}/steps").json()["results"]
    assert len(steps) == 1
    assert steps[0]["name"] == "pass" and steps[0]["status"] == "QUEUED" and steps[0]["attempts"] == []
    error_shape(api.get(f"/api/v1/runs/{uuid.uuid4()}/steps"), 404)


@pytest.mark.parametrize("path", ["/api/v1/runs/123", "/api/v1/runs/x/steps", "/api/v1/nothing-here"])
def test_unknown_api_paths_are_json_404(api, path):
    error_shape(api.get(path), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"agent_type": "wait", "input": {"seconds": 1}, "user_id": "x"},
        {"agent_type": "wait", "input": {"seconds": 1}, "idempotency_key": "k" * 201},
        {"agent_type": "wait", "input": {"seconds": 1}, "idempotency_key": None},
        {"agent_type": ["wait"]},
        {"agent_type": "wait", "input": None},
    ],
)
def test_runs_create__bad_input_is_400(api, body):
    error_shape(api.post("/api/v1/runs", body, format="json"), 400)


@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/v1/runs", {"agent_type": "pass"}),
        ("/api/v1/agents/run", {"agent_type": "pass", "user_id": USER_ID}),
    ],
)
def test_token_budget_beyond_32_bits_is_400_and_nothing_stored(api, path, body):
    error = error_shape(api.post(path, {**body, "token_budget": 2**31}, format="json"), 400)
    assert "token_budget" in error["errors"], error
    assert not Run.objects.exists()
    assert api.post(path, {**body, "token_budget": 2**31 - 1}, format="json").status_code == 202
    assert Run.objects.get().token_budget == 2**31 - 1


def test_agents_run__uploaded_text_with_a_nul_is_400_on_file_and_nothing_stored(api):
    upload = io.BytesIO(b"Policy Number: PL-1\x00\nNamed Insured: Acme")
    upload.name = "policy.txt"
    response = api.post(
        "/api/v1/agents/run",
        {"agent_type": "document-extractor", "user_id": USER_ID, "file": upload},
        format="multipart",
    )
    body = error_shape(response, 400)
    assert "NUL character" in body["errors"]["file"][0], body
    assert not Run.objects.exists()


def test_run_metrics__tokens_and_cost_per_step_and_total(api, owner):
    from decimal import Decimal

    from agentrunner.models import LLMCall

    run, _ = services.run_create(agent_type="pass", input={}, created_by=owner)
    step = run.steps.get()
    LLMCall.objects.create(
        request_id=uuid.uuid4(), run=run, step=step, owner=owner, provider="openai", model="gpt-4o-mini",
        prompt_tokens=100, completion_tokens=20, total_tokens=120, cost_usd=Decimal("0.000027"), latency_ms=40,
        outcome="success",
    )  # fmt: skip
    body = api.get(f"/api/v1/runs/{run.id}/metrics").json()
    assert body["total"]["total_tokens"] == 120 and body["total"]["calls"] == 1
    assert Decimal(body["total"]["cost_usd"]) == Decimal("0.000027")
    assert body["steps"][0]["name"] == "pass" and body["steps"][0]["total_tokens"] == 120
    error_shape(api.get(f"/api/v1/runs/{uuid.uuid4()}/metrics"), 404)


def test_health_lists_llm_provider_breakers(settings):
    settings.OPENAI_API_KEY = "sk-test"
    body = APIClient().get("/api/v1/health").json()
    assert body["llm_providers"][0]["provider"] == "openai"
    assert body["llm_providers"][0]["state"] == "closed"
