"""The browser tests' machinery: for the module, one gunicorn and one worker cluster on the test database and one
headless Chromium (the Debian package, driven by Playwright; nothing is downloaded); per test, a fresh browser
context; on a failure, a screenshot and the page's HTML, named in the failure message.

The server and the cluster outlive single tests: they use the test database, which `transactional_db` empties
after each test, so every test creates its own users and data. Without Chromium the tests are skipped, unless
REQUIRE_BROWSER=1 (CI), where that is a failure. BROWSER_STEPS=<dir> also saves a screenshot at every step
a test names (`step(page, "...")`), to look at the pages.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    BASE_DIR,
    CLUSTER_START_TIMEOUT_SECONDS,
    Cluster,
    answers,
    free_port,
    test_database_url,
    wait_for,
)

SCREENSHOT_DIR = BASE_DIR / "var" / "test-screenshots"
VIEWPORT = {"width": 1280, "height": 900}
WAIT_MS = 30_000  # what a page may take to show what a test waits for (a run finishing included)
SERVER_START_SECONDS = 40
SERVER_STOP_SECONDS = 15
PASSWORD = "a-browser-test-password"


def chromium_path() -> str:
    """The system Chromium; skip the test without it (fail when REQUIRE_BROWSER=1)."""
    path = shutil.which("chromium")
    if path:
        return path
    reason = "the browser tests need the Debian package chromium (apt-get install chromium); it is not installed"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and REQUIRE_BROWSER=1 requires them", pytrace=False)
    pytest.skip(reason)


# --- Chromium -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def async_unsafe_allowed():
    """Let the tests use the ORM while Chromium is open.

    Playwright's sync API keeps an event loop running in the test thread from start to stop, so Django takes the
    test code for async code and refuses ORM calls (SynchronousOnlyOperation). It is not: one thread makes one
    call at a time. Only for this module: the loop stops with Playwright.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="module")
def browser(async_unsafe_allowed):
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


# --- the web server and the workers -------------------------------------------------------------------------------


@dataclass
class Site:
    url: str
    logs: list[Path]


def _process_env(settings_module: str, **overrides: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=test_database_url(),
        PYTHONPATH=str(BASE_DIR),
        **overrides,
    )
    return env


@pytest.fixture(scope="module")
def site(browser, django_db_setup, tmp_path_factory):
    """gunicorn (as `make run` starts it, with the static files served) and a cluster of 2 workers, on the test
    database, started side by side."""
    logs = tmp_path_factory.mktemp("browser-site")
    port = free_port()
    web_log_path = logs / "gunicorn.log"
    with open(web_log_path, "w") as web_log:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"],
            cwd=BASE_DIR,
            env=_process_env("tests.browser.settings", WEB_CONCURRENCY="1", WEB_THREADS="4"),
            stdout=web_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster = None
    try:
        cluster = Cluster(logs / "cluster.log", 2, _process_env("tests.settings", Q_WORKERS="2"))
        wait_for(
            lambda: answers(port) or web.poll() is not None, timeout=SERVER_START_SECONDS, message="gunicorn to serve"
        )
        assert web.poll() is None, web_log_path.read_text()
        wait_for(
            lambda: cluster.is_running() or cluster.process.poll() is not None,
            timeout=CLUSTER_START_TIMEOUT_SECONDS,
            message="the cluster to start",
        )
        assert cluster.process.poll() is None, cluster.output()
        yield Site(url=f"http://127.0.0.1:{port}", logs=[web_log_path, cluster.log_path])
    finally:
        if cluster is not None:
            cluster.stop()
        web.terminate()
        try:
            web.wait(timeout=SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()
        with contextlib.suppress(ProcessLookupError):  # leave no gunicorn worker behind
            os.killpg(web.pid, signal.SIGKILL)


# --- per test ---------------------------------------------------------------------------------------------------


@pytest.fixture
def admin(transactional_db, django_user_model):
    """A superuser who logs in with PASSWORD."""
    return django_user_model.objects.create_superuser("admin", "admin@example.com", PASSWORD)


@pytest.fixture
def page(request, browser, site):
    """A page in a browser context of its own (no cookies from other tests), its addresses relative to the site."""
    context = browser.new_context(base_url=site.url, viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    request.addfinalizer(context.close)
    page = context.new_page()
    request.node.browser_page = page  # for the screenshot of a failure (pytest_runtest_makereport)
    request.node.browser_logs = site.logs
    return page


def log_in(page, username: str = "admin", password: str = PASSWORD) -> None:
    """Log in through the admin's login form; the admin's home page (the dashboard) follows."""
    from playwright.sync_api import expect

    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))


def step(page, name: str) -> None:
    """A step worth looking at: saved as a screenshot when BROWSER_STEPS names a folder."""
    folder = os.environ.get("BROWSER_STEPS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=Path(folder) / f"{name}.png", full_page=True)


# --- a failure's screenshot -----------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure while a test's page is open, save a screenshot and the page's HTML and name them in the
    failure message (the page is still open here: the fixture's finalizer closes it afterwards)."""
    report = yield
    page = getattr(item, "browser_page", None)
    if report.failed and report.when in ("setup", "call") and page is not None and not page.is_closed():
        saved = save_page(page, item.nodeid)
        logs = ", ".join(str(path) for path in getattr(item, "browser_logs", []))
        report.sections.append(("browser", f"{saved}\nserver logs (kept with the test's temporary files): {logs}"))
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:  # its first line is the one the short summary shows
            first, newline, rest = crash.message.partition("\n")
            crash.message = f"{first} [{saved}]{newline}{rest}"
    return report


def save_page(page, nodeid: str) -> str:
    """Save the page as a PNG (the whole page) and HTML; return a phrase naming the files."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    stem = SCREENSHOT_DIR / re.sub(r"[^\w.-]+", "_", nodeid.rsplit("/", 1)[-1])
    try:
        page.screenshot(path=f"{stem}.png", full_page=True)
        Path(f"{stem}.html").write_text(page.content())
    except Exception as exc:  # a crashed browser: the failure itself must still be reported
        return f"no screenshot of the page ({exc.__class__.__name__}: {exc})"
    return f"screenshot: {stem.relative_to(BASE_DIR)}.png, HTML: {stem.name}.html, page: {page.url}"
