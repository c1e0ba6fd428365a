"""Digest work in the engine tick: per-run digests of finished scheduled runs, and due retries."""

from django.dispatch import receiver

from runs.engine import tick_work


@receiver(tick_work)
def digests_tick(sender, now, **kwargs):
    from digests.services import deliveries_dispatch_due, digest_after_run_claims, digests_repair

    counts = {
        "digest_rows_recreated": digests_repair(),
        "digests_claimed": digest_after_run_claims(),
        "digests_dispatched": deliveries_dispatch_due(now=now),
    }
    return {k: v for k, v in counts.items() if v} or None
