"""Container health check: the web role asks /api/v1/health, the worker role looks for its own cluster."""

import socket
import urllib.error
import urllib.request

from django.core.management.base import BaseCommand, CommandError

from agentrunner import health

HTTP_TIMEOUT_SECONDS = 4


class Command(BaseCommand):
    help = "Exit 0 when this container is healthy (web: GET /api/v1/health is 200; worker: its cluster is running)."

    def add_arguments(self, parser):
        parser.add_argument("role", choices=["web", "worker"])
        parser.add_argument("--url", default="http://127.0.0.1:8000/api/v1/health")

    def handle(self, *args, role, url, **options):
        if role == "web":
            try:
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310 (fixed local URL)
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError as error:
                raise CommandError(f"health endpoint unreachable: {error}") from error
            if status != 200:
                raise CommandError(f"health endpoint answered {status}")
        else:
            host = socket.gethostname()
            if not any(s.host == host for s in health.running_clusters()):
                raise CommandError(f"no running worker cluster on {host}")
        self.stdout.write("healthy")
