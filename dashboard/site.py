"""The admin site with the dashboard as its home page (the app order and django-q2 rule are the base site's)."""

from __future__ import annotations

from agentrunner.admin_site import AgentRunnerAdminSite


class DashboardAdminSite(AgentRunnerAdminSite):
    index_title = "Dashboard"

    def index(self, request, extra_context=None):
        # Here, not at the top: the panels use the apps' admin modules, which register with this very site
        # while it is being created.
        from dashboard import panels

        # Reads only: every panel is a few queries whatever the number of rows (tests/dashboard/).
        extra_context = {**(extra_context or {}), "dashboard": panels.build(self, request)}
        return super().index(request, extra_context)
