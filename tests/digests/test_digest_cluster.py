"""Digests mailed by real qcluster processes to a real SMTP server on 127.0.0.1."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from django_q.models import Schedule as QSchedule
from django_q.tasks import async_task

from digests import services
from digests.models import DeliveryStatus, DigestDelivery
from runs.models import Run, RunStatus
from schedules import services as schedule_services
from schedules.timing import Timing
from tests.conftest import team_named, wait_for
from tests.digests.factories import digest, finished_run
from tests.schedules.factories import schedule

pytestmark = pytest.mark.cluster

SITE = "https://runner.example.com"
LEADS = [
    {"name": name, "score": score}
    for name, score in [("a", 3), ("b", 9), ("c", 1), ("d", 7), ("e", 5), ("f", 8), ("g", 2)]
]


def worker_env(smtp, **extra):
    return {**smtp.env, "SITE_URL": SITE, "DIGEST_RETRY_BACKOFF_SECONDS": "0.5", **extra}


def delivery_in(status, **filters):
    return DigestDelivery.objects.filter(status=status, **filters).first()


def test_digest_after_each_scheduled_run__once_both_parts_top_5_in_order_with_links(clusters, smtp):
    clusters(2, **worker_env(smtp))
    team = team_named("other")  # not the default team: the schedule's runs and the trigger stay in it
    s = schedule(interval_seconds=1, input={"leads": LEADS}, team=team)
    digest(name="Best leads", schedule=s, period="after_run", items_path="leads", rank_by="score", team=team)
    wait_for(lambda: Run.objects.filter(schedule=s).exists(), timeout=15, message="a scheduled run")
    schedule_services.schedule_update(schedule=s, enabled=False)
    runs = wait_for(
        lambda: (r := list(Run.objects.filter(schedule=s))) and all(x.status == RunStatus.COMPLETED for x in r) and r,
        timeout=15,
        message="scheduled runs completed",
    )
    wait_for(
        lambda: DigestDelivery.objects.filter(status=DeliveryStatus.SENT).count() == len(runs),
        timeout=15,
        message="one digest per run sent",
    )
    time.sleep(1.5)  # ticks of both clusters keep running: nothing more may arrive
    assert len(smtp.inbox.messages) == len(runs) == DigestDelivery.objects.count()
    by_run = {str(d.run_id): d for d in DigestDelivery.objects.all()}
    for message in smtp.inbox.messages:
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert message["Subject"].startswith("Best leads: top 5 of ")
        assert [text.index(f"score = {n} ") for n in (9, 8, 7, 5, 3)] == sorted(
            text.index(f"score = {n} ") for n in (9, 8, 7, 5, 3)
        )
        assert "score = 2 " not in text and "score = 1 " not in text
        [run_id] = [rid for rid in by_run if rid in text]
        link = f"{SITE}/admin/runs/run/{run_id}/change/"
        assert link in text and link in html
        assert message["Message-ID"] == by_run[run_id].message_id


def test_period_digest__fired_twice_by_two_clusters__one_delivery_one_email(clusters, smtp):
    d = digest(name="Daily claims", period="daily", send_at="08:00")
    end = Timing(cron="0 8 * * *").latest_at_or_before(timezone.now())
    for score in (4, 6):
        finished_run(result={"score": score}, at=end - timedelta(hours=1))
    finished_run(result={"score": 99}, at=end - timedelta(hours=1), team=team_named("other"))  # not its team's
    # The period has just ended: django-q2's row is due.
    QSchedule.objects.filter(pk=d.q_schedule_id).update(next_run=timezone.now() - timedelta(seconds=1))
    clusters(2, **worker_env(smtp))
    async_task("digests.tasks.digest_period_close", d.pk, intended_at=end.isoformat())  # a second fire
    wait_for(lambda: delivery_in(DeliveryStatus.SENT), timeout=15, message="the digest sent")
    time.sleep(2)
    assert DigestDelivery.objects.count() == 1 and len(smtp.inbox.messages) == 1
    assert len(DigestDelivery.objects.get().run_ids) == 2
    assert "score = 99" not in smtp.inbox.messages[0].get_body(("plain",)).get_content()
    assert QSchedule.objects.get(pk=d.q_schedule_id).next_run == end + timedelta(days=1)


def test_smtp_failure_is_retried_with_backoff_and_recorded(clusters, smtp):
    smtp.inbox.fail_next = 2
    clusters(1, **worker_env(smtp))
    d = digest(name="Flaky mail")
    services.digest_period_close(subscription_id=d.pk, manual=True)
    sent = wait_for(lambda: delivery_in(DeliveryStatus.SENT), timeout=20, message="sent after retries")
    assert sent.attempts == 3
    assert [h["outcome"] for h in sent.history] == ["error", "error", "sent"]
    assert "451" in sent.history[0]["error"]
    assert len(smtp.inbox.messages) == 1 and smtp.inbox.data_commands == 3


def test_worker_killed_mid_send__stays_sending_and_is_never_resent_automatically(clusters, smtp):
    smtp.inbox.hang = True
    # A short django-q2 retry, so the lost task is really delivered again during the test.
    env = worker_env(smtp, STEP_MAX_SECONDS="4", Q_RETRY="6", EMAIL_TIMEOUT="60")
    [first] = clusters(1, **env)
    d = digest(name="Killed mid-send")
    delivery = services.digest_period_close(subscription_id=d.pk, manual=True)
    assert smtp.inbox.hung.wait(15), "the worker never reached the SMTP DATA command"
    os.killpg(first.process.pid, signal.SIGKILL)
    smtp.inbox.hang = False  # anything sent from now on would be accepted (and counted)
    clusters(1, **env)
    # The killed task's broker message is delivered again after Q_RETRY and acknowledged.
    wait_for(lambda: not OrmQ.objects.exists(), timeout=30, message="the lost task re-delivered")
    time.sleep(1.5)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENDING
    assert smtp.inbox.messages == [] and DigestDelivery.objects.count() == 1
    assert services.delivery_is_stuck(delivery, now=timezone.now() + timedelta(minutes=5))
    with pytest.raises(services.DeliveryStateConflict):  # too early: it might still be mid-send
        services.delivery_resend(delivery=delivery, by="staff")
    # Minutes later a person decides to resend: one email, with the same Message-ID.
    DigestDelivery.objects.filter(pk=delivery.pk).update(sending_started_at=timezone.now() - timedelta(minutes=5))
    delivery.refresh_from_db()
    services.delivery_resend(delivery=delivery, by="staff")
    wait_for(lambda: delivery_in(DeliveryStatus.SENT), timeout=15, message="the resend")
    assert [m["Message-ID"] for m in smtp.inbox.messages] == [delivery.message_id]
