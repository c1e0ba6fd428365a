"""The migration into teams (issue 13): existing rows and users go into the default team.

Run on the real schema: the database is migrated back to before teams, rows are written with the models of that
time, and the migrations are applied forward again. On PostgreSQL the team becomes NOT NULL in a migration of its
own, after the rows' foreign keys were filled (one transaction cannot do both there): this test is what proves it.
"""

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [
    ("agentrunner", "0003_rate_limit_key"),
    ("runs", "0007_engine_partial_indexes"),
    ("flows", "0001_initial"),
    ("schedules", "0001_initial"),
    ("digests", "0001_initial"),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def latest():
    """The latest migration of every app, to return to after the test (whatever it did)."""
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    yield leaves
    migrate(leaves)


def test_existing_rows_and_users_move_into_the_default_team(latest):
    old = migrate(BEFORE)
    User = old.get_model("auth", "User")
    staff = User.objects.create(username="old-staff", is_staff=True)
    member = User.objects.create(username="old-member")
    root = User.objects.create(username="old-root", is_superuser=True, is_staff=True)
    Flow = old.get_model("flows", "Flow")
    FlowVersion = old.get_model("flows", "FlowVersion")
    flow = Flow.objects.create(slug="intake", name="Intake", owner=staff)
    version = FlowVersion.objects.create(flow=flow, number=1, definition={"name": "x"}, digest="d", created_by=staff)
    run = old.get_model("runs", "Run").objects.create(
        id=uuid.uuid4(), flow_version=version, created_by=member, status="COMPLETED"
    )
    agent_run = old.get_model("runs", "Run").objects.create(id=uuid.uuid4(), agent_type="pass", created_by=member)
    schedule = old.get_model("schedules", "Schedule").objects.create(
        name="nightly", agent_type="pass", kind="interval", interval_seconds=600, created_by=staff
    )
    digest = old.get_model("digests", "DigestSubscription").objects.create(
        name="Top", recipients="a@example.com", agent_type="pass", created_by=staff
    )
    old.get_model("agentrunner", "LLMCall").objects.create(
        run_id=run.pk, owner=member, request_id=uuid.uuid4(), outcome="success", created_at=timezone.now()
    )

    new = migrate(latest)

    Team = new.get_model("agentrunner", "Team")
    default = Team.objects.get(slug="default")
    assert list(Team.objects.values_list("slug", flat=True)) == ["default"]
    roles = dict(new.get_model("agentrunner", "Membership").objects.values_list("user__username", "role"))
    assert roles == {"old-staff": "admin", "old-member": "runner", "old-root": "admin"}
    assert root.pk  # a superuser is an admin of the default team too (and acts in any team anyway)
    for app, model, pk in [
        ("runs", "Run", run.pk),
        ("runs", "Run", agent_run.pk),
        ("flows", "Flow", flow.pk),
        ("schedules", "Schedule", schedule.pk),
        ("digests", "DigestSubscription", digest.pk),
    ]:
        assert new.get_model(app, model).objects.get(pk=pk).team_id == default.pk, (app, model)
    assert set(new.get_model("agentrunner", "LLMCall").objects.values_list("team_id", flat=True)) == {default.pk}
    # The team is required from now on.
    team_field = new.get_model("runs", "Run")._meta.get_field("team")
    assert team_field.null is False
