"""Agents that wait: 100 and 1,000 concurrent one-second steps of `http-request` and `llm` on the default cluster.

A local server on 127.0.0.1 answers every request after 1 s (plain HTTP, and an OpenAI-compatible
chat-completions endpoint for the `llm` agent through the gateway's `local` provider). For each case it
prints the time from the first run created to the last COMPLETED, the cluster's peak RSS (every process
of the qcluster session) and the most PostgreSQL connections open to the bench database meanwhile.
The bare line is the floor: the same number of concurrent requests from one asyncio loop in this
process, no engine. Prints figures, asserts nothing.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import engine_bench as eb  # noqa: E402

DELAY_SECONDS = 1.0


class SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body: dict) -> None:
        time.sleep(DELAY_SECONDS)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._answer({"ok": True})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(
            {
                "id": "bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "bench-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        )

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048


def session_rss_mb(session_id: int) -> float:
    total_kb = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = eb.proc_stat(int(entry))
        if not stat or int(stat[3]) != session_id:
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


async def bare(n: int, url: str) -> float:
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client.get(url) for _ in range(n)))
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000", help="concurrent steps per case")
    parser.add_argument("--redis", action="store_true", help="use the Redis broker")
    parser.add_argument("--agents", default="http-request,llm", help="agents to run")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    server = Server(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    params, note = eb.server_params()
    eb.recreate_database(params, name=eb.BENCH_DB)
    eb.configure_environment(eb.bench_url(params), "redis://127.0.0.1:6379/14" if args.redis else "")
    os.environ.update(
        {
            "HTTP_AGENT_ALLOWLIST": "127.0.0.1",
            "LLM_PROVIDERS": "local",
            "LOCAL_LLM_BASE_URL": f"{base}/v1",
            "LOCAL_LLM_MODEL": "bench-model",
            "OPENAI_API_KEY": "",
            "ANTHROPIC_API_KEY": "",
        }
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    from runs.models import RUN_FINISHED, Run, RunStatus
    from runs.services import run_create

    broker = "Redis" if args.redis else "ORM"
    print(f"async steps on PostgreSQL {note}".rstrip() + f"; {broker} broker; Q_WORKERS=2, ", end="")
    print(f"ASYNC_STEPS_PER_WORKER={settings.ASYNC_STEPS_PER_WORKER}; each request answered after {DELAY_SECONDS:g} s")
    cases = {
        "http-request": lambda: {"url": f"{base}/slow"},
        "llm": lambda: {"prompt": "Say ok.", "max_tokens": 5},
    }
    cases = {name: make for name, make in cases.items() if name in args.agents.split(",")}
    log_dir = Path(tempfile.mkdtemp(prefix="async-bench-"))
    cluster = eb.Cluster(log_dir, "async")
    rows = []
    try:
        from django_q.status import Stat

        eb.wait_for(Stat.get_all, timeout=60, interval=0.1, what="cluster start", cluster=cluster)
        for agent, make_input in cases.items():  # warm up the workers' imports
            run_create(agent_type=agent, input=make_input())
        eb.wait_for(
            lambda: Run.objects.filter(status=RunStatus.COMPLETED).count() == len(cases),
            timeout=60,
            interval=0.1,
            what="warm-up runs",
            cluster=cluster,
        )
        for n in sizes:
            floor = asyncio.run(bare(n, f"{base}/slow"))
            rows.append((f"bare asyncio, {n} concurrent GETs", floor, None, None, None))
            for agent, make_input in cases.items():
                Run.objects.all().delete()
                peak_rss, peak_conns, failed = 0.0, 0, 0
                started = time.perf_counter()
                ids = [run_create(agent_type=agent, input=make_input())[0].pk for _ in range(n)]
                created = time.perf_counter() - started
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    cluster.check_alive()
                    peak_rss = max(peak_rss, session_rss_mb(cluster.process.pid))
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()"
                        )
                        peak_conns = max(peak_conns, cursor.fetchone()[0])
                    finished = Run.objects.filter(pk__in=ids, status__in=RUN_FINISHED).count()
                    if finished == n:
                        break
                    time.sleep(0.1)
                elapsed = time.perf_counter() - started
                failed = Run.objects.filter(pk__in=ids).exclude(status=RunStatus.COMPLETED).count()
                rows.append((f"{agent}, {n} runs (created in {created:.1f} s)", elapsed, peak_rss, peak_conns, failed))
    finally:
        cluster.stop()
        server.shutdown()
        connection.close()
        eb.recreate_database(params, name=eb.BENCH_DB, drop_only=True)
    print(f"{'case':<52} {'first POST→last done':>21} {'peak RSS':>10} {'PG conns':>9} {'not completed':>14}")
    for name, elapsed, rss, conns, failed in rows:
        rss_text = f"{rss:.0f} MB" if rss is not None else ""
        print(
            f"{name:<52} {elapsed:>19.2f} s {rss_text:>10} {'' if conns is None else conns:>9} "
            f"{'' if failed is None else failed:>14}"
        )
    print("targets: 100 steps <= 3 s, 1,000 steps <= 15 s, cluster RSS <= 600 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
