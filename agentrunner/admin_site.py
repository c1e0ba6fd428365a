"""The admin site: Agent Runner's apps first, in order of use; pages not scoped by team for superusers only.

The site in use subclasses it with the dashboard as its home page (dashboard/site.py): the dashboard reads every
app, and nothing here may import one.
"""

from django.contrib import admin

# The index lists apps in this order; any other app comes after them, by name.
APP_ORDER = ["runs", "flows", "schedules", "digests", "agentrunner", "teams", "auth", "authtoken", "axes"]
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
        if app_label is None:  # the index and the menu; an app's own page keeps its models together
            apps = _teams_apart(apps)
        apps.sort(key=lambda app: (rank.get(app["app_label"], len(rank)), app["name"]))
        for app in apps:
            order = MODEL_ORDER.get(app["app_label"], [])
            place = {name: i for i, name in enumerate(order)}
            app["models"].sort(key=lambda m: (place.get(m["object_name"].lower(), len(order)), m["name"]))
        return apps


TEAMS_SECTION = "Teams"


def section_of(opts) -> str:
    """The heading the index lists a model under (its breadcrumbs say the same): its app's name, but Teams for teams."""
    if opts.app_label == "agentrunner" and opts.object_name == "Team":
        return TEAMS_SECTION
    return str(opts.app_config.verbose_name)


def _teams_apart(apps: list[dict]) -> list[dict]:
    """Teams get a heading of their own: the agentrunner app's name ("LLM") says nothing about them."""
    result = []
    for app in apps:
        if app["app_label"] == "agentrunner":
            teams = [m for m in app["models"] if m["object_name"] == "Team"]
            if teams:
                app = {**app, "models": [m for m in app["models"] if m["object_name"] != "Team"]}
                result.append({**app, "name": TEAMS_SECTION, "app_label": "teams", "models": teams})
                if not app["models"]:
                    continue
        result.append(app)
    return result


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


def superuser_only_unless_team_aware(site: admin.AdminSite) -> None:
    """Make every page of `site` that does not scope its objects by team (`team_aware`) superuser-only.

    What is left are the settings of the whole service (agent policies, slots, LLM breakers and per-user
    budgets, rate-limit windows), its accounts (users, groups, tokens, sign-in lockouts) and django-q2's tables:
    they show or change every team's things, so a team's staff must not open them whatever their Django
    permissions. A page added later is safe by default: superuser-only until it says it scopes by team.
    """
    for model_admin in site._registry.values():
        if not getattr(model_admin, "team_aware", False):
            superuser_only(model_admin)
