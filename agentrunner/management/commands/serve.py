"""Run the web server and a worker cluster in one foreground process; Ctrl-C (or SIGTERM) stops both.

`--prepare` (make run) first migrates, collects static files and creates the development superuser and
the demo content, in this one process: each `manage.py` call costs a Django start-up (1.5-4 s on 2 cores).
"Ready" is printed once the health report answers 200 (web server up, a worker alive), never before.
"""

import os
import socket
import sys
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from agentrunner import health, processes

WEB_STOP_SECONDS = 5  # development: requests in flight get this long
READY_TIMEOUT_SECONDS = 120


class Command(BaseCommand):
    help = "Start the web server (gunicorn, as in production) and a worker cluster together. Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--prepare",
            action="store_true",
            help="first migrate, collect static files, create the development superuser and the demo content",
        )

    def handle(self, *args, addrport, prepare, **options):
        if prepare:
            call_command("migrate", interactive=False, verbosity=0)
            call_command("collectstatic", interactive=False, verbosity=0)
            call_command("ensure_dev_superuser")
            call_command("ensure_demo_content")
            connections.close_all()  # the children open their own
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
        self.stdout.write(f"Starting the web server on http://{addrport}/ and a worker cluster ...")
        if self.wait_ready(addrport, stop, [web, cluster]):
            self.stdout.write(
                f"Ready: http://{addrport}/ (admin: /admin/, API docs: /api/docs/). Press Ctrl-C to stop."
            )
        exited = processes.wait_until(stop, [web, cluster])
        processes.stop([web, cluster], grace=max(WEB_STOP_SECONDS, settings.WORKER_STOP_SECONDS) + 5)
        self.stdout.write("Stopped web server and workers.")
        if exited is not None:
            sys.exit("A child process exited unexpectedly; stopped the other.")

    def wait_ready(self, addrport: str, stop, children) -> bool:
        """Until the health report answers 200 (False if stopped, a child exited or it took too long).

        Checked here first (a worker alive, the web port open), so waiting adds no 503 lines to the log."""
        host, _, port = addrport.rpartition(":")
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not stop.is_set():
            if any(child.poll() is not None for child in children):
                return False
            if all(check["ok"] for check in health.checks().values()) and self.listening(host, int(port)):
                try:
                    with urllib.request.urlopen(f"http://{addrport}/api/v1/health", timeout=5) as answer:
                        if answer.status == 200:
                            return True
                except (urllib.error.URLError, OSError):
                    pass
            stop.wait(0.2)
        self.stderr.write(f"Not healthy after {READY_TIMEOUT_SECONDS} s: see the lines above, or /api/v1/health.")
        return False

    @staticmethod
    def listening(host: str, port: int) -> bool:
        try:
            with socket.create_connection((host or "127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
