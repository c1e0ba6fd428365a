"""Every list of digests and deliveries, in the API and the admin, and the digest and delivery pages: as many
queries with three times the rows, and no write on a GET (the preview and the email pages included)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from digests.models import DeliveryStatus, DigestDelivery, DigestSubscription
from flows.models import FlowVersion
from runs.models import Run, RunStatus
from tests.digests.factories import digest as digest_factory
from tests.digests.factories import finished_run
from tests.flows.factories import flow
from tests.schedules.factories import schedule as schedule_factory

pytestmark = pytest.mark.django_db

ROWS = 3  # the small page has ROWS rows, the large one 3 * ROWS
WRITES = ("INSERT", "UPDATE", "DELETE")
DIGEST_LIST = reverse("admin:digests_digestsubscription_changelist")
DELIVERY_LIST = reverse("admin:digests_digestdelivery_changelist")
STATUSES = [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SENDING, DeliveryStatus.RETRYING]


def statements_of(client, url) -> list[str]:
    """The statements a GET of `url` sends (the page or answer must be a 200)."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return [q["sql"] for q in queries.captured_queries]


def writes(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.lstrip().upper().startswith(WRITES)]


def assert_flat(client, url, *, grow, label: str) -> None:
    """The GET sends as many queries after `grow()` tripled its rows as before, and writes nothing."""
    client.get(url)  # warm the per-process caches (content types, sites) before counting
    small = statements_of(client, url)
    grow()
    large = statements_of(client, url)
    print(f"{label}: {len(small)} queries small, {len(large)} large")  # noqa: T201 (shown with -s)
    assert len(large) == len(small), "\n".join(large)
    assert not writes(small + large)


def inline_flow_version(number: int) -> FlowVersion:
    """A version of an inline flow (POST /flow/execute): no Flow, shown by its digest."""
    return FlowVersion.objects.create(flow=None, number=1, definition={"n": number}, digest=f"{number:064x}")


def add_runs(count: int) -> list[Run]:
    """`count` finished runs: of an agent, of a stored flow, of an inline flow; completed and failed."""
    runs = []
    for i in range(count):
        kind = i % 3
        source = {"agent": "pass"}
        if kind == 1:
            source = {"agent": "", "flow_version": flow(slug=f"run-flow-{Run.objects.count()}").current_version}
        elif kind == 2:
            source = {"agent": "", "flow_version": inline_flow_version(Run.objects.count())}
        status = RunStatus.FAILED if i % 2 else RunStatus.COMPLETED
        at = timezone.now() - timedelta(minutes=i)
        runs.append(finished_run(result={"score": i}, status=status, at=at, **source))
    return runs


def add_deliveries(digest: DigestSubscription, count: int) -> None:
    """`count` deliveries of every status (a stuck `sending` one included), each with a history entry."""
    now = timezone.now()
    start = DigestDelivery.objects.filter(subscription=digest).count()
    for i in range(start, start + count):
        DigestDelivery.objects.create(
            subscription=digest,
            period_key=f"k{i}",
            period_start=now - timedelta(days=i + 1),
            period_end=now - timedelta(days=i),
            status=STATUSES[i % len(STATUSES)],
            sending_started_at=now - timedelta(hours=1),
            run_ids=["6f1c2b7e-3f0a-4d1e-9d2a-0c5e8b7a1f42"] * (i % 3),
            history=[{"at": now.isoformat(), "attempt": 1, "outcome": "error", "error": "SMTPServerDisconnected"}],
            error="SMTPServerDisconnected" if i % 2 else "",
        )


def add_digests(count: int, *, prefix: str) -> None:
    """`count` digests: of a flow, an agent, a schedule (after each run and daily), each with two deliveries."""
    for i in range(count):
        kind = i % 4
        if kind == 0:
            source = {"flow": flow(slug=f"{prefix}-flow-{i}")}
        elif kind == 1:
            source = {"agent_type": "pass", "period": "weekly", "weekday": 3}
        else:
            source = {"schedule": schedule_factory(name=f"{prefix} schedule {i}")}
            source["period"] = "after_run" if kind == 2 else "hourly"
        digest = digest_factory(f"{prefix} digest {i}", timezone="Europe/Paris", **source)
        add_deliveries(digest, 2)


