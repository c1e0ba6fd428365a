"""The digest form shows only the fields of the chosen period, and a per-run digest's preview is its next email."""

from datetime import time, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from digests import selectors, services
from digests.models import DigestDelivery, DigestSubscription
from runs.models import RunStatus
from tests.digests.factories import digest, finished_run
from tests.digests.test_admin import form_data
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

DIGEST_ADD = reverse("admin:digests_digestsubscription_add")


def change_url(subscription) -> str:
    return reverse("admin:digests_digestsubscription_change", args=[subscription.pk])


def preview_url(subscription) -> str:
    return reverse("admin:digests_digestsubscription_preview", args=[subscription.pk])


# --- fields by period ------------------------------------------------------------------------------------------


def test_form__says_which_periods_each_time_field_is_for_and_carries_the_script(admin_client):
    page = admin_client.get(DIGEST_ADD).content.decode()

    assert 'name="period" data-digest-period' in page or "data-digest-period=" in page
    assert 'data-digest-periods="daily weekly"' in page and 'name="send_at"' in page
    assert 'data-digest-periods="weekly"' in page
    assert 'document.querySelectorAll("[data-digest-periods]")' in page


@pytest.mark.parametrize("period", ["hourly", "after_run"])
def test_fields_that_do_not_apply__are_ignored_even_when_invalid(admin_client, period):
    source = {"agent_type": "", "schedule": schedule().pk} if period == "after_run" else {}

    response = admin_client.post(DIGEST_ADD, form_data(period=period, send_at="8h", weekday="", **source))

    assert response.status_code == 302, response.context["adminform"].form.errors
    saved = DigestSubscription.objects.get()
    assert (saved.period, saved.send_at, saved.weekday) == (period, time(8, 0), 1)  # the defaults, not the post


def test_changing_to_a_period_without_a_time__keeps_the_saved_time(admin_client):
    subscription = digest(name="Top claims", send_at="07:30", period="weekly", weekday=5)

    response = admin_client.post(change_url(subscription), form_data(period="daily", send_at="09:15", weekday="2"))

    assert response.status_code == 302
    subscription.refresh_from_db()
    # Daily: the time applies and changes; the weekday does not, and keeps its saved value.
    assert (subscription.period, subscription.send_at, subscription.weekday) == ("daily", time(9, 15), 5)

    admin_client.post(change_url(subscription), form_data(period="hourly", send_at="10:45", weekday="3"))

    subscription.refresh_from_db()
    assert (subscription.period, subscription.send_at, subscription.weekday) == ("hourly", time(9, 15), 5)


@pytest.mark.parametrize(("period", "field"), [("daily", "send_at"), ("weekly", "send_at"), ("weekly", "weekday")])
def test_fields_that_apply__are_required(admin_client, period, field):
    response = admin_client.post(DIGEST_ADD, form_data(period=period, **{field: ""}))

    assert response.status_code == 200
    assert "This field is required." in response.context["adminform"].form.errors[field]
    assert not DigestSubscription.objects.exists()


# --- the preview of a per-run digest ---------------------------------------------------------------------------


def per_run_digest():
    source = schedule()
    subscription = digest(name="Each run", schedule=source, period="after_run", rank_by="score")
    # Created an hour ago: it reports the runs that finished since.
    DigestSubscription.objects.filter(pk=subscription.pk).update(created_at=timezone.now() - timedelta(hours=1))
    subscription.refresh_from_db()
    return subscription, source


def scheduled_run(source, score, *, minutes_ago):
    return finished_run(
        result={"score": score},
        schedule=source,
        scheduled_for=timezone.now(),
        at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_per_run_preview__leaves_out_a_run_already_mailed(admin_client):
    subscription, source = per_run_digest()
    mailed = scheduled_run(source, 0.11, minutes_ago=3)
    assert services.digest_after_run_claims() == 1  # its own email
    waiting = scheduled_run(source, 0.77, minutes_ago=1)

    response = admin_client.get(preview_url(subscription))

    assert response.status_code == 200
    content = response.context["content"]
    assert response.context["preview"].run_count == 1
    assert "0.77" in content.text and "0.11" not in content.text
    page = response.content.decode()
    assert "the runs that finished and have not been mailed yet" in page
    assert "Runs already mailed are not in it" in page
    assert DigestDelivery.objects.get().run_id == mailed.pk  # the page recorded nothing
    assert waiting.pk  # (named for the reader)


def test_per_run_preview__lists_exactly_what_the_next_send_includes():
    subscription, source = per_run_digest()
    scheduled_run(source, 1, minutes_ago=10)
    services.digest_after_run_claims()
    failed = scheduled_run(source, 2, minutes_ago=5)
    failed.status = RunStatus.FAILED
    failed.save(update_fields=["status"])
    waiting = scheduled_run(source, 3, minutes_ago=2)
    now = timezone.now()

    preview = selectors.digest_preview(subscription=subscription, now=now)
    preview_ids = sorted(
        str(r.pk) for r in services.digest_runs(subscription=subscription, start=preview.start, end=now)
    )
    sent = services.digest_period_close(subscription_id=subscription.pk, now=now, manual=True)

    assert preview.run_count == 2 and preview_ids == sorted([str(failed.pk), str(waiting.pk)])
    assert sorted(sent.run_ids) == preview_ids
    assert sent.period_start == preview.start
    # Mailed by "Send now": no email of their own afterwards, and the preview is empty.
    assert services.digest_after_run_claims() == 0
    assert selectors.digest_preview(subscription=subscription).run_count == 0
    later = scheduled_run(source, 4, minutes_ago=0)
    assert services.digest_after_run_claims() == 1
    assert DigestDelivery.objects.get(run=later).run_ids == [str(later.pk)]


def test_per_run_preview__with_every_run_mailed_says_the_next_email_follows_the_next_run(admin_client):
    subscription, source = per_run_digest()
    scheduled_run(source, 0.5, minutes_ago=1)
    services.digest_after_run_claims()

    response = admin_client.get(preview_url(subscription))

    assert response.context["preview"].run_count == 0
    assert "Every run has had its email. The next one goes out after the schedule" in response.content.decode()


def test_periodic_preview__lists_exactly_what_send_now_includes():
    subscription = digest(name="Daily", rank_by="score")
    start = services.digest_timing(subscription).latest_at_or_before(timezone.now())
    runs = [finished_run(result={"score": i}, at=start + (timezone.now() - start) * i / 4) for i in (1, 2, 3)]
    now = timezone.now()

    preview = selectors.digest_preview(subscription=subscription, now=now)
    sent = services.digest_period_close(subscription_id=subscription.pk, now=now, manual=True)

    assert preview.run_count == 3 and sorted(sent.run_ids) == sorted(str(r.pk) for r in runs)
