"""Schedule work in the engine tick: a django-q2 scheduler pass, queued slots whose turn has come, old fires.

django-q2's sentinel runs its scheduler only every 30 s; calling the same
function from the elected tick makes a slot fire within about one tick of its
time. Both may run at once: django-q2 locks the rows it fires (SELECT … FOR
UPDATE; IMMEDIATE transactions on SQLite) and our slot claim is unique anyway.
"""

from django.db import connection
from django.dispatch import receiver
from django_q.brokers import get_broker
from django_q.scheduler import scheduler

from runs.engine import tick_work
from runs.retention import OTHER_BATCH, retention_work

_broker = None


@receiver(tick_work)
def schedules_tick(sender, now, **kwargs):
    global _broker
    # django-q2's scheduler() starts with close_old_connections(), which closes a
    # connection that is inside a transaction (a caller's atomic block, e.g. a
    # test): run it only from the ticker, which holds no transaction.
    if not connection.in_atomic_block:
        if _broker is None:
            _broker = get_broker()
        scheduler(broker=_broker)
    from schedules.services import schedule_queue_advance, schedules_repair

    counts = {"schedule_rows_recreated": schedules_repair(), "queued_slots_started": schedule_queue_advance()}
    return {k: v for k, v in counts.items() if v} or None


@receiver(retention_work)
def schedule_fires_retention(sender, team_id, before, **kwargs):
    """A team's old fires go as its old runs do (runs.retention)."""
    from schedules.services import schedule_fires_purge

    return schedule_fires_purge(team_id=team_id, before=before, batch=OTHER_BATCH)
