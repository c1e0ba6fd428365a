"""Admin for schedules: edit (through the services), pause and resume; slot history; django-q2's rows read-only.

Saving, deleting, pausing and resuming go through `schedules.services`, so the django-q2 row behind each
schedule is created, moved or removed with it; the form only validates (with the same check the services
run). Tables and lists are templates (templates/admin/schedules/includes/). Model data is always escaped
(`format_html`, template autoescaping), never marked safe.
"""

from schedules.admin import django_q_admin, fires_admin, schedules_admin  # noqa: F401  (registers the ModelAdmins)
