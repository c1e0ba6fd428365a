"""Read-only admin of held concurrency slots."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

from agentrunner.adminkit import EMPTY, ReadOnlyAdminMixin, nowrap, when
from runs.admin.display import run_badge, run_link
from runs.models import (
    Slot,
)


@admin.register(Slot)
class SlotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "key_name",
        "slot_number",
        "run_display",
        "holder_display",
        "acquired",
        "heartbeat",
        "expires",
    ]
    list_select_related = ["run"]
    list_filter = ["key"]
    ordering = ["key", "number"]
    empty_value_display = EMPTY

    # Read-only: slots are freed by the engine; deleting one by hand could let too many runs start.

    @admin.display(description="concurrency group", ordering="key")
    def key_name(self, obj: Slot):
        return obj.key_id

    @admin.display(description="slot no.", ordering="number")
    def slot_number(self, obj: Slot):
        return obj.number

    @admin.display(description="run")
    def run_display(self, obj: Slot):
        return nowrap(format_html("{} {} {}", run_link(obj.run_id), obj.run.agent_type, run_badge(obj.run)))

    @admin.display(description="taken", ordering="acquired_at")
    def acquired(self, obj: Slot):
        return nowrap(when(obj.acquired_at))

    @admin.display(description="last heartbeat", ordering="heartbeat_at")
    def heartbeat(self, obj: Slot):
        return nowrap(when(obj.heartbeat_at))

    @admin.display(description="held by worker")
    def holder_display(self, obj: Slot):
        return obj.holder or "reserved (no worker has started it yet)"

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: Slot):
        expired = obj.expires_at <= timezone.now()
        return nowrap(format_html("{}{}", when(obj.expires_at), " (expired)" if expired else ""))
