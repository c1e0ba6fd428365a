import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agentrunner.models import Membership, Role, Team
from agentrunner.teams.services import team_default

BASE_DIR = Path(__file__).resolve().parent.parent
CLUSTER_START_TIMEOUT_SECONDS = 40


def wait_for(predicate, *, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Poll until predicate() is truthy; return its value or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def test_database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # not a test


class Cluster:
    """A real `manage.py qcluster` process against the test database."""

    def __init__(self, log_path: Path, workers: int, env: dict):
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "qcluster"],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def is_running(self) -> bool:
        return "running." in self.output()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # leave no orphaned worker behind
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def clusters(transactional_db, tmp_path):
    """Start real worker clusters: `clusters(n, workers=2)`; all are stopped after the test."""
    started: list[Cluster] = []

    def start(n: int = 1, workers: int = 2, **env_overrides) -> list[Cluster]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": test_database_url(),
            "Q_WORKERS": str(workers),
            "PYTHONPATH": str(BASE_DIR),
            **{k: str(v) for k, v in env_overrides.items()},
        }
        new = [Cluster(tmp_path / f"cluster-{len(started) + i}.log", workers, env) for i in range(n)]
        started.extend(new)
        for c in new:
            wait_for(
                lambda c=c: c.is_running() or c.process.poll() is not None,
                timeout=CLUSTER_START_TIMEOUT_SECONDS,
                message="cluster start",
            )
            assert c.process.poll() is None, c.output()
        return new

    yield start
    for c in started:
        c.stop()


# The apps whose API and admin staff manage with Django's model permissions (agentrunner.api.ModelPermissions).
MANAGED_APPS = ("flows", "schedules", "digests")


def grant(user, *permissions: str):
    """Give `user` permissions by full name, e.g. grant(user, "flows.view_flow")."""
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def join(user, role: str = Role.RUNNER, team: Team | None = None) -> Membership:
    """Make `user` a member of `team` (the default team if None) with `role`."""
    team = team or team_default()
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    return membership


def team_named(slug: str) -> Team:
    return Team.objects.get_or_create(slug=slug, defaults={"name": slug.capitalize()})[0]


def staff_member(django_user_model, username, *memberships):
    """A staff user with (role, team) memberships."""
    user = django_user_model.objects.create_user(username=username, password="pw", is_staff=True)
    for role, team in memberships:
        join(user, role, team)
    return user


def filter_choices(client, url) -> list[str]:
    """Every choice of every filter of the admin list at `url`, as it is shown."""
    changelist = client.get(url).context["cl"]
    return [str(c["display"]) for spec in changelist.filter_specs for c in spec.choices(changelist)]


@pytest.fixture
def staff_user(django_user_model):
    """A staff member who manages flows, schedules and digests: an editor of the default team."""
    user = django_user_model.objects.create_user(username="staff", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=MANAGED_APPS))
    join(user, Role.EDITOR)
    return user


@pytest.fixture
def owner(django_user_model):
    """A user who starts runs: a runner of the default team."""
    user = django_user_model.objects.create_user(username="owner", password="pw")
    join(user, Role.RUNNER)
    return user


@pytest.fixture
def outsider(django_user_model):
    """A runner of another team ("other"): sees nothing of the default team's."""
    user = django_user_model.objects.create_user(username="outsider", password="pw")
    join(user, Role.RUNNER, team_named("other"))
    return user


def client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(owner) -> APIClient:
    return client_for(owner)


@pytest.fixture
def staff_api(staff_user) -> APIClient:
    return client_for(staff_user)


@pytest.fixture
def superuser(django_user_model):
    """A superuser (who acts as an admin of every team) that belongs to no team."""
    return django_user_model.objects.create_superuser(username="root", password="pw", email="root@example.com")


@pytest.fixture
def superuser_api(superuser) -> APIClient:
    return client_for(superuser)


# --- a live web server (gunicorn with the repository's gunicorn.conf.py) ---


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web(tmp_path):
    """Start gunicorn with the repository's settings (1 worker x 4 threads, a 2 s body deadline); returns its port."""
    started = []

    def start(**env_overrides) -> int:
        port = free_port()
        log = open(tmp_path / f"gunicorn-{port}.log", "w")  # noqa: SIM115 (closed below)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": test_database_url(),
            "PYTHONPATH": str(BASE_DIR),
            "WEB_CONCURRENCY": "1",
            "WEB_THREADS": "4",
            "REQUEST_BODY_SECONDS": "2",
            **env_overrides,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append((process, log))
        wait_for(lambda: answers(port), timeout=40, message="gunicorn to serve")
        return port

    yield start
    for process, log in started:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # 503 without workers is an answer
    except OSError:
        return False
