import json

import pytest
from django.urls import URLResolver, get_resolver
from django.utils import timezone

from agentrunner.api import MAX_PAGE_SIZE, LimitOffsetPagination
from digests.services import digest_period_close as digest_close
from flows.models import Flow, FlowVersion
from flows.services import flow_create
from runs import services as run_services
from runs.models import Run, Step
from schedules.models import FireStatus, Schedule, ScheduleFire
from tests.digests.factories import digest as make_digest
from tests.schedules.factories import schedule as make_schedule

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("path", ["/api/v1/runs", "/api/v1/agents/run", "/api/v1/flows", "/api/v1/flow/execute"])
def test_json_nested_too_deeply__is_a_400_not_a_500(staff_api, path):
    response = staff_api.post(path, DEEP, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


# --- text the database cannot store -------------------------------------------------------------------------

USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
UNSTORABLE = {"nul": ("a\x00b", "NUL character"), "lone-surrogate": ("a\ud800b", "lone surrogate")}
PLACES = {
    "nested-value": lambda text: {"outer": [{"k": text}]},
    "nested-key": lambda text: {"outer": {f"k{text}": 1}},
}


def one_task(task_input: dict) -> dict:
    return {"name": "demo", "start_task": "a", "tasks": [{"name": "a", "agent": "pass", "input": task_input}]}


# (method, path, body around the bad JSON, the field named in the error)
STORING_ENDPOINTS = {
    "runs": ("POST", "/api/v1/runs", lambda bad: {"agent_type": "pass", "input": bad}, "input"),
    "agents-run": (
        "POST",
        "/api/v1/agents/run",
        lambda bad: {"agent_type": "pass", "user_id": USER_ID, "input": bad},
        "input",
    ),
    "flow-runs": ("POST", "/api/v1/flows/demo/runs", lambda bad: {"input": bad}, "input"),
    "flow-execute-input": ("POST", "/api/v1/flow/execute", lambda bad: {"flow": one_task({}), "input": bad}, "input"),
    "flow-execute-definition": ("POST", "/api/v1/flow/execute", lambda bad: {"flow": one_task(bad)}, "flow"),
    "flow-create": (
        "POST",
        "/api/v1/flows",
        lambda bad: {"slug": "new", "name": "New", "definition": one_task(bad)},
        "definition",
    ),
    "flow-replace": (
        "PUT",
        "/api/v1/flows/demo",
        lambda bad: {"name": "Demo", "definition": one_task(bad)},
        "definition",
    ),
    "flow-change": ("PATCH", "/api/v1/flows/demo", lambda bad: {"definition": one_task(bad)}, "definition"),
    "schedule-create": (
        "POST",
        "/api/v1/schedules",
        lambda bad: {"name": "new", "agent": "pass", "input": bad, "every_seconds": 60},
        "input",
    ),
    "schedule-change": ("PATCH", "/api/v1/schedules/{schedule}", lambda bad: {"input": bad}, "input"),
}


def stored_state() -> tuple:
    return (
        list(Run.objects.values_list("pk", flat=True)),
        list(Step.objects.values_list("pk", flat=True)),
        list(Flow.objects.values_list("slug", "name", "updated_at")),
        list(FlowVersion.objects.values_list("pk", "definition")),
        list(Schedule.objects.values_list("pk", "input", "updated_at")),
    )


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("text", UNSTORABLE)
@pytest.mark.parametrize("endpoint", STORING_ENDPOINTS)
def test_unstorable_text_in_stored_json__400_naming_the_field_and_nothing_stored(staff_api, endpoint, text, place):
    flow_create(slug="demo", name="Demo", definition=one_task({}))
    schedule = make_schedule(name="existing")
    method, path, body, field = STORING_ENDPOINTS[endpoint]
    bad, what = UNSTORABLE[text]
    before = stored_state()

    # json.dumps escapes both as \u0000 and \ud800, as a client's JSON would.
    raw = json.dumps(body(PLACES[place](bad)))
    response = staff_api.generic(method, path.format(schedule=schedule.pk), raw, content_type="application/json")

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert what in body["errors"][field][0], body
    assert what in body["detail"] and field in body["detail"]
    assert stored_state() == before


# Fields that are only looked up or compared, never stored as JSON: such text reached PostgreSQL, which refused the
# statement (a 500), or was quoted in the error message, whose rendering then failed (a 500 too).
LOOKED_UP = {
    "digest-flow": ("POST", "/api/v1/digests", {"name": "d", "recipients": ["a@example.com"], "flow": "BAD"}, "flow"),
    "digest-period": (
        "POST",
        "/api/v1/digests",
        {"name": "d", "recipients": ["a@example.com"], "period": "BAD"},
        "period",
    ),  # fmt: skip
    "flow-run-idempotency-key": (
        "POST",
        "/api/v1/flows/demo/runs",
        {"input": {}, "idempotency_key": "BAD"},
        "idempotency_key",
    ),  # fmt: skip
    "run-agent-type": ("POST", "/api/v1/runs", {"agent_type": "BAD"}, "agent_type"),
    "schedule-timezone": ("POST", "/api/v1/schedules", {"name": "s", "agent": "pass", "timezone": "BAD"}, "timezone"),
    "a-key": ("POST", "/api/v1/runs", {"agent_type": "pass", "BAD": 1}, "non_field_errors"),
    "the-whole-body": ("POST", "/api/v1/runs", "BAD", "non_field_errors"),
}


def with_text(body, text):
    if body == "BAD":
        return text
    return {(k.replace("BAD", text)): (v.replace("BAD", text) if v == "BAD" else v) for k, v in body.items()}


@pytest.mark.parametrize("text", UNSTORABLE)
@pytest.mark.parametrize("endpoint", LOOKED_UP)
def test_unstorable_text_in_any_field__400_naming_the_field_not_500(staff_api, endpoint, text):
    flow_create(slug="demo", name="Demo", definition=one_task({}))
    method, path, body, field = LOOKED_UP[endpoint]
    bad, what = UNSTORABLE[text]
    before = stored_state()

    raw = json.dumps(with_text(body, bad))
    response = staff_api.generic(method, path, raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert what in response.json()["errors"][field][0]
    assert stored_state() == before


@pytest.mark.parametrize(
    "team", ["a\x00b", "x" * 3000, "../default", "default team"], ids=["nul", "long", "path", "space"]
)
def test_a_team_header_that_is_no_slug__is_the_404_of_a_team_that_does_not_exist(api, team):
    response = api.get("/api/v1/runs", HTTP_X_TEAM=team)

    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"
    assert api.get("/api/v1/runs", HTTP_X_TEAM="no-such-team").json()["code"] == "not_found"


# --- paging -------------------------------------------------------------------------------------------------

BEYOND_BIGINT = 2**63  # one more than PostgreSQL's bigint and SQLite's integer hold


LISTS = [
    "/api/v1/runs",
    "/api/v1/schedules",
    "/api/v1/schedules/{schedule}/fires",
    "/api/v1/digests/{digest}/deliveries",
]


@pytest.fixture
def one_of_each(staff_user):
    """One row in each list: an empty list answers without querying, so the limit would never reach the database."""
    schedule = make_schedule(name="existing")
    digest = make_digest(name="existing")
    run_services.run_create(agent_type="pass", input={}, created_by=staff_user)
    ScheduleFire.objects.create(schedule=schedule, intended_at=timezone.now(), status=FireStatus.SKIPPED_MISSED)
    digest_close(subscription_id=digest.pk, now=timezone.now())
    return {"schedule": schedule.pk, "digest": digest.pk}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"limit={BEYOND_BIGINT}", "limit"),
        (f"limit={MAX_PAGE_SIZE + 1}", "limit"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=1.5", "limit"),
        (f"limit=10&offset={BEYOND_BIGINT}", "offset"),
        ("offset=-1", "offset"),
    ],
)
@pytest.mark.parametrize("path", LISTS)
def test_limit_or_offset_out_of_range__a_400_naming_it_not_a_500(staff_api, one_of_each, path, query, field):
    response = staff_api.get(f"{path.format(**one_of_each)}?{query}")

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert list(body["errors"]) == [field]


