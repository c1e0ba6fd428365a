"""What the benches share: the PostgreSQL server they create their own database on, CPU time of processes."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def server_params() -> tuple[dict, str]:
    """Connection parameters of the PostgreSQL server named by DATABASE_URL (never its database)."""
    url = os.environ.get("DATABASE_URL", "") or DEFAULT_SERVER
    parsed = urlparse(url)
    note = ""
    if parsed.scheme not in {"postgres", "postgresql", "pgsql", "psql"}:
        note = f"DATABASE_URL is not PostgreSQL ({parsed.scheme or url!r}); using {DEFAULT_SERVER}'s server"
        parsed = urlparse(DEFAULT_SERVER)
    params = {
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": unquote(parsed.username or "postgres"),
    }
    if parsed.password:
        params["password"] = unquote(parsed.password)
    return params, note


def recreate_database(params: dict, *, name: str, drop_only: bool = False) -> None:
    """Drop the bench database `name` (and create it empty unless `drop_only`) on the server of `params`."""
    import psycopg

    with psycopg.connect(**params, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (index 0 = state), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float:
    stat = proc_stat(pid)
    return sum(int(x) for x in stat[11:13]) / CLOCK_TICKS if stat else 0.0


def ms(seconds: float) -> float:
    return seconds * 1000.0
