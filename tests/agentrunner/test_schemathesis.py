"""schemathesis over the whole OpenAPI document against a live server, as staff and as a non-staff user:
whatever it sends, no answer is a server error (5xx).

Bounded: a few examples per operation and phase, fixed seeds. `GET /api/v1/health` is left out: it answers
503 by design while no worker cluster runs (its own tests cover it).

The coverage phase (every parameter's boundaries and wrong types: ~3,000 requests, 70% of the time) runs as
staff, who pass every permission check and so reach every validator; the non-staff user, whose requests
mostly stop at a permission check, runs the other phases (examples, fuzzing, stateful).
"""

import subprocess
import sys

import pytest
from rest_framework.authtoken.models import Token

from agentrunner.models import Role
from tests.conftest import join

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_OPERATION = 5


@pytest.mark.parametrize(
    "role,seed,phases", [("staff", 1, "examples,coverage,fuzzing,stateful"), ("user", 2, "examples,fuzzing,stateful")]
)
def test_no_input_makes_a_server_error(web, django_user_model, role, seed, phases, tmp_path):
    user = django_user_model.objects.create_user(role, is_staff=role == "staff", is_superuser=role == "staff")
    join(user, Role.RUNNER)  # the superuser acts in the default team all the same
    token = Token.objects.create(user=user).key
    # No run-start limit: past 20 starts a minute every start would answer 429 before reaching its validators.
    port = web(
        WEB_THREADS="8",
        REQUEST_BODY_SECONDS="30",
        RUN_STARTS_PER_USER_PER_MINUTE="0",
        RUN_STARTS_PER_TEAM_PER_MINUTE="0",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"http://127.0.0.1:{port}/api/schema/",
            "--header",
            f"Authorization: Token {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            str(seed),
            "--workers",
            "2",
            "--exclude-operation-id",
            "health",
            "--phases",
            phases,
            "--generation-database",
            "none",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
