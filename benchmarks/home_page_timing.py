"""Load times of the home page in a real headless Chromium.

Starts the app with an empty result cache and opens the home page three times:
a fresh server process (torch and MNIST still to load, result not cached), the
same server with a new seed (process warm, result not cached: what a user who
moves a control meets), and the same URL again (result cached). Prints the
seconds until the first chart is drawn and until the run finishes.

    .venv/bin/python benchmarks/home_page_timing.py
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from screenshot import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    port = free_port()
    env = os.environ | {"BNVIZ_RESULTS_DIR": tempfile.mkdtemp(prefix="bnviz-bench-")}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true", "--server.port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            visits = [("fresh process, result not cached", "seed=0"), ("warm process, result not cached", "seed=1"), ("result cached", "seed=1")]
            for visit, query in visits:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                started = time.perf_counter()
                page.goto(f"http://localhost:{port}/?{query}")
                page.wait_for_selector('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg', timeout=120_000)
                first_chart = time.perf_counter() - started
                page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
                finished = time.perf_counter() - started
                print(f"{visit:34s}: first chart after {first_chart:.2f} s, run finished after {finished:.2f} s")
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
