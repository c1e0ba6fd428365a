"""The digest admin (saved through the services, preview, send now) and the delivery admin (decisions)."""

import html
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule as QSchedule

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from digests import services
from digests.models import DeliveryStatus, DigestDelivery, DigestSubscription
from runs.models import Run, RunStatus
from tests.conftest import join
from tests.digests.factories import digest as digest_factory
from tests.flows.factories import flow

pytestmark = pytest.mark.django_db

DIGEST_LIST = reverse("admin:digests_digestsubscription_changelist")
DIGEST_ADD = reverse("admin:digests_digestsubscription_add")
DELIVERY_LIST = reverse("admin:digests_digestdelivery_changelist")
NEEDS_DECISION = DELIVERY_LIST + "?decision=needed"


def change_url(digest) -> str:
    return reverse("admin:digests_digestsubscription_change", args=[digest.pk])


def delivery_url(delivery, view="change") -> str:
    return reverse(f"admin:digests_digestdelivery_{view}", args=[delivery.pk])


def make_digest(name="Top claims", **fields) -> DigestSubscription:
    return digest_factory(name, **{"recipients": "a@example.com", "timezone": "Europe/Paris", "rank_by": "", **fields})


def form_data(**fields) -> dict:
    data = {
        "name": "Top claims",
        "enabled": "on",
        "recipients": "claims@example.com\nlead@example.com",
        "flow": "",
        "agent_type": "pass",
        "schedule": "",
        "period": "daily",
        "send_at": "08:00",
        "weekday": "1",
        "timezone": "Europe/Paris",
        "items_path": "",
        "rank_by": "score",
        "rank_order": "desc",
        "limit": "5",
        "include_failures": "on",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def frame_document(page: str) -> str:
    """The document the email frame shows: its srcdoc attribute, unescaped as the browser does."""
    attribute = page.split('srcdoc="', 1)[1].split('"', 1)[0]
    return html.unescape(attribute)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def delivery(digest, status, *, key=None, started_ago=None, **fields) -> DigestDelivery:
    now = timezone.now()
    return DigestDelivery.objects.create(
        subscription=digest,
        period_key=key or f"{status}-{DigestDelivery.objects.count()}",
        period_start=now - timedelta(days=1),
        period_end=now - timedelta(minutes=DigestDelivery.objects.count()),
        status=status,
        message_id=f"<digest-{digest.pk}-{status}@example.com>",
        recipients=digest.recipients,
        subject=f"{digest.name}: test",
        sending_started_at=now - started_ago if started_ago is not None else None,
        **fields,
    )


def stuck_age(settings) -> timedelta:
    return timedelta(seconds=settings.EMAIL_TIMEOUT * 2 + 31 + 60)


def finished_run(agent_type, *, score, at) -> Run:
    return Run.objects.create(
        agent_type=agent_type,
        status=RunStatus.COMPLETED,
        team=team_default(),
        result={"score": score, "claim": f"C-{score}"},
        finished_at=at,
    )


# --- digest list and form --------------------------------------------------------------


def test_digest_list_shows_source_period_in_words_recipients_and_last_delivery(admin_client, settings):
    digest = make_digest(recipients="a@example.com, b@example.com", send_at="07:30")
    delivery(digest, DeliveryStatus.SENT, sent_at=timezone.now())
    weekly = make_digest("Weekly", period="weekly", weekday=5, timezone="UTC")
    delivery(weekly, DeliveryStatus.FAILED, key="f")
    response = admin_client.get(DIGEST_LIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert "agent pass" in page
    assert "daily at 07:30 Europe/Paris" in page
    assert "weekly on Friday at 08:00 UTC" in page
    assert ">2<" in page  # recipients
    assert "Sent" in page and "Failed" in page
    assert "1 delivery needs a decision" in page


def test_adding_a_digest_goes_through_the_service(admin_client, admin_user):
    response = admin_client.post(DIGEST_ADD, form_data())
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    digest = DigestSubscription.objects.get()
    # digest_create normalises recipients, records the author and creates django-q2's row.
    assert digest.recipients == "claims@example.com, lead@example.com"
    assert digest.created_by == admin_user
    assert QSchedule.objects.filter(pk=digest.q_schedule_id, func=services.CLOSE_TASK).exists()


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"period": "after_run"}, "period", "needs a schedule"),
        ({"recipients": "claims@example.com\nnot-an-address"}, "recipients", "'not-an-address' is not an email"),
        ({"recipients": ""}, "recipients", "required"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
        ({"agent_type": ""}, None, "exactly one source"),
        ({"flow": "FLOW"}, None, "exactly one source"),
        ({"limit": "0"}, "limit", "greater than or equal to 1"),
        ({"send_at": "8h"}, "send_at", "valid time"),
        ({"name": "Top claims\r\nBcc: spy@example.com"}, "name", "control characters"),
        ({"name": "Top\tclaims"}, "name", "control characters"),
        ({"recipients": "claims@example.com\rBcc: spy@example.com"}, "recipients", "is not an email"),
    ],
)
def test_an_invalid_digest_shows_field_errors_and_saves_nothing(admin_client, fields, field, text):
    source = flow(slug="claims")
    fields = {k: (source.pk if v == "FLOW" else v) for k, v in fields.items()}
    response = admin_client.post(DIGEST_ADD, form_data(**fields))
    assert response.status_code == 200
    form = response.context["adminform"].form
    errors = form.errors.get(field or "__all__", [])
    assert any(text in e for e in errors), form.errors
    assert "Constraint" not in str(form.errors)  # the model's constraints are said in words
    assert not DigestSubscription.objects.exists()


