"""Run a worker cluster (django-q2's qcluster) that stops cleanly on SIGTERM or SIGINT, however sent."""

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from agentrunner import processes


class Command(BaseCommand):
    help = (
        "Run a django-q2 worker cluster that stops cleanly on SIGTERM or SIGINT, even when the signal "
        "reaches the whole process group; a stop ends within WORKER_STOP_SECONDS. Use it instead of qcluster."
    )

    def handle(self, *args, **options):
        stop = processes.stop_requested()
        cluster = processes.start([sys.executable, os.path.abspath(sys.argv[0]), "qcluster"])
        exited = processes.wait_until(stop, [cluster])
        processes.stop([cluster], grace=settings.WORKER_STOP_SECONDS)
        if exited is not None:
            sys.exit(f"The cluster exited by itself (status {exited.returncode}).")
