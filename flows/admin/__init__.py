"""Admin for flows: edit a definition (every change is a new version), see it drawn, compare versions, run it.

Every write goes through `flows.services` (create, update, delete) and `runs.services` (start a run); the
model form only validates. Lists, tables and panels are templates (templates/admin/flows/); model data is
escaped (template autoescaping, `format_html` for one-element helpers); the flow graph is an SVG built from
escaped parts (see `runs.admin.display.flow_graph`).
"""

from flows.admin import flows_admin  # noqa: F401  (registers the ModelAdmin)
