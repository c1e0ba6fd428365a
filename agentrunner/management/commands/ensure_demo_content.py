"""Load the demo `claim-intake` flow if it does not exist yet (make run); staff edits are never overwritten."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from flows.models import Flow
from flows.services import flow_create

DEMO_FLOW = Path(settings.BASE_DIR) / "samples" / "claim-intake.flow.json"


class Command(BaseCommand):
    help = "Create the demo claim-intake flow (document-extractor -> policy-checker -> accepted / manual review)."

    def handle(self, *args, **options):
        if Flow.objects.filter(slug="claim-intake").exists():
            self.stdout.write("Demo flow claim-intake already exists.")
            return
        flow_create(
            slug="claim-intake",
            name="Claim intake",
            description="Extract policy fields from a document, check the claim, and route it.",
            definition=json.loads(DEMO_FLOW.read_text()),
        )
        self.stdout.write("Created the demo flow claim-intake.")
