"""The admin login locks a username out after repeated failures from one address (django-axes).

Through the real login form with the test client: what an attacker guessing passwords would meet.
"""

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from tests.conftest import client_for

pytestmark = pytest.mark.django_db

PASSWORD = "right-password-5150"
ATTACKER_IP = "203.0.113.7"


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD)


def log_in(client: Client, password: str, *, ip: str = ATTACKER_IP, username: str = "root"):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": reverse("admin:index")},
        REMOTE_ADDR=ip,
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, times: int, **where) -> None:
    for _ in range(times):
        response = log_in(client, "wrong-password", **where)
        assert not logged_in(client)
        assert response.status_code in {200, 429}


def test_admin_login__five_wrong_passwords_lock_out_the_right_one(settings, admin, client):
    fail(client, settings.AXES_FAILURE_LIMIT)

    response = log_in(client, PASSWORD)

    assert response.status_code == 429
    assert "too many login attempts" in response.content.decode()
    assert not logged_in(client)
    assert client.get(reverse("admin:index")).status_code == 302  # back to the login page


def test_admin_login__twenty_five_wrong_passwords_then_the_right_one_is_refused(admin, client):
    fail(client, 25)

    assert log_in(client, PASSWORD).status_code == 429
    assert not logged_in(client)


def test_admin_login__fewer_failures_than_the_limit_then_the_right_password_logs_in(settings, admin, client):
    fail(client, settings.AXES_FAILURE_LIMIT - 1)

    response = log_in(client, PASSWORD)

    assert response.status_code == 302 and response.url == reverse("admin:index")
    assert logged_in(client)


def test_admin_login__the_lockout_holds_for_that_username_from_that_address_only(settings, admin, staff_user, client):
    staff_user.set_password(PASSWORD)
    staff_user.save()
    fail(client, settings.AXES_FAILURE_LIMIT)

    assert log_in(Client(), PASSWORD, ip="198.51.100.9").status_code == 302  # the owner, elsewhere
    assert log_in(Client(), PASSWORD, username="staff").status_code == 302  # another account, same address


def test_admin_login__axes_reset_username_lifts_the_lockout(settings, admin, client):
    fail(client, settings.AXES_FAILURE_LIMIT)
    assert log_in(client, PASSWORD).status_code == 429

    call_command("axes_reset_username", "root")

    assert log_in(client, PASSWORD).status_code == 302
    assert logged_in(client)


def test_admin_login__the_lockout_ends_after_the_cool_off(settings, admin, client):
    fail(client, settings.AXES_FAILURE_LIMIT)
    settings.AXES_COOLOFF_TIME = 0  # the failures above are now older than the cool-off

    assert log_in(client, PASSWORD).status_code == 302


def test_api_tokens_and_force_login_are_not_throttled(settings, admin, client):
    fail(client, settings.AXES_FAILURE_LIMIT)

    assert client_for(admin).get("/api/v1/runs").status_code == 200
    session = Client()
    session.force_login(admin)
    assert session.get(reverse("admin:index")).status_code == 200
