"""The decisions about a delivery nothing retries by itself: resend it, or mark it sent; what each risks.

Both are `digests.services` calls (delivery_resend, delivery_mark_sent), which check the status by
compare-and-set; this module only decides what the admin offers and how it asks.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils import timezone

from digests import selectors, services
from digests.admin.display import delivery_badge, delivery_period
from digests.exceptions import DeliveryStateConflict
from digests.models import DeliveryStatus, DigestDelivery

RESENDABLE = (DeliveryStatus.SENDING, DeliveryStatus.FAILED, DeliveryStatus.SENT)
MARKABLE = (DeliveryStatus.SENDING, DeliveryStatus.FAILED)
STILL_SENDING = (
    "the email is being sent right now. Wait: if its worker stopped, the delivery shows as stuck within a few "
    "minutes and can then be resent or marked sent."
)


def decision_allowed(delivery: DigestDelivery, allowed, *, now: datetime | None = None) -> bool:
    """Say whether the admin offers this decision about this delivery now."""
    # A fresh `sending` delivery may still be in its SMTP conversation: resending or marking it would race
    # the worker, so only a stuck one qualifies.
    if delivery.status not in allowed:
        return False
    return delivery.status != DeliveryStatus.SENDING or services.delivery_is_stuck(delivery, now=now)


def resend_confirm_text(delivery: DigestDelivery, *, stuck: bool) -> str:
    text = (
        f"Send this digest again to {len(selectors.delivery_recipients(delivery))} recipient(s)?\n\n"
        f"It goes out with the same Message-ID ({delivery.message_id}), so mail programs that already have "
        "the first copy usually show only one, but some recipients may get it twice."
    )
    if stuck:
        text += (
            "\n\nThe worker stopped while sending it: the first copy may have left. Check the mail server's log "
            "for that Message-ID first; if it is there, choose Mark as sent instead."
        )
    return text


def mark_sent_confirm_text(delivery: DigestDelivery) -> str:
    return (
        "Record this digest as sent, without sending anything?\n\n"
        f"Do this only if you know it reached its recipients (e.g. the mail server's log shows Message-ID "
        f"{delivery.message_id}). If it did not, nobody will get this period's digest; if you are unsure, "
        "Resend risks a duplicate instead."
    )


def bulk_decide(model_admin, request, queryset, *, action, service, allowed, title, explanation, button, done):
    """Ask first (a page listing the deliveries); on "yes", call the service for each one that may."""
    now = timezone.now()
    # Django checks the action's permission without an object: the user may be an editor of one team and a
    # viewer of another, whose deliveries the list also shows. Those are left out, and said apart.
    writable = model_admin.writable(request, queryset)
    read_only = queryset.count() - writable.count()
    deliveries = list(writable.select_related("subscription"))
    eligible = [d for d in deliveries if decision_allowed(d, allowed, now=now)]
    skipped = len(deliveries) - len(eligible)
    if request.POST.get("post") != "yes":
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "title": title,
            "subtitle": None,
            "explanation": explanation,
            "button": button,
            "action": action,
            "eligible": [(d, delivery_period(d), delivery_badge(d, now=now)) for d in eligible],
            "skipped": skipped,
            "read_only": read_only,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": [d.pk for d in deliveries],  # the read-only ones are not posted again
        }
        return TemplateResponse(request, "admin/digests/digestdelivery/action_confirm.html", context)
    count = 0
    for delivery in eligible:
        try:
            service(delivery=delivery, by=request.user.get_username())
        except DeliveryStateConflict:
            skipped += 1  # changed since the confirmation page
            continue
        model_admin.log_change(request, delivery, f"{done.capitalize()} from the admin.")
        count += 1
    if read_only:
        model_admin.message_user(
            request, f"{read_only} left out: you may only read their digests' team.", messages.WARNING
        )
    if count:
        model_admin.message_user(request, f"{count} deliver{'y' if count == 1 else 'ies'} {done}.", messages.SUCCESS)
    if skipped:
        model_admin.message_user(
            request,
            f"{skipped} skipped: only failed deliveries, ones stuck while sending"
            + (" and sent ones" if DeliveryStatus.SENT in allowed else "")
            + " can be "
            + done
            + ".",
            messages.WARNING,
        )
    return None