def add_history(delivery: DigestDelivery, count: int) -> None:
    now = timezone.now()
    entries = [{"at": now.isoformat(), "outcome": "resend requested", "by": f"staff{i}"} for i in range(count)]
    DigestDelivery.objects.filter(pk=delivery.pk).update(history=[*delivery.history, *entries])
    delivery.refresh_from_db()


def add_covered_runs(delivery: DigestDelivery, count: int) -> None:
    ids = [str(run.pk) for run in add_runs(count)]
    DigestDelivery.objects.filter(pk=delivery.pk).update(run_ids=[*delivery.run_ids, *ids])
    delivery.refresh_from_db()


# --- the API ---------------------------------------------------------------------------------------


def test_api_digest_list__queries_do_not_grow_with_digests(staff_api):
    add_digests(ROWS, prefix="small")

    assert_flat(staff_api, "/api/v1/digests", grow=lambda: add_digests(2 * ROWS, prefix="large"), label="api list")

    body = staff_api.get("/api/v1/digests").json()
    assert body["count"] == 3 * ROWS and all(d["last_delivery"] for d in body["results"])


def test_api_deliveries__queries_do_not_grow_with_deliveries(staff_api):
    digest = digest_factory()
    add_deliveries(digest, ROWS)
    url = f"/api/v1/digests/{digest.pk}/deliveries"

    assert_flat(staff_api, url, grow=lambda: add_deliveries(digest, 2 * ROWS), label="api deliveries")

    assert staff_api.get(url).json()["count"] == 3 * ROWS


def test_api_reads_and_the_preview__write_nothing(staff_api):
    digest = digest_factory()
    add_deliveries(digest, 2)
    add_runs(3)

    for url in (f"/api/v1/digests/{digest.pk}", f"/api/v1/digests/{digest.pk}/preview"):
        assert not writes(statements_of(staff_api, url)), url


# --- the admin -------------------------------------------------------------------------------------


def test_admin_digest_list__queries_do_not_grow_with_digests(admin_client):
    add_digests(ROWS, prefix="small")

    assert_flat(admin_client, DIGEST_LIST, grow=lambda: add_digests(2 * ROWS, prefix="large"), label="digests")


def test_admin_delivery_list__queries_do_not_grow_with_deliveries(admin_client):
    add_digests(ROWS, prefix="small")

    assert_flat(admin_client, DELIVERY_LIST, grow=lambda: add_digests(2 * ROWS, prefix="large"), label="deliveries")

    needs_decision = DELIVERY_LIST + "?decision=needed"
    assert_flat(admin_client, needs_decision, grow=lambda: add_digests(2 * ROWS, prefix="more"), label="decisions")


def test_admin_digest_page__queries_do_not_grow_with_deliveries(admin_client):
    digest = digest_factory(schedule=schedule_factory(), period="daily", timezone="Europe/Paris")
    add_deliveries(digest, ROWS)
    url = reverse("admin:digests_digestsubscription_change", args=[digest.pk])

    assert_flat(admin_client, url, grow=lambda: add_deliveries(digest, 2 * ROWS), label="digest page")


def test_admin_delivery_page__queries_do_not_grow_with_runs_or_history(admin_client):
    digest = digest_factory(timezone="Europe/Paris")
    add_deliveries(digest, 1)
    delivery = DigestDelivery.objects.get()
    add_covered_runs(delivery, ROWS)
    add_history(delivery, ROWS)
    url = reverse("admin:digests_digestdelivery_change", args=[delivery.pk])

    def grow():
        add_covered_runs(delivery, 2 * ROWS)
        add_history(delivery, 2 * ROWS)

    assert_flat(admin_client, url, grow=grow, label="delivery page")

    page = admin_client.get(url).content.decode()
    assert "inline flow" in page and "run-flow-" in page and page.count("staff") >= 3 * ROWS


def test_admin_preview_and_email_pages__write_nothing(admin_client):
    digest = digest_factory()
    add_deliveries(digest, 1)
    add_runs(3)
    delivery = DigestDelivery.objects.get()

    for url in (
        reverse("admin:digests_digestsubscription_preview", args=[digest.pk]),
        reverse("admin:digests_digestdelivery_email", args=[delivery.pk]),
    ):
        assert not writes(statements_of(admin_client, url)), url
