from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from django_q.models import Schedule as QSchedule

from digests import services
from digests.exceptions import DigestInvalid
from digests.models import DeliveryStatus, DigestDelivery, DigestSubscription
from runs.models import RunStatus
from tests.conftest import team_named
from tests.digests.factories import PERIOD_END, digest, finished_run
from tests.flows.factories import flow
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

NOW = PERIOD_END + timedelta(seconds=2)


def close(d, now=NOW):
    return services.digest_period_close(subscription_id=d.pk, now=now)


def test_period_close__claims_one_delivery_per_period():
    d = digest(period="daily", send_at="08:00")
    first = close(d)
    assert first.period_end == PERIOD_END and first.status == DeliveryStatus.PENDING
    assert close(d) is None
    assert close(d, now=NOW + timedelta(hours=1)) is None  # a late duplicate fire of the same period
    assert DigestDelivery.objects.count() == 1


def test_period_close__the_next_period_starts_where_the_last_ended_even_after_downtime():
    d = digest(period="daily", send_at="08:00")
    close(d)
    # Workers were down for two days: one delivery covers the whole gap.
    later = close(d, now=NOW + timedelta(days=2))
    assert (later.period_start, later.period_end) == (PERIOD_END, PERIOD_END + timedelta(days=2))


def test_period_close__includes_the_periods_runs_of_its_source_only():
    d = digest(period="daily", send_at="08:00")
    inside = finished_run(result={"score": 1})
    finished_run(result={"score": 2}, at=PERIOD_END + timedelta(minutes=1))  # next period
    finished_run(result={"score": 3}, agent="wait")  # another agent
    finished_run(result={"score": 4}, status=RunStatus.CANCELLED)
    assert close(d).run_ids == [str(inside.pk)]


def test_delivery_send__mails_both_parts_top_n_in_order_with_admin_links(mail_to_smtp):
    d = digest(period="daily", send_at="08:00", limit=5)
    runs = [finished_run(result={"score": s, "claim": f"C-{s}"}) for s in [3, 9, 1, 7, 5, 8, 2]]
    failed = finished_run(status=RunStatus.FAILED, error="policy number missing")
    delivery = close(d)
    assert services.delivery_send(delivery_id=delivery.pk) == DeliveryStatus.SENT
    [message] = mail_to_smtp.messages
    assert sorted(mail_to_smtp.recipients[0]) == ["lead@example.com", "ops@example.com"]
    assert message["Message-ID"] == delivery.message_id
    assert message["Subject"] == "Top claims: top 5 of 2026-11-20 08:00 to 2026-11-21 08:00 UTC (1 failed)"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    by_score = {r.result["score"]: r for r in runs}
    positions = [text.index(f"score = {s} ") for s in (9, 8, 7, 5, 3)]
    assert positions == sorted(positions) and "score = 2 " not in text
    for part in (text, html):
        assert f"https://runner.example.com/admin/runs/run/{by_score[9].pk}/change/" in part
        assert f"https://runner.example.com/admin/runs/run/{failed.pk}/change/" in part
        assert "policy number missing" in part
    delivery.refresh_from_db()
    assert delivery.sent_at and delivery.attempts == 1 and delivery.history[-1]["outcome"] == "sent"


def test_delivery_send__a_duplicate_task_sends_nothing(mail_to_smtp):
    delivery = close(digest())
    services.delivery_send(delivery_id=delivery.pk)
    assert services.delivery_send(delivery_id=delivery.pk) is None
    assert len(mail_to_smtp.messages) == 1


def test_delivery_send__a_transient_smtp_failure_is_retried_with_backoff_and_recorded(mail_to_smtp, settings):
    settings.DIGEST_RETRY_BACKOFF_SECONDS = 30
    mail_to_smtp.fail_next = 1
    delivery = close(digest())
    assert services.delivery_send(delivery_id=delivery.pk) == DeliveryStatus.RETRYING
    delivery.refresh_from_db()
    assert "451" in delivery.error and delivery.attempts == 1
    assert timedelta(seconds=25) < delivery.next_attempt_at - timezone.now() <= timedelta(seconds=30)
    assert services.delivery_send(delivery_id=delivery.pk) is None  # not due yet
    OrmQ.objects.all().delete()
    assert services.deliveries_dispatch_due(now=delivery.next_attempt_at) == 1
    assert OrmQ.objects.count() == 1  # the send task, handed to the workers
    assert services.delivery_send(delivery_id=delivery.pk) == DeliveryStatus.SENT
    delivery.refresh_from_db()
    assert [h["outcome"] for h in delivery.history] == ["error", "sent"] and delivery.attempts == 2
    assert len(mail_to_smtp.messages) == 1


