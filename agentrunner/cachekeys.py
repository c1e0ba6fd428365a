"""Keys of the values processes share through Django's cache, in one light module (no DRF, no app)."""

# When a worker last freed a django-q2 task queue stuck behind a killed worker (written by runs.engine.unjam,
# shown by the health report).
TASK_QUEUE_UNJAMMED = "agentrunner:task-queue-unjammed"
