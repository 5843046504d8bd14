"""Fixtures of the browser suite: the app in a subprocess, and a headless Chromium.

The app runs as users run it (``streamlit run streamlit_app.py``) on a free
local port chosen at runtime, with its own empty result store, so the first
page view is cold. The browser is Debian's ``/usr/bin/chromium`` (packages
``chromium`` and ``chromium-driver``; Playwright's own browser download cannot
work offline), else Playwright's bundled Chromium where it is installed.

No browser: under CI (``CI`` set and not false) the tests FAIL, locally they
SKIP, each with the same one-line reason.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
SERVER_START_TIMEOUT_S = 90


def _screenshot_script():
    """scripts/screenshot.py: one place for the Chromium path and launch flags."""
    spec = importlib.util.spec_from_file_location("bnviz_screenshot_script", ROOT / "scripts" / "screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


INSTALL_CHROMIUM = "install it with `apt-get install chromium chromium-driver` (as root)"


def no_browser(reason: str, fix: str = INSTALL_CHROMIUM):
    """Fail under CI (the browser suite must run there), skip locally; one clear message."""
    message = f"e2e browser tests need a headless Chromium: {reason}; {fix}."
    if running_in_ci():
        pytest.fail(message + " (CI is set: a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def results_dir() -> str:
    """The app's own result store (tests read its computation counts)."""
    return tempfile.mkdtemp(prefix="bnviz-e2e-results-")


@pytest.fixture(scope="session")
def server_log(artifacts) -> Path:
    """The app server's log: one per pytest-xdist worker (each worker runs its own server)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return artifacts / (f"streamlit-server-{worker}.log" if worker else "streamlit-server.log")


@contextlib.contextmanager
def running_app(log_path: Path, results_dir: str):
    """``streamlit run streamlit_app.py`` on a free port, ready (``/_stcore/health``); its URL.
    Stopped on exit."""
    env = dict(os.environ, BNVIZ_RESULTS_DIR=results_dir)
    env.pop("BNVIZ_JOBS_IN_SCRIPT", None)  # the app as users run it: jobs followed by fragments
    for _attempt in range(3):  # a port taken between choosing and binding: choose again
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
            "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
            # others edit the files while the suite runs: no "source changed" reruns
            "--server.fileWatcherType", "none",
            # tests do not send usage statistics (and offline, the fetch only logs errors)
            "--browser.gatherUsageStats", "false",
        ]
        log = open(log_path, "w")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None and not _healthy(url):
            time.sleep(0.25)
        if process.poll() is None and _healthy(url):
            break
        process.kill()
        process.wait()
        log.close()
        if "already in use" not in log_path.read_text():
            pytest.fail(f"the app did not start within {SERVER_START_TIMEOUT_S} s; its log:\n{log_path.read_text()[-3000:]}", pytrace=False)
    else:
        pytest.fail("no free port for the app after 3 tries", pytrace=False)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def app_url(server_log, results_dir):
    """The app the suite shares (one per pytest-xdist worker), with its own empty result store."""
    with running_app(server_log, results_dir) as url:
        yield url


@pytest.fixture
def fresh_app_url(artifacts):
    """An app of its own, just started, with an empty result store: a first visit is cold
    (torch not imported, nothing computed) wherever the test runs in the suite."""
    with running_app(artifacts / "streamlit-server-fresh.log", tempfile.mkdtemp(prefix="bnviz-e2e-fresh-")) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        no_browser(f"Playwright for Python is not installed ({exc})", "install it with `pip install -r requirements-dev.txt`")
    script = _screenshot_script()
    playwright = sync_playwright().start()
    # Debian's Chromium where it is installed, else Playwright's own (`playwright install chromium`)
    executable = script.CHROMIUM if Path(script.CHROMIUM).exists() else None
    try:
        chromium = playwright.chromium.launch(executable_path=executable, args=script.CHROMIUM_ARGS, headless=True)
    except PlaywrightError as exc:
        playwright.stop()
        which = executable or f"Playwright's own Chromium ({script.CHROMIUM} is missing)"
        no_browser(f"{which} could not start: {str(exc).strip().splitlines()[0]}")
    yield chromium
    chromium.close()
    playwright.stop()
