"""The admin index: Agent Runner's apps first in order of use; pages that do not scope by team (the service's
settings, accounts, django-q2's internals) for superusers only."""

import re
from html import unescape
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse
from django.utils.html import strip_tags

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from runs.models import RunStatus
from tests.conftest import join
from tests.runs.factories import make_run

pytestmark = pytest.mark.django_db


def app_labels(client) -> list[str]:
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    return [app["app_label"] for app in response.context["app_list"]]


def test_index__apps_in_order_of_use_django_q_last_for_superusers(admin_client):
    labels = app_labels(admin_client)
    ours = ["runs", "flows", "schedules", "digests", "agentrunner", "auth", "authtoken"]
    assert [label for label in labels if label in ours] == ours
    assert labels.index("authtoken") < labels.index("django_q")
    index = admin_client.get(reverse("admin:index")).context["app_list"]
    runs = next(app for app in index if app["app_label"] == "runs")
    assert [m["object_name"] for m in runs["models"]] == ["Run", "AgentPolicy", "Slot"]
    assert "LLM" in admin_client.get(reverse("admin:index")).content.decode()


def test_service_pages__hidden_from_team_staff_even_with_every_permission(client, django_user_model):
    staff = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    staff.user_permissions.set(Permission.objects.all())
    join(staff, Role.ADMIN)
    client.force_login(staff)

    labels = app_labels(client)

    # Their team's pages, and its LLM calls and members; none of the service's settings, accounts or internals.
    assert labels == ["runs", "flows", "schedules", "digests", "agentrunner", "teams"]
    index = {app["app_label"]: app for app in client.get(reverse("admin:index")).context["app_list"]}
    assert [m["object_name"] for m in index["runs"]["models"]] == ["Run"]
    assert [m["object_name"] for m in index["agentrunner"]["models"]] == ["LLMCall"]
    assert index["teams"]["name"] == "Teams"
    for model in ("success", "failure", "ormq", "schedule"):
        assert client.get(reverse(f"admin:django_q_{model}_changelist")).status_code == 403
    for page in ("auth_user", "auth_group", "authtoken_tokenproxy", "runs_slot", "runs_agentpolicy"):
        assert client.get(reverse(f"admin:{page}_changelist")).status_code == 403
    assert client.get(reverse("admin:runs_run_changelist")).status_code == 200


def test_service_pages__a_page_that_does_not_scope_by_team_is_superuser_only():
    from django.contrib import admin

    for model, model_admin in admin.site._registry.items():
        if not getattr(model_admin, "team_aware", False):
            request = RequestFactory().get("/")
            request.user = SimpleNamespace(is_active=True, is_superuser=False, is_staff=True, has_perm=lambda *a: True)
            assert not model_admin.has_module_permission(request), model
            assert not model_admin.has_view_permission(request), model


def test_django_q_schedule_rows__stay_read_only_for_superusers(admin_client):
    from django.contrib import admin
    from django.test import RequestFactory
    from django_q.models import Schedule

    request = RequestFactory().get("/")
    request.user = admin_client.get(reverse("admin:index")).context["request"].user
    model_admin = admin.site._registry[Schedule]
    assert model_admin.has_view_permission(request) and model_admin.has_module_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert not model_admin.has_add_permission(request)


def breadcrumbs(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    crumbs = re.search(r'<div class="breadcrumbs">(.*?)</div>', response.content.decode(), re.S).group(1)
    return " ".join(unescape(strip_tags(crumbs)).split())


def test_breadcrumbs__name_the_section_the_index_shows_and_never_repeat_the_model(admin_client):
    team, run = team_default(), make_run(RunStatus.COMPLETED)
    assert breadcrumbs(admin_client, reverse("admin:agentrunner_team_change", args=[team.pk])) == (
        f"Home › Teams › {team}"  # the index lists teams under Teams, not under their app's name (LLM)
    )
    assert breadcrumbs(admin_client, reverse("admin:agentrunner_team_history", args=[team.pk])) == (
        f"Home › Teams › {team} › History"
    )
    assert breadcrumbs(admin_client, reverse("admin:runs_run_changelist")) == "Home › Runs"  # not Runs › Runs
    assert breadcrumbs(admin_client, reverse("admin:runs_run_change", args=[run.pk])).startswith("Home › Runs › ")
    assert breadcrumbs(admin_client, reverse("admin:runs_run_delete", args=[run.pk])) == f"Home › Runs › {run} › Delete"
    assert breadcrumbs(admin_client, reverse("admin:runs_agentpolicy_changelist")) == "Home › Runs › Agent types"
    assert breadcrumbs(admin_client, reverse("admin:agentrunner_llmcall_changelist")) == "Home › LLM › LLM calls"


@pytest.mark.parametrize("field,url", [("permissions", "admin:auth_group_add"), ("groups", "admin:auth_user_change")])
def test_account_pages__an_id_beyond_64_bits_is_a_form_error_not_a_500(admin_client, admin_user, field, url):
    args = [admin_user.pk] if url.endswith("change") else []
    page = admin_client.get(reverse(url, args=args))
    data = {k: v for k, v in page.context["adminform"].form.initial.items() if isinstance(v, str | int | bool)}
    data |= {"name": "Reviewers", "username": admin_user.username, field: "99999999999999999999"}

    response = admin_client.post(reverse(url, args=args), data)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