def test_changing_a_digest_goes_through_the_service(admin_client):
    digest = make_digest()
    assert admin_client.get(change_url(digest)).status_code == 200
    response = admin_client.post(change_url(digest), form_data(enabled=None, name="Renamed", send_at="09:15"))
    assert response.status_code == 302
    digest.refresh_from_db()
    assert digest.name == "Renamed" and not digest.enabled and digest.send_at.strftime("%H:%M") == "09:15"
    assert digest.q_schedule_id is None and not QSchedule.objects.exists()  # paused: digest_sync removed it


def test_a_refused_change_shows_its_errors_and_the_send_question_about_what_is_saved(admin_client):
    digest = make_digest()

    # The page's "Send now" question read the refused time zone from the form: a 500.
    response = admin_client.post(change_url(digest), form_data(timezone="Mars/Olympus"))

    assert response.status_code == 200
    assert "timezone" in response.context["adminform"].form.errors
    assert "Mars" not in response.context["send_confirm"]
    digest.refresh_from_db()
    assert digest.timezone == "Europe/Paris"


def test_a_daily_digest_without_a_time_is_a_form_error(admin_client):
    digest = make_digest()

    # An unknown period kept the saved one (daily), which then had no time to send at: a 500.
    response = admin_client.post(change_url(digest), form_data(send_at="", period="nonsense"))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "period" in errors and "time of day" in " ".join(errors["send_at"]), errors


def test_a_name_taken_meanwhile_is_a_message_not_an_error(admin_client, monkeypatch):
    digest = make_digest()

    def taken(**kwargs):
        raise services.DigestInvalid({"name": ["A digest named 'Top claims' already exists."]})

    monkeypatch.setattr(services, "digest_update", taken)
    response = admin_client.post(change_url(digest), form_data(), follow=True)
    assert response.status_code == 200
    assert any("Nothing was saved" in m for m in messages_of(response))


