"""Run the web server and a django-q2 cluster in one foreground process; Ctrl-C stops both."""

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

STOP_GRACE_SECONDS = 15


class Command(BaseCommand):
    help = "Start the web server and a worker cluster together (development). Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport, **options):
        manage = [sys.executable, os.path.abspath(sys.argv[0])]
        children = [
            subprocess.Popen([*manage, "runserver", addrport, "--noreload"]),
            subprocess.Popen([*manage, "qcluster"]),
        ]
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(
            f"Web server on http://{addrport}/ (admin: /admin/, API docs: /api/docs/) and a worker cluster."
        )
        self.stdout.write("Press Ctrl-C to stop both.")
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("Stopped web server and workers.")
        if not stopping:
            sys.exit("A child process exited unexpectedly; stopped the other.")
