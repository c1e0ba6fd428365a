"""Run the web server and a worker cluster in one foreground process; Ctrl-C (or SIGTERM) stops both."""

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from agentrunner import processes

WEB_STOP_SECONDS = 5  # development: requests in flight get this long


class Command(BaseCommand):
    help = "Start the web server (gunicorn, as in production) and a worker cluster together. Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport, **options):
        manage = [sys.executable, os.path.abspath(sys.argv[0])]
        stop = processes.stop_requested()
        # gunicorn with the repository's gunicorn.conf.py: a bounded pool of threads, each keeping its
        # database connection (the development server's thread per request exhausted PostgreSQL).
        web = processes.start(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                addrport,
                "--graceful-timeout",
                str(WEB_STOP_SECONDS),
            ],  # no access log: django-structlog's `request_finished` is the one line per request
            cwd=settings.BASE_DIR,
        )
        cluster = processes.start([*manage, "worker"])
        self.stdout.write(
            f"Web server on http://{addrport}/ (admin: /admin/, API docs: /api/docs/) and a worker cluster."
        )
        self.stdout.write("Press Ctrl-C to stop both.")
        exited = processes.wait_until(stop, [web, cluster])
        processes.stop([web, cluster], grace=max(WEB_STOP_SECONDS, settings.WORKER_STOP_SECONDS) + 5)
        self.stdout.write("Stopped web server and workers.")
        if exited is not None:
            sys.exit("A child process exited unexpectedly; stopped the other.")