def test_deleting_a_digest_goes_through_the_service(admin_client):
    digest = make_digest()
    assert QSchedule.objects.exists()
    response = admin_client.post(reverse("admin:digests_digestsubscription_delete", args=[digest.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not DigestSubscription.objects.exists() and not QSchedule.objects.exists()


def test_digest_page_shows_next_send_times_and_delivery_history(admin_client, settings):
    digest = make_digest(send_at="08:00")
    sent = delivery(digest, DeliveryStatus.SENT, run_ids=["a", "b"], attempts=1, sent_at=timezone.now())
    failed = delivery(digest, DeliveryStatus.FAILED, attempts=5, error="SMTPRecipientsRefused: 550 no such user")
    response = admin_client.get(change_url(digest))
    page = response.content.decode()
    assert "08:00 Europe/Paris" in page
    assert delivery_url(sent) in page and delivery_url(failed) in page
    assert "550 no such user" in page
    assert reverse("admin:digests_digestsubscription_preview", args=[digest.pk]) in page
    assert reverse("admin:digests_digestsubscription_send", args=[digest.pk]) in page


# --- preview and send now -----------------------------------------------------------------


def test_preview_renders_the_ranked_runs_so_far_and_records_nothing(admin_client):
    digest = make_digest(rank_by="score", limit=2)
    start = services.digest_timing(digest).latest_at_or_before(timezone.now())
    step = (timezone.now() - start) / 4
    for i, score in enumerate([0.2, 0.9, 0.6]):
        finished_run("pass", score=score, at=start + step * (i + 1))
    finished_run("pass", score=0.99, at=start - timedelta(minutes=1))  # the previous period
    response = admin_client.get(reverse("admin:digests_digestsubscription_preview", args=[digest.pk]))
    assert response.status_code == 200
    content = response.context["content"]
    assert response.context["preview"].run_count == 3
    for part in (content.text, content.html):
        assert part.index("0.9") < part.index("0.6") and "0.2" not in part and "0.99" not in part
    page = response.content.decode()
    assert content.subject in page and 'sandbox="' in page
    assert content.html in frame_document(page)
    assert not DigestDelivery.objects.exists()


def test_send_now_claims_one_delivery_and_says_so(admin_client):
    digest = make_digest()
    finished_run("pass", score=1, at=timezone.now() - timedelta(microseconds=1))
    send = reverse("admin:digests_digestsubscription_send", args=[digest.pk])
    assert admin_client.get(send).status_code == 405
    response = admin_client.post(send, follow=True)
    assert response.status_code == 200
    created = DigestDelivery.objects.get()
    assert created.manual and created.status == DeliveryStatus.PENDING and len(created.run_ids) == 1
    assert any("Sending the digest" in m for m in messages_of(response))


def test_send_now_of_an_empty_period_with_skip_empty_records_it_unmailed(admin_client):
    digest = make_digest(skip_empty=True)
    response = admin_client.post(reverse("admin:digests_digestsubscription_send", args=[digest.pk]), follow=True)
    assert DigestDelivery.objects.get().status == DeliveryStatus.EMPTY
    assert any("not mailed" in m for m in messages_of(response))


# --- deliveries --------------------------------------------------------------------------


def test_needs_a_decision_lists_stuck_and_failed_deliveries_only(admin_client, settings):
    digest = make_digest()
    stuck = delivery(digest, DeliveryStatus.SENDING, started_ago=stuck_age(settings))
    failed = delivery(digest, DeliveryStatus.FAILED)
    fresh = delivery(digest, DeliveryStatus.SENDING, started_ago=timedelta(seconds=1))
    sent = delivery(digest, DeliveryStatus.SENT)
    listing = admin_client.get(DELIVERY_LIST)
    assert "2 deliveries need a decision" in listing.content.decode()
    response = admin_client.get(NEEDS_DECISION)
    assert response.status_code == 200
    shown = {d.pk for d in response.context["cl"].result_list}
    assert shown == {stuck.pk, failed.pk}
    assert fresh.pk not in shown and sent.pk not in shown
    assert "Stuck while sending" in response.content.decode()


def test_stuck_delivery_page_explains_and_offers_both_decisions(admin_client, settings):
    digest = make_digest()
    run = finished_run("pass", score=3, at=timezone.now() - timedelta(hours=1))
    stuck = delivery(
        digest,
        DeliveryStatus.SENDING,
        started_ago=stuck_age(settings),
        run_ids=[str(run.pk)],
        history=[{"at": timezone.now().isoformat(), "attempt": 1, "outcome": "error", "error": "timed out"}],
    )
    response = admin_client.get(delivery_url(stuck))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Needs a decision: stuck while sending" in page
    assert stuck.message_id.replace("<", "&lt;").replace(">", "&gt;") in page
    assert delivery_url(stuck, "resend") in page and delivery_url(stuck, "mark_sent") in page
    assert "same Message-ID" in page and "twice" in page  # the confirmation says the risk
    assert reverse("admin:runs_run_change", args=[run.pk]) in page
    assert "timed out" in page
    assert delivery_url(stuck, "email") in page


def test_fresh_sending_delivery_offers_no_decision_and_refuses_one(admin_client):
    fresh = delivery(make_digest(), DeliveryStatus.SENDING, started_ago=timedelta(seconds=1))
    page = admin_client.get(delivery_url(fresh)).content.decode()
    assert "Needs a decision" not in page
    assert delivery_url(fresh, "resend") not in page and delivery_url(fresh, "mark_sent") not in page
    response = admin_client.post(delivery_url(fresh, "resend"), follow=True)
    assert any("being sent right now" in m for m in messages_of(response))
    fresh.refresh_from_db()
    assert fresh.status == DeliveryStatus.SENDING and fresh.history == []


def test_delivery_email_page_renders_the_email(admin_client):
    digest = make_digest(rank_by="score")
    run = finished_run("pass", score=0.77, at=timezone.now() - timedelta(hours=1))
    sent = delivery(digest, DeliveryStatus.SENT, run_ids=[str(run.pk)], sent_at=timezone.now())
    response = admin_client.get(delivery_url(sent, "email"))
    assert response.status_code == 200
    content = response.context["content"]
    assert "0.77" in content.text and "0.77" in content.html
    page = response.content.decode()
    assert sent.subject in page and content.html in frame_document(page)


def test_resend_and_mark_sent_buttons_call_the_services(admin_client, settings):
    digest = make_digest()
    failed = delivery(digest, DeliveryStatus.FAILED)
    assert admin_client.get(delivery_url(failed, "resend")).status_code == 405
    response = admin_client.post(delivery_url(failed, "resend"), follow=True)
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.PENDING and failed.history[-1]["by"] == "admin"
    assert any("Resend requested" in m for m in messages_of(response))
    stuck = delivery(digest, DeliveryStatus.SENDING, started_ago=stuck_age(settings))
    admin_client.post(delivery_url(stuck, "mark_sent"))
    stuck.refresh_from_db()
    assert stuck.status == DeliveryStatus.SENT and stuck.history[-1]["outcome"] == "marked sent"
    # Marking a sent delivery sent again is refused by the service, shown as a message.
    response = admin_client.post(delivery_url(stuck, "mark_sent"), follow=True)
    assert any("Nothing was done" in m for m in messages_of(response))


def test_list_actions_ask_first_then_decide_only_where_allowed(admin_client, settings):
    digest = make_digest()
    stuck = delivery(digest, DeliveryStatus.SENDING, started_ago=stuck_age(settings))
    failed = delivery(digest, DeliveryStatus.FAILED)
    fresh = delivery(digest, DeliveryStatus.SENDING, started_ago=timedelta(seconds=1))
    pending = delivery(digest, DeliveryStatus.PENDING)
    selected = [stuck.pk, failed.pk, fresh.pk, pending.pk]
    data = {"action": "mark_sent_selected", "_selected_action": selected}
    confirm = admin_client.post(DELIVERY_LIST, data)
    assert confirm.status_code == 200
    assert "Mark these digests as sent?" in confirm.content.decode()
    assert DigestDelivery.objects.filter(status=DeliveryStatus.SENT).count() == 0  # nothing yet
    response = admin_client.post(DELIVERY_LIST, {**data, "post": "yes"}, follow=True)
    statuses = dict(DigestDelivery.objects.values_list("pk", "status"))
    assert statuses == {
        stuck.pk: DeliveryStatus.SENT,
        failed.pk: DeliveryStatus.SENT,
        fresh.pk: DeliveryStatus.SENDING,
        pending.pk: DeliveryStatus.PENDING,
    }
    assert any("2 deliveries marked as sent" in m for m in messages_of(response))
    assert any("2 skipped" in m for m in messages_of(response))
    admin_client.post(DELIVERY_LIST, {"action": "resend_selected", "_selected_action": [stuck.pk], "post": "yes"})
    stuck.refresh_from_db()
    assert stuck.status == DeliveryStatus.PENDING


def test_deliveries_cannot_be_added_edited_or_deleted(admin_client):
    sent = delivery(make_digest(), DeliveryStatus.SENT)
    assert admin_client.get(reverse("admin:digests_digestdelivery_add")).status_code == 403
    assert admin_client.post(delivery_url(sent), {"status": "failed"}).status_code == 403
    assert admin_client.get(reverse("admin:digests_digestdelivery_delete", args=[sent.pk])).status_code == 403
    sent.refresh_from_db()
    assert sent.status == DeliveryStatus.SENT


def test_viewers_see_deliveries_but_cannot_decide(client, django_user_model, settings):
    viewer = django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True)
    join(viewer, Role.VIEWER)  # reads the team's digests and deliveries, decides nothing
    client.force_login(viewer)
    stuck = delivery(make_digest(), DeliveryStatus.SENDING, started_ago=stuck_age(settings))
    page = client.get(delivery_url(stuck)).content.decode()
    assert "Needs a decision" in page and delivery_url(stuck, "resend") not in page
    assert client.post(delivery_url(stuck, "resend")).status_code == 403
    assert (
        client.post(reverse("admin:digests_digestsubscription_send", args=[stuck.subscription_id])).status_code == 403
    )
    stuck.refresh_from_db()
    assert stuck.status == DeliveryStatus.SENDING and not DigestDelivery.objects.exclude(pk=stuck.pk).exists()
