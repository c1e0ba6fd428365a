from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class DashboardAdminConfig(AdminConfig):
    """django.contrib.admin with Agent Runner's site: the dashboard as its home page, apps in order of use,
    pages that are not scoped by team (the service's settings, accounts, django-q2's tables) for superusers only."""

    default_site = "dashboard.site.DashboardAdminSite"

    def ready(self):
        super().ready()  # registers every app's admin pages (autodiscover)
        from django.contrib import admin

        from agentrunner.admin_site import superuser_only_unless_team_aware

        superuser_only_unless_team_aware(admin.site)


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"
