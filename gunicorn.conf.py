"""gunicorn settings of the web process: the image and `make run` use them (gunicorn reads this file
from its working directory; `gunicorn agentrunner.wsgi` in the repository picks it up).

Threads, not one process per request: a request may wait long (POST /flow/execute waits up to
60 s for its run) and a client may be slow, and neither may take the server's only request slot.
A gthread worker's main loop keeps beating while its threads serve, so `timeout` only catches a
stuck process, never a long request. Stalled request bodies are cut after REQUEST_BODY_SECONDS
(agentrunner/slow_clients.py). Database connections: at most workers x threads per web container.
"""

import os

wsgi_app = "agentrunner.wsgi:application"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
# A worker process that stops beating this long is replaced.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# On stop or reload a worker lets its requests finish for this long: the longest documented wait
# (POST /flow/execute, `wait` at most 60 s) and a margin.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "75"))
keepalive = 5
# Imported once, then forked: workers start faster and share memory.
preload_app = True

# /metrics (agentrunner/metrics.py): prometheus_client's multiprocess mode, so one scrape of any worker
# shows the HTTP series of all of them. Each worker writes its values to files in this directory, which
# must exist, and be empty, before the app (preloaded below) imports prometheus_client.
_metrics_dir_given = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
if not _metrics_dir_given:
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="agentrunner-metrics-")


def on_starting(server):
    # A directory given by the operator may hold a previous server's files: they would be counted again.
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    # A dead worker's counters keep counting in the sums; its live-gauge files (none yet) are dropped.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if not _metrics_dir_given:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
