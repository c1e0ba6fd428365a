"""Delete old finished runs now, batch after batch (runs/retention.py): a backlog, or a one-off clean-up."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from runs.retention import BATCH, retention_cutoff, runs_purge, runs_to_purge


class Command(BaseCommand):
    help = (
        "Delete finished runs created and finished more than --days days ago (default: RUN_RETENTION_DAYS), with "
        "their steps, attempts and decisions; their LLM calls stay. The workers do the same a batch at a time."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="Keep this many days (default: RUN_RETENTION_DAYS).")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        parser.add_argument("--batch", type=int, default=BATCH, help=f"Runs per transaction (default {BATCH}).")

    def handle(self, *args, days, dry_run, batch, **options):
        days = settings.RUN_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("Say how many days to keep: --days N (RUN_RETENTION_DAYS is 0, keep every run).")
        if batch < 1:
            raise CommandError("--batch must be at least 1.")
        try:
            before = retention_cutoff(now=timezone.now(), days=days)
        except OverflowError:
            raise CommandError(f"--days {days} reaches before year 1.") from None
        moment = f"{before:%Y-%m-%d %H:%M} UTC"
        if dry_run:
            self.stdout.write(f"{runs_to_purge(before=before).count()} runs finished before {moment} would be deleted.")
            return
        total = 0
        while deleted := runs_purge(before=before, batch=batch):
            total += deleted
        self.stdout.write(f"Deleted {total} runs finished before {moment}.")