def test_delivery_send__a_permanent_smtp_failure_fails_at_once(mail_to_smtp):
    mail_to_smtp.fail_next, mail_to_smtp.fail_reply = 1, "550 5.1.1 No such mailbox"
    delivery = close(digest())
    assert services.delivery_send(delivery_id=delivery.pk) == DeliveryStatus.FAILED


def test_delivery_send__a_name_with_a_line_break_saved_before_names_were_checked_fails_at_once(mail_to_smtp):
    d = digest()
    DigestSubscription.objects.filter(pk=d.pk).update(name="Top claims\r\nBcc: spy@example.com")
    delivery = close(d)

    assert services.delivery_send(delivery_id=delivery.pk) == DeliveryStatus.FAILED

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and "BadHeaderError" in delivery.error  # not stuck in sending
    assert mail_to_smtp.messages == []


def test_digest_create__a_name_with_control_characters_is_refused():
    with pytest.raises(DigestInvalid) as refused:
        digest(name="Top claims\r\nBcc: spy@example.com")
    assert "control characters" in refused.value.errors["name"][0]
    assert not DigestSubscription.objects.exists()


def test_delivery_send__gives_up_after_the_last_attempt(mail_to_smtp, settings):
    settings.DIGEST_SEND_MAX_ATTEMPTS = 2
    mail_to_smtp.fail_next = 5
    delivery = close(digest())
    services.delivery_send(delivery_id=delivery.pk)
    DigestDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert services.delivery_send(delivery_id=delivery.pk) == DeliveryStatus.FAILED


def test_delivery_resend__from_sending_mails_again_with_the_same_message_id(
    mail_to_smtp, django_capture_on_commit_callbacks
):
    delivery = close(digest())
    DigestDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.SENDING, sending_started_at=timezone.now() - timedelta(hours=1)
    )
    delivery.refresh_from_db()
    services.delivery_resend(delivery=delivery, by="staff")
    services.delivery_send(delivery_id=delivery.pk)
    assert mail_to_smtp.messages[0]["Message-ID"] == delivery.message_id


def test_delivery_mark_sent__only_from_sending_or_failed():
    delivery = close(digest())
    with pytest.raises(services.DeliveryStateConflict):
        services.delivery_mark_sent(delivery=delivery)
    DigestDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.SENDING, sending_started_at=timezone.now()
    )
    delivery.refresh_from_db()
    with pytest.raises(services.DeliveryStateConflict, match="right now"):
        services.delivery_mark_sent(delivery=delivery)
    DigestDelivery.objects.filter(pk=delivery.pk).update(sending_started_at=timezone.now() - timedelta(hours=1))
    delivery.refresh_from_db()
    assert services.delivery_mark_sent(delivery=delivery, by="staff").status == DeliveryStatus.SENT


def test_delivery_is_stuck__a_sending_delivery_older_than_any_smtp_conversation():
    delivery = close(digest())
    DigestDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.SENDING, sending_started_at=timezone.now() - timedelta(hours=1)
    )
    delivery.refresh_from_db()
    assert services.delivery_is_stuck(delivery)


def test_skip_empty__records_the_period_without_mailing():
    delivery = close(digest(skip_empty=True))
    assert delivery.status == DeliveryStatus.EMPTY and not OrmQ.objects.exists()


def test_message_id__deterministic_per_digest_and_period():
    d = digest()
    first = close(d)
    DigestDelivery.objects.all().delete()
    assert close(d).message_id == first.message_id


def test_after_run__one_delivery_per_finished_scheduled_run():
    s = schedule()
    d = digest(name="Each run", schedule=s, period="after_run")
    done = finished_run(result={"score": 5}, schedule=s, scheduled_for=PERIOD_END, at=timezone.now())
    finished_run(result={"score": 6}, at=timezone.now())  # not from the schedule
    assert services.digest_after_run_claims() == 1
    assert services.digest_after_run_claims() == 0
    delivery = DigestDelivery.objects.get()
    assert (delivery.subscription_id, delivery.run_id, delivery.run_ids) == (d.pk, done.pk, [str(done.pk)])


