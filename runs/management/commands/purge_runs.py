"""Delete old finished runs now, batch after batch (runs/retention.py): a backlog, or a one-off clean-up."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from agentrunner.models import Team
from runs.retention import BATCH, retention_cutoff, retention_plan, runs_purge, runs_to_purge


class Command(BaseCommand):
    help = (
        "Delete finished runs created and finished longer ago than their team keeps them (its own retention, else "
        "RUN_RETENTION_DAYS), with their steps, attempts and decisions; their LLM calls stay. The workers do the same "
        "a batch at a time."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="Keep this many days in every team named (not the teams' own).")
        parser.add_argument("--team", help="Only this team (its slug).")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        parser.add_argument("--batch", type=int, default=BATCH, help=f"Runs per transaction (default {BATCH}).")

    def handle(self, *args, days, team, dry_run, batch, **options):
        if batch < 1:
            raise CommandError("--batch must be at least 1.")
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        team_id = None
        if team is not None:
            team_id = Team.objects.filter(slug=team).values_list("pk", flat=True).first()
            if team_id is None:
                raise CommandError(f"No team {team!r}.")
        if days is not None:
            teams = Team.objects.order_by("pk")
            if team_id is not None:
                teams = teams.filter(pk=team_id)
            plan = [(pk, days) for pk in teams.values_list("pk", flat=True)]
        else:
            plan = retention_plan(team_id=team_id)
        if not plan:
            self.stdout.write("Nothing to delete: every team keeps its runs (0 days, RUN_RETENTION_DAYS or its own).")
            return
        now, slugs = timezone.now(), dict(Team.objects.values_list("pk", "slug"))
        total = 0
        for pk, keep in plan:
            try:
                before = retention_cutoff(now=now, days=keep)
            except OverflowError:
                raise CommandError(f"{keep} days reach before year 1.") from None
            if dry_run:
                count = runs_to_purge(before=before, team_id=pk).count()
            else:
                count = 0
                while deleted := runs_purge(before=before, team_id=pk, batch=batch):
                    count += deleted
            total += count
            self.stdout.write(
                f"{slugs[pk]}: {count} runs finished before {before:%Y-%m-%d %H:%M} UTC (kept {keep} days)"
            )
        self.stdout.write(f"{'Would delete' if dry_run else 'Deleted'} {total} runs.")
