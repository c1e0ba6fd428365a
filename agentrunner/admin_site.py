"""The admin site: Agent Runner's apps first, in order of use, and django-q2's internals for superusers only.

The site in use subclasses it with the dashboard as its home page (dashboard/site.py): the dashboard reads every
app, and nothing here may import one.
"""

from django.contrib import admin

# The index lists apps in this order; any other app comes after them, by name.
APP_ORDER = ["runs", "flows", "schedules", "digests", "agentrunner", "auth", "authtoken", "axes"]
# Within an app, its main model first; others after these, by name.
MODEL_ORDER = {
    "runs": ["run", "agentpolicy", "slot"],
    "schedules": ["schedule", "schedulefire"],
    "digests": ["digestsubscription", "digestdelivery"],
    "agentrunner": ["llmcall", "ownerbudget", "providerbreaker"],
}
# django-q2's own task, failure and queue tables: what the engine keeps is in Runs; these are for debugging it.
SUPERUSER_ONLY_APPS = {"django_q"}


class AgentRunnerAdminSite(admin.AdminSite):
    site_header = "Agent Runner"
    site_title = "Agent Runner"
    index_title = "Runs, flows, schedules and digests"

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if not request.user.is_superuser:
            apps = [app for app in apps if app["app_label"] not in SUPERUSER_ONLY_APPS]
        rank = {label: i for i, label in enumerate(APP_ORDER)}
        apps.sort(key=lambda app: (rank.get(app["app_label"], len(rank)), app["name"]))
        for app in apps:
            order = MODEL_ORDER.get(app["app_label"], [])
            place = {name: i for i, name in enumerate(order)}
            app["models"].sort(key=lambda m: (place.get(m["object_name"].lower(), len(order)), m["name"]))
        return apps


def superuser_only(model_admin) -> None:
    """Let only superusers see or open `model_admin`'s pages (its app stays off others' index); what a
    superuser may do there stays as `model_admin` says."""

    def only_superusers(permission):
        def check(request, *args, **kwargs):
            return request.user.is_active and request.user.is_superuser and permission(request, *args, **kwargs)

        return check

    for name in (
        "has_module_permission",
        "has_view_permission",
        "has_add_permission",
        "has_change_permission",
        "has_delete_permission",
    ):
        setattr(model_admin, name, only_superusers(getattr(model_admin, name)))
