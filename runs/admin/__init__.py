"""Admin: runs (read-only, with cancel and re-run), agent types (concurrency policy) and the slots in use.

Every page is read-only except an agent type's policy; every change goes through `runs.services`.
Model data is always escaped (`format_html`), never marked safe.
"""

from runs.admin import agent_types, runs_admin, slots_admin  # noqa: F401  (registers the ModelAdmins)
