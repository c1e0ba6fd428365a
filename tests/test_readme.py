"""The README's API examples, run as written against a live server (gunicorn + a worker cluster) that holds
what `make run` loads (the demo flow, schedule and digests), so the examples stay true.

Every `curl` of the README's shell blocks runs through bash in the repository (for `$(cat samples/...)`),
in order, with three changes only: the server's port, the token (`TOKEN=...`), and the `<run_id>` / `<id>`
placeholders, which take the id the previous answer gave, as a reader would paste it. An example's
`# -> 202 ...` comment is the status it must answer; then the runs the examples started must end as the
README says.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from flows.models import Flow
from runs.models import Run, RunStatus
from tests.conftest import wait_for

README = Path(__file__).resolve().parent.parent / "README.md"
BASE_DIR = README.parent
README_ORIGIN = "http://127.0.0.1:8000"


@dataclass
class Example:
    command: str
    expected_status: int | None = None
    expectations: list[str] = field(default_factory=list)


def readme_examples() -> list[Example]:
    """The curl commands of the README's shell blocks, each with the `# -> ...` lines that follow it."""
    text = README.read_text()
    examples: list[Example] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        if "curl " not in block:
            continue
        pending = ""
        for line in block.splitlines():
            if not pending and line.lstrip().startswith("#"):
                comment = line.strip()
                if comment.startswith("# ->") and examples:
                    examples[-1].expectations.append(comment)
                    status = re.match(r"# -> (\d{3})\b", comment)
                    if status:
                        examples[-1].expected_status = int(status.group(1))
                continue
            if not pending and (not line.strip() or line.startswith("TOKEN=")):
                continue
            pending += line + "\n"
            if pending.rstrip().endswith("\\") or not _complete(pending):
                continue
            examples.append(Example(command=pending.strip()))
            pending = ""
        assert not pending, f"unfinished command in the README: {pending}"
    return examples


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def run_example(example: Example, *, port: int, token: str, ids: dict) -> tuple[int, object]:
    command = example.command.replace(README_ORIGIN, f"http://127.0.0.1:{port}")
    for placeholder, key in (("<run_id>", "run_id"), ("<id>", "id")):
        if placeholder in command:
            assert ids.get(key), f"no {key} from an earlier example for: {command}"
            command = command.replace(placeholder, str(ids[key]))
    assert command.startswith("curl "), command
    command = "curl -w '\\n%{http_code}' " + command[len("curl ") :]
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=BASE_DIR,
        env={"PATH": "/usr/bin:/bin", "TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    body, _, status = done.stdout.rpartition("\n")
    try:
        answer = json.loads(body) if body else None
    except json.JSONDecodeError:
        answer = body
    if isinstance(answer, dict):
        for key in ("run_id", "id"):
            if key in answer and example.command.split()[-1].rstrip("/").endswith(("runs", "agents/run")):
                ids[key] = answer[key]
    return int(status), answer


def test_the_readme_has_examples_to_run():
    examples = readme_examples()
    assert len(examples) >= 10
    assert any("flows/claim-intake/runs" in e.command for e in examples)
    assert any(e.expected_status == 201 for e in examples)


@pytest.mark.cluster
def test_every_readme_api_example_answers_as_written(clusters, web, django_user_model):
    call_command("ensure_demo_content", verbosity=0)
    admin = django_user_model.objects.create_superuser("admin", "admin@example.com", "not-printed")
    token = Token.objects.create(user=admin).key
    clusters(1)
    port = web()

    ids: dict = {}
    answers = []
    for example in readme_examples():
        status, answer = run_example(example, port=port, token=token, ids=ids)
        answers.append((example, status, answer))
        expected = example.expected_status
        assert (status == expected) if expected else status < 400, (
            f"{example.command}\nanswered {status}: {answer}\nexpected: {example.expectations or '< 400'}"
        )

    # The runs the examples started end as the README says.
    extract = Run.objects.get(agent_type="document-extractor")
    wait_for(lambda: Run.objects.get(pk=extract.pk).is_finished, timeout=60, message="the extraction")
    extract.refresh_from_db()
    assert extract.status == RunStatus.COMPLETED, extract.error
    assert extract.result["fields"]["policy_number"] == "PL-2025-004211"

    waited = Run.objects.get(agent_type="wait", idempotency_key="demo-1")
    wait_for(lambda: Run.objects.get(pk=waited.pk).is_finished, timeout=30, message="the cancel")
    assert Run.objects.get(pk=waited.pk).status == RunStatus.CANCELLED

    flow = Flow.objects.get(slug="claim-intake")
    (flow_run,) = Run.objects.filter(flow_version__flow=flow, schedule__isnull=True)
    wait_for(lambda: Run.objects.get(pk=flow_run.pk).is_finished, timeout=60, message="the flow run")
    flow_run.refresh_from_db()
    assert flow_run.status == RunStatus.COMPLETED, flow_run.error
    assert flow_run.result["path"] == ["extract", "check", "accepted"]

    created = [(e.command, s) for e, s, _ in answers if e.expected_status == 201]
    assert created and all(s == 201 for _, s in created)