@pytest.mark.parametrize(
    ("query", "results"), [(f"limit={MAX_PAGE_SIZE}", 1), ("", 1), (f"limit=1&offset={BEYOND_BIGINT - 1}", 0)]
)
@pytest.mark.parametrize("path", LISTS)
def test_limit_and_offset_in_range__a_page(staff_api, one_of_each, path, query, results):
    response = staff_api.get(f"{path.format(**one_of_each)}?{query}")

    assert response.status_code == 200, response.content
    page = response.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 1
    assert len(page["results"]) == results


def test_every_paginated_list_caps_its_page_size():
    """A list view left on DRF's default pagination (no max_limit) would take ?limit= past the databases' range."""

    def views(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from views(pattern.url_patterns)
            else:  # a view, or a URL whose methods are each their own view (agentrunner.api.operations)
                callbacks = getattr(pattern.callback, "schema_operations", {}).values() or [pattern.callback]
                yield from (c.cls for c in callbacks if getattr(c, "cls", None) is not None)

    paginated = [v for v in views(get_resolver().url_patterns) if getattr(v, "pagination_class", None) is not None]
    assert paginated, "no paginated view found: the walk of the URLconf is broken"
    for view in paginated:
        assert issubclass(view.pagination_class, LimitOffsetPagination), f"{view.__name__} pages its own way"


# --- a NUL in the URL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/admin/runs/run/?status=%00",  # an admin list's filter: was a 500
        "/admin/schedules/schedulefire/?status=a%00b",
        "/admin/django_q/success/%00/change/",  # an object id (django-q2's text keys): was a 500
    ],
)
def test_a_nul_in_the_url__is_a_400_before_any_lookup(admin_client, url):
    admin_client.raise_request_exception = False

    response = admin_client.get(url)

    assert response.status_code == 400
    assert "NUL" in response.content.decode()


def test_a_nul_in_an_api_url__is_a_400_in_the_apis_shape(api):
    response = api.get("/api/v1/runs?status=%00")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_request" and "NUL" in response.json()["detail"]
