"""The admin index: Agent Runner's apps first in order of use; django-q2's internals for superusers only."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

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


def test_django_q_internals__hidden_from_staff_even_with_every_permission(client, django_user_model):
    staff = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    staff.user_permissions.set(Permission.objects.all())
    client.force_login(staff)

    labels = app_labels(client)

    assert labels[:4] == ["runs", "flows", "schedules", "digests"]
    assert "django_q" not in labels
    for model in ("success", "failure", "ormq", "schedule"):
        assert client.get(reverse(f"admin:django_q_{model}_changelist")).status_code == 403
    assert client.get(reverse("admin:runs_run_changelist")).status_code == 200


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
