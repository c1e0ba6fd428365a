from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class DashboardAdminConfig(AdminConfig):
    """django.contrib.admin with Agent Runner's site: the dashboard as its home page, apps in order of use,
    django-q2's tables for superusers only."""

    default_site = "dashboard.site.DashboardAdminSite"


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"
