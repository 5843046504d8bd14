"""Browser timings of every page: first paint, idle, and a warm revisit's idle.

For each page, a fresh server process (``streamlit run streamlit_app.py``, with its own
empty result store unless ``--results-dir`` names a precomputed one) and a headless
Chromium that opens the page and measures, from ``page.goto``:

- **first paint**: the first visible text in the page's main area (its title);
- **idle**: Streamlit's running indicator gone and no bnviz computation box left
  (the results are computed, or read from the store), stable for half a second;
- **warm revisit**: the same URL opened again in a new tab of the same server: the
  process is warm and the results are stored.

    .venv/bin/python benchmarks/page_timings.py                      # every page, one server each
    .venv/bin/python benchmarks/page_timings.py --pages home,placement
    .venv/bin/python -m bnviz precompute && \\
        .venv/bin/python benchmarks/page_timings.py --results-dir .bnviz_cache/results   # fresh process, stored results

Prints a table in seconds. Timings depend on the machine's load: run it on a quiet one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from screenshot import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from classroom_load import start_server  # noqa: E402  (the app as users run it, ready at /_stcore/health)

# url path of each page (streamlit_app.py's PAGES), in the article's order; "" is home
PAGES = {
    "home": "",
    "normalization-math": "normalization-math",
    "train-vs-eval": "train-vs-eval",
    "paper-results": "paper-results",
    "distribution-shift": "distribution-shift",
    "common-pitfalls": "common-pitfalls",
    "bn-vs-layernorm": "bn-vs-layernorm",
    "small-batches": "small-batches",
    "placement": "placement",
    "why-bn-works": "why-bn-works",
}
FIRST_TEXT = """() => [...document.querySelectorAll('[data-testid="stMain"] :is(h1, h2, p)')]
                     .some(e => e.innerText.trim() && e.getBoundingClientRect().height > 0)"""
# Streamlit's running indicator, or a computation's progress box (bnviz.app: class st-key-bnviz-job-...)
BUSY = """() => !!document.querySelector('[data-testid="stStatusWidget"], [class*="st-key-bnviz-job-"], [data-testid="stSpinner"]')"""
STABLE_S = 0.5
POLL_S = 0.05


def wait_for(page, predicate: str, started: float, timeout_s: float) -> float:
    """Seconds from ``started`` until the JS ``predicate`` holds."""
    while time.perf_counter() - started < timeout_s:
        if page.evaluate(predicate):
            return time.perf_counter() - started
        time.sleep(POLL_S)
    return float("nan")


def wait_idle(page, started: float, timeout_s: float) -> float:
    """Seconds from ``started`` until the page is not busy, and stays so for STABLE_S (a
    rerun starting right after a script run ends is not idle)."""
    idle_since = None
    while time.perf_counter() - started < timeout_s:
        now = time.perf_counter()
        if page.evaluate(BUSY):
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= STABLE_S:
            return idle_since - started
        time.sleep(POLL_S)
    return float("nan")


def visit(browser, url: str, timeout_s: float) -> tuple[float, float]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    started = time.perf_counter()
    page.goto(url, wait_until="commit")
    first_paint = wait_for(page, FIRST_TEXT, started, timeout_s)
    page.wait_for_timeout(300)  # the script run has begun: its indicator is up
    idle = wait_idle(page, started, timeout_s)
    page.close()
    return first_paint, idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names (default: all)")
    parser.add_argument("--results-dir", help="a result store to use (default: a new empty one per server)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one page (default 600)")
    args = parser.parse_args()
    names = [name.strip() for name in args.pages.split(",") if name.strip()]
    unknown = [name for name in names if name not in PAGES]
    if unknown:
        parser.error(f"unknown pages {unknown}; known: {', '.join(PAGES)}")
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else None, args=CHROMIUM_ARGS)
        for name in names:
            server, url = start_server(args.results_dir or tempfile.mkdtemp(prefix="bnviz-timings-"))
            try:
                page_url = f"{url}/{PAGES[name]}"
                first_paint, cold_idle = visit(browser, page_url, args.timeout)
                _, warm_idle = visit(browser, page_url, args.timeout)
            finally:
                server.terminate()
                server.wait()
            rows.append((name, first_paint, cold_idle, warm_idle))
            print(f"  {name}: first paint {first_paint:.2f} s, idle {cold_idle:.2f} s, warm revisit idle {warm_idle:.2f} s", file=sys.stderr, flush=True)
        browser.close()
    store = "given store" if args.results_dir else "empty store"
    print(f"\n| page | first paint (fresh server) | idle (fresh server, {store}) | warm revisit: idle |")
    print("|---|---|---|---|")
    for name, first_paint, cold_idle, warm_idle in rows:
        print(f"| {name} | {first_paint:.2f} s | {cold_idle:.2f} s | {warm_idle:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
