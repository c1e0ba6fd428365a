"""Load the demo content if it does not exist yet (make run); staff edits are never overwritten.

- the `claim-intake` flow;
- a schedule running it every 10 minutes on the sample policy;
- two digests of that schedule: one after each run and one daily at 08:00 (UTC),
  mailed to the dev address (the console backend prints them in the worker's output).
"""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from digests.models import DigestSubscription
from digests.services import digest_create
from flows.models import Flow
from flows.services import flow_create
from schedules.models import Schedule
from schedules.services import schedule_create

SAMPLES = Path(settings.BASE_DIR) / "samples"
DEMO_SCHEDULE = "Claim intake every 10 minutes"
DEMO_RECIPIENT = "claims-team@example.com"


class Command(BaseCommand):
    help = "Create the demo claim-intake flow, its 10-minute schedule and its digests."

    def handle(self, *args, **options):
        flow = Flow.objects.filter(slug="claim-intake").first()
        if flow is None:
            flow = flow_create(
                slug="claim-intake",
                name="Claim intake",
                description="Extract policy fields from a document, check the claim, and route it.",
                definition=json.loads((SAMPLES / "claim-intake.flow.json").read_text()),
            )
            self.stdout.write("Created the demo flow claim-intake.")
        schedule = Schedule.objects.filter(name=DEMO_SCHEDULE).first()
        if schedule is None:
            schedule = schedule_create(
                name=DEMO_SCHEDULE,
                flow=flow,
                input={
                    "document": {"text": (SAMPLES / "policy.txt").read_text()},
                    "check_date": "2025-06-15",
                    "claim_amount": 48500,
                },
                kind="interval",
                interval_seconds=600,
            )
            self.stdout.write(f"Created the demo schedule {DEMO_SCHEDULE!r} (pause it in the admin).")
        for name, period in (("Claim intake: each run", "after_run"), ("Claim intake: daily", "daily")):
            if not DigestSubscription.objects.filter(name=name).exists():
                digest_create(name=name, recipients=DEMO_RECIPIENT, schedule=schedule, period=period, send_at="08:00")
                self.stdout.write(f"Created the demo digest {name!r} (mailed to the console).")
