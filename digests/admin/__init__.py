"""Admin for digests: define them (saved through `digests.services`), preview, send now, and decide about
deliveries that failed or got stuck mid-send (resend or mark sent).

Tables and panels are templates (templates/admin/digests/); model data is always escaped (`format_html`,
template autoescaping); the email previews are shown in sandboxed frames.
"""

from digests.admin import deliveries_admin, digests_admin  # noqa: F401  (registers the ModelAdmins)
