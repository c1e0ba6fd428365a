"""Start the engine ticker and the step runtime in every django-q2 worker process.

The tick is elected per period by compare-and-set on one row, so however many
workers and clusters run, one of them does the recovery work each period and a
dead cluster is covered by the others.

After every migrate, each registered agent type gets its row (`sync_agent_types`).
"""

from django.db import connections
from django.db.models.signals import post_migrate
from django.dispatch import receiver
from django_q.signals import post_spawn

_ticker = None


@receiver(post_spawn)
def start_engine_ticker(sender, proc_name, **kwargs):
    """In each worker process: the engine tick, and the step runtime (event loop for async agents, watch)."""
    global _ticker
    if _ticker is None:
        from runs.engine import EngineTicker, runtime

        _ticker = EngineTicker()
        _ticker.start()
        runtime.start()


@receiver(post_migrate)
def sync_agent_types(sender, app_config=None, using="default", **kwargs):
    """After every migrate (and a test database's flush): a row for each registered agent type.

    The admin's agent type list shows these rows and its GET writes nothing, so an agent installed since
    the last deploy gets its row here (deploys and `make run` migrate first).
    """
    if app_config is None or app_config.label != "runs":
        return
    from runs.models import AgentPolicy
    from runs.services import agent_policies_sync

    if AgentPolicy._meta.db_table in connections[using].introspection.table_names():  # not after `migrate runs zero`
        agent_policies_sync()


def _connect_retention():
    from runs.engine import tick_work
    from runs.retention import retention_tick

    tick_work.connect(retention_tick, dispatch_uid="runs.retention")


_connect_retention()