def test_digest_create__reports_every_problem():
    with pytest.raises(services.DigestInvalid) as caught:
        services.digest_create(
            name="x", recipients="not-an-email", agent_type="pass", period="after_run", timezone="X/Y"
        )
    assert {"recipients", "period", "timezone"} <= set(caught.value.errors)


def test_digests_repair__recreates_a_row_deleted_by_hand():
    d = digest(period="weekly", weekday=1, send_at="09:30")
    QSchedule.objects.all().delete()
    assert services.digests_repair() == 1
    d.refresh_from_db()
    assert QSchedule.objects.get(pk=d.q_schedule_id).cron == "30 9 * * 1"


def test_delivery_send__an_unranked_digest_says_latest_results_not_top(mail_to_smtp):
    d = digest(name="Claims today", period="daily", send_at="08:00", rank_by="")
    finished_run(result={"claim": "C-1"})
    assert services.delivery_send(delivery_id=close(d).pk) == DeliveryStatus.SENT
    [message] = mail_to_smtp.messages
    assert message["Subject"] == "Claims today: 1 latest result, 2026-11-20 08:00 to 2026-11-21 08:00 UTC"
    assert "The latest 1 result:" in message.get_body(("plain",)).get_content()
    assert "The latest 1 result</h2>" in message.get_body(("html",)).get_content()


# --- teams ------------------------------------------------------------------------------


def test_period_close__an_agent_digest_ranks_only_its_teams_runs():
    other = team_named("other")
    ours = digest(name="Ours", period="daily", send_at="08:00")
    theirs = digest(name="Theirs", period="daily", send_at="08:00", team=other)
    our_run = finished_run(result={"score": 1})
    their_run = finished_run(result={"score": 9}, team=other)

    ours_delivery, theirs_delivery = close(ours), close(theirs)

    assert ours_delivery.run_ids == [str(our_run.pk)] and theirs_delivery.run_ids == [str(their_run.pk)]
    content = services.delivery_content(delivery=ours_delivery)
    assert str(their_run.pk) not in content.text and "score = 1" in content.text


def test_delivery_content__reads_only_runs_of_the_digests_team():
    d = digest(period="daily", send_at="08:00")
    delivery = close(d)
    intruder = finished_run(result={"score": 7}, team=team_named("other"))
    DigestDelivery.objects.filter(pk=delivery.pk).update(run_ids=[str(intruder.pk)])
    delivery.refresh_from_db()

    assert "score = 7" not in services.delivery_content(delivery=delivery).text


def test_after_run__claims_only_runs_of_the_digests_team():
    s = schedule()
    digest(name="Each run", schedule=s, period="after_run")
    done = finished_run(result={"score": 5}, schedule=s, scheduled_for=PERIOD_END, at=timezone.now())
    # A run pointing at the schedule but of another team (impossible through the services) is not mailed.
    finished_run(result={"score": 6}, schedule=s, team=team_named("other"), at=timezone.now())

    assert services.digest_after_run_claims() == 1
    assert DigestDelivery.objects.get().run_id == done.pk


def test_digest_create__a_name_is_unique_in_its_team_only():
    other = team_named("other")
    digest(name="Top claims")
    assert digest(name="Top claims", team=other).team_id == other.pk

    with pytest.raises(DigestInvalid) as raised:
        digest(name="Top claims", team=other)

    assert raised.value.errors == {"name": ["A digest named 'Top claims' already exists in this team."]}


def test_digest_create_and_update__another_teams_flow_or_schedule_is_invalid_as_one_that_does_not_exist():
    other = team_named("other")
    their_flow, their_schedule = flow(slug="theirs", team=other), schedule(name="Theirs", team=other)

    with pytest.raises(DigestInvalid) as raised:
        digest(name="On their flow", flow=their_flow)
    assert raised.value.errors == {"flow": ["No flow with slug 'theirs'."]}
    with pytest.raises(DigestInvalid) as raised:
        digest(name="On their schedule", schedule=their_schedule)
    assert raised.value.errors == {"schedule": [f"No schedule with id {their_schedule.pk}."]}
    ours = digest(name="Ours")
    with pytest.raises(DigestInvalid):
        services.digest_update(subscription=ours, schedule=their_schedule, period="after_run")
    ours.refresh_from_db()
    assert ours.schedule_id is None and ours.agent_type == "pass"
    assert digest(name="Theirs", flow=their_flow, team=other).flow_id == their_flow.pk
