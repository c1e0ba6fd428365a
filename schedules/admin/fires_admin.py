"""The slot history: read-only, since the scheduler decides every slot."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from agentrunner.adminkit import EMPTY, ReadOnlyAdminMixin, TeamScopedAdmin, nowrap, sees_several_teams
from runs.admin.display import run_badge, run_link
from schedules.admin.display import fire_badge, local_time
from schedules.models import ScheduleFire


@admin.register(ScheduleFire)
class ScheduleFireAdmin(ReadOnlyAdminMixin, TeamScopedAdmin, admin.ModelAdmin):
    """The slots of a team's schedules, for its members to read."""

    team_path = "schedule__team"
    list_display = ["intended", "schedule_link", "status_badge", "run_display", "detail_display", "fired_at"]
    list_filter = ["status", "schedule"]  # the schedules of the user's teams only (TeamScopedAdmin)
    list_select_related = ["schedule", "run"]
    search_fields = ["schedule__name", "detail"]
    date_hierarchy = "intended_at"
    empty_value_display = EMPTY
    fields = ["schedule_link", "intended", "status_badge", "run_display", "detail", "fired_at"]
    readonly_fields = fields

    # Read-only: slots are decided by the scheduler; deleting one would let its fire time start a second run.

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        return [*columns[:2], "team_display", *columns[2:]] if sees_several_teams(request) else columns

    def get_list_select_related(self, request):
        related = super().get_list_select_related(request)
        return [*related, "schedule__team"] if sees_several_teams(request) else related

    @admin.display(description="team", ordering="schedule__team__name")
    def team_display(self, obj: ScheduleFire):
        return obj.schedule.team.name

    @admin.display(description="fire time", ordering="intended_at")
    def intended(self, obj: ScheduleFire):
        return nowrap(local_time(obj.intended_at, obj.schedule))

    @admin.display(description="schedule", ordering="schedule__name")
    def schedule_link(self, obj: ScheduleFire):
        url = reverse("admin:schedules_schedule_change", args=[obj.schedule_id])
        return format_html('<a href="{}">{}</a>', url, obj.schedule.name)

    @admin.display(description="what happened", ordering="status")
    def status_badge(self, obj: ScheduleFire):
        return fire_badge(obj.status)

    @admin.display(description="run")
    def run_display(self, obj: ScheduleFire):
        return nowrap(format_html("{} {}", run_link(obj.run_id), run_badge(obj.run))) if obj.run_id else EMPTY

    @admin.display(description="detail")
    def detail_display(self, obj: ScheduleFire):
        return format_html('<div style="min-width:14em">{}</div>', obj.detail) if obj.detail else EMPTY

    @admin.display(description="decided at", ordering="created_at")
    def fired_at(self, obj: ScheduleFire):
        return nowrap(local_time(obj.created_at, obj.schedule))
