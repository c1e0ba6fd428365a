"""`make cluster-demo`: the docker-compose topology without Docker, on this machine.

One web process (gunicorn, as the image runs it) and three worker clusters (`manage.py qcluster`, 2 workers
each) against PostgreSQL and Redis; 300 runs are started over the API and the demo shows which cluster ran how
many (from each cluster's own log: the runs its workers started). It creates its own database
(`agentrunner_clusterdemo` on the server of DATABASE_URL, else 127.0.0.1:5432) and uses one Redis database
(REDIS_URL, default redis://127.0.0.1:6379/13, emptied first). Exit status 1 if a run did not complete or a
cluster took no work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import recreate_database, server_params  # noqa: E402

DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
TOKEN_SCRIPT = (
    "import uuid; from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
    "u = get_user_model().objects.create_superuser('demo-' + uuid.uuid4().hex[:8], None, None); "
    "print(Token.objects.create(user=u).key)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return 0, {}


def wait_until(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"cluster-demo: timed out after {timeout:.0f} s waiting for {what}")


def started_runs(log: Path) -> set[str]:
    """The runs whose steps this cluster's workers started (its `agent_start` log lines)."""
    runs = set()
    for line in log.read_text(errors="replace").splitlines():
        if '"agent_start"' in line:
            try:
                event = json.loads(line[line.index("{") :])
            except ValueError:
                continue
            if event.get("event") == "agent_start" and event.get("run_id"):
                runs.add(event["run_id"])
    return runs


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every process group at once (each stops cleanly on its own), SIGKILL after 30 s."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per cluster")
    parser.add_argument("--seconds", type=float, default=0.2, help="what each run waits (agent `wait`)")
    parser.add_argument("--database", default="agentrunner_clusterdemo")
    parser.add_argument(
        "--database-url", help="use this migrated PostgreSQL database as it is (the test's) instead of a new one"
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS, help="emptied first")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)

    params, note = server_params()
    own_database = not args.database_url
    if own_database:
        if note:
            print(note)
        recreate_database(params, name=args.database)
        password = f":{quote(params['password'])}" if params.get("password") else ""
        host = f"{params['host']}:{params['port']}"
        database_url = f"postgres://{quote(params['user'])}{password}@{host}/{args.database}"
    else:
        database_url = args.database_url
    redis_url = args.redis_url
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    log_dir = Path(tempfile.mkdtemp(prefix="cluster-demo-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "agentrunner.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DEBUG": "0",
        "SECRET_KEY": "cluster-demo-only-insecure-secret-key-0123456789abcdefghijklmnop",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_FORMAT": "json",
        "Q_WORKERS": str(args.workers),
        "RUN_STARTS_PER_TEAM_PER_MINUTE": "0",
        "RUN_STARTS_PER_USER_PER_MINUTE": "0",
        "PYTHONPATH": str(BASE_DIR),
    }
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    if own_database:
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=BASE_DIR, env=env, check=True)
    token = (
        subprocess.run(
            [*manage, "shell", "-c", TOKEN_SCRIPT], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    processes: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(name: str, command: list[str]) -> None:
        log = log_dir / f"{name}.log"
        logs.append(log)
        with open(log, "w") as out:
            processes.append(
                subprocess.Popen(
                    command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    port = free_port()
    began = time.monotonic()
    ok = False
    try:
        start("web", [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"])
        for i in range(1, args.clusters + 1):
            start(f"cluster-{i}", [*manage, "qcluster"])
        wait_until(lambda: request(port, "/api/v1/health")[0] == 200, timeout=90, what="the web and a worker")
        print(f"1 web (gunicorn, port {port}) and {args.clusters} clusters of {args.workers} workers are up.")

        body = {"agent_type": "wait", "input": {"seconds": args.seconds}}
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(lambda _: request(port, "/api/v1/runs", token, body), range(args.runs)))
        ids = [answer["id"] for status, answer in answers if status == 202]
        print(f"Started {len(ids)} of {args.runs} runs over the API.")

        def finished() -> int | None:
            status, page = request(port, "/api/v1/runs?status=COMPLETED&limit=1", token)
            done = page.get("count", 0) if status == 200 else 0
            return done if done >= len(ids) else None

        wait_until(finished, timeout=max(60.0, args.runs * args.seconds), what=f"{len(ids)} runs to complete")
        print(f"All {len(ids)} runs COMPLETED in {time.monotonic() - began:.1f} s.\n")

        took = {f"cluster-{i}": started_runs(log) for i, log in enumerate(logs[1:], start=1)}
        print(f"{'cluster':<10} {'runs':>5}  share")
        for name, runs in took.items():
            print(f"{name:<10} {len(runs):>5}  {len(runs) / max(len(ids), 1):6.1%}")
        ok = len(ids) == args.runs and all(took.values())
        print("\nEvery cluster took work." if ok else "\nNOT every cluster took work (or a start failed).")
    finally:
        stop(processes)
        if args.keep:
            print(f"Logs in {log_dir}; database kept.")
        else:
            for log in logs:
                log.unlink(missing_ok=True)
            log_dir.rmdir()
            if own_database:
                recreate_database(params, name=args.database, drop_only=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
