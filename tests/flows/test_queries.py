"""The flows lists and pages: as many queries with three times the flows or versions, and no write on a GET."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from flows import services
from flows.models import Flow
from runs import services as run_services
from tests.conftest import client_for
from tests.flows.factories import chain, flow

pytestmark = pytest.mark.django_db

ROWS = 3  # the small page has ROWS flows (or versions), the large one 3 * ROWS
WRITES = ("INSERT", "UPDATE", "DELETE")
FLOW_LIST = reverse("admin:flows_flow_changelist")


def sql_of(client, url) -> list[str]:
    """The statements a GET of `url` sends (the page must open)."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.content[:500])
    return [q["sql"] for q in queries.captured_queries]


def assert_flat(client, url, *, grow, label: str) -> None:
    """The page sends as many queries after `grow()` tripled its rows as before."""
    client.get(url)  # warm the per-process caches (content types, sites) before counting
    small = sql_of(client, url)
    grow()
    large = sql_of(client, url)
    print(f"{label}: {len(small)} queries small, {len(large)} large")  # noqa: T201 (shown with -s)
    assert len(large) == len(small), "\n".join(large)


def add_flows(count: int, *, prefix: str, user) -> None:
    """`count` flows of two versions each, saved by `user`, each version with a run."""
    for i in range(count):
        stored = flow(slug=f"{prefix}-{i}", owner=user)
        services.flow_update(flow=stored, user=user, definition=chain(("a", "pass", {}), ("b", "pass", {})))
        for version in stored.versions.all():
            run_services.flow_run_create(version=version, input={})


def add_versions(stored: Flow, count: int, *, user) -> None:
    """`count` more versions of `stored`, each a changed definition with a run."""
    start = stored.versions.count()
    for i in range(start, start + count):
        services.flow_update(flow=stored, user=user, definition=chain(("a", "pass", {"n": i})))
        run_services.flow_run_create(version=stored.current_version, input={})


@pytest.fixture
def viewer(owner):
    """A member of the default team (a runner), who reads its flows."""
    return owner


# --- the API ---------------------------------------------------------------------------------------------------


def test_api_flow_list__queries_do_not_grow_with_flows(viewer):
    api = client_for(viewer)
    add_flows(ROWS, prefix="small", user=viewer)

    assert_flat(api, "/api/v1/flows", grow=lambda: add_flows(2 * ROWS, prefix="large", user=viewer), label="flows")
    assert api.get("/api/v1/flows").json()["count"] == 3 * ROWS


def test_api_flow_versions__queries_do_not_grow_with_versions(viewer):
    api = client_for(viewer)
    stored = flow(slug="demo", owner=viewer)
    add_versions(stored, ROWS - 1, user=viewer)
    url = "/api/v1/flows/demo/versions"

    assert_flat(api, url, grow=lambda: add_versions(stored, 2 * ROWS, user=viewer), label="versions")
    assert api.get(url).json()["count"] == 3 * ROWS


# --- the admin -------------------------------------------------------------------------------------------------


def test_admin_flow_list__queries_do_not_grow_with_flows(admin_client, admin_user):
    add_flows(ROWS, prefix="small", user=admin_user)

    assert_flat(
        admin_client, FLOW_LIST, grow=lambda: add_flows(2 * ROWS, prefix="large", user=admin_user), label="admin list"
    )
    assert admin_client.get(FLOW_LIST).context["cl"].result_count == 3 * ROWS


def test_admin_flow_page__queries_do_not_grow_with_versions(admin_client, admin_user):
    stored = flow(slug="demo", owner=admin_user)
    add_versions(stored, ROWS - 1, user=admin_user)
    url = reverse("admin:flows_flow_change", args=[stored.pk])

    assert_flat(admin_client, url, grow=lambda: add_versions(stored, 2 * ROWS, user=admin_user), label="admin page")
    content = admin_client.get(url).content.decode()
    assert f"<strong>v{3 * ROWS}</strong>" in content and "First version." in content


# --- no write on a GET -----------------------------------------------------------------------------------------


def test_get__writes_nothing_in_the_api_or_the_admin(admin_client, admin_user):
    add_flows(2, prefix="f", user=admin_user)
    stored = Flow.objects.get(slug="f-0")
    api = client_for(admin_user)
    urls = {
        api: ["/api/v1/flows", "/api/v1/flows/f-0", "/api/v1/flows/f-0/versions"],
        admin_client: [
            FLOW_LIST,
            reverse("admin:flows_flow_add"),
            reverse("admin:flows_flow_change", args=[stored.pk]),
            reverse("admin:flows_flow_run", args=[stored.pk]),
        ],
    }
    for client, paths in urls.items():
        for url in paths:
            writes = [sql for sql in sql_of(client, url) if sql.lstrip().upper().startswith(WRITES)]
            assert writes == [], (url, writes)
