"""django-q2's own schedule rows, read-only: our services write them (schedules and digests)."""

from __future__ import annotations

import django_q.admin  # registers django-q2's ScheduleAdmin, which is replaced here
from django.contrib import admin
from django_q.models import Schedule as QSchedule

from agentrunner.admin_site import superuser_only
from agentrunner.adminkit import ReadOnlyAdminMixin

Q_HELP = (
    "These rows are managed by Agent Runner's schedules and digests (Schedules › Schedules, Digests): edit, "
    "pause or delete those and their row here follows. This page is read-only."
)

if admin.site.is_registered(QSchedule):
    admin.site.unregister(QSchedule)


@admin.register(QSchedule)
class ManagedQScheduleAdmin(ReadOnlyAdminMixin, django_q.admin.ScheduleAdmin):
    """django-q2's rows, seen but never edited here: our services write them."""

    list_display = ["name", "func", "next_run", "schedule_type"]
    list_display_links = ["name"]
    list_filter = ["schedule_type"]
    actions = None

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), "subtitle": Q_HELP})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "subtitle": Q_HELP})


# All of django-q2's tables (tasks, failures, the queue, these rows) are its internals: superusers only.
for _model, _model_admin in admin.site._registry.items():
    if _model._meta.app_label == "django_q":
        superuser_only(_model_admin)
