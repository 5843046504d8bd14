"""Browser timings of every page: first paint, idle, and a warm revisit's idle.

For each page, a fresh server process (``streamlit run streamlit_app.py``, with its own
empty result store unless ``--results-dir`` names a precomputed one) and a headless
Chromium that opens the page and measures, from ``page.goto``:

- **first paint**: the first visible text in the page's main area (its title);
- **idle**: Streamlit's running indicator gone and no bnviz computation box left
  (the results are computed, or read from the store), stable for half a second;
- **warm revisit**: the same URL opened again in a new tab of the same server: the
  process is warm and the results are stored;
- **navigation revisit**: in that tab, the sidebar link to another page, then the
  link back: idle after the click back (what a class does between sections).

``--floor`` adds a row for Streamlit itself: a one-file app with a title and one Altair
chart, timed the same way in the same browser (what no page of bnviz can beat).
``--app-root`` times another checkout (e.g. ``git worktree add /tmp/before 698e633``)
with this script, for a before/after in one sitting.

    .venv/bin/python benchmarks/page_timings.py                      # every page, one server each
    .venv/bin/python benchmarks/page_timings.py --pages home,placement --floor
    .venv/bin/python benchmarks/page_timings.py --app-root /tmp/before   # an earlier commit's app
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
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from screenshot import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from classroom_load import load, start_server  # noqa: E402  (the app as users run it, ready at /_stcore/health)

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


FLOOR_APP = """import altair as alt
import pandas as pd
import streamlit as st

st.title("Streamlit alone")
st.write("One title, one paragraph and one Altair chart: the floor a bnviz page stands on.")
frame = pd.DataFrame({"step": range(200), "accuracy": [1 - 0.9 * 0.98 ** i for i in range(200)]})
st.altair_chart(alt.Chart(frame).mark_line().encode(x="step:Q", y="accuracy:Q"))
"""


def visit(browser, url: str, timeout_s: float, keep: bool = False):
    """(first paint, idle) of ``url`` in a new tab; with ``keep``, the tab too."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    started = time.perf_counter()
    page.goto(url, wait_until="commit")
    first_paint = wait_for(page, FIRST_TEXT, started, timeout_s)
    page.wait_for_timeout(300)  # the script run has begun: its indicator is up
    idle = wait_idle(page, started, timeout_s)
    if keep:
        return first_paint, idle, page
    page.close()
    return first_paint, idle


def nav_link(page, path: str):
    """The sidebar navigation link to the page at url ``path`` ("" is home)."""
    links = page.locator('[data-testid="stSidebarNavLink"]')
    for index in range(links.count()):
        if urlsplit(links.nth(index).get_attribute("href") or "").path.strip("/") == path:
            return links.nth(index)
    return None


def navigation_revisit(page, path: str, timeout_s: float) -> float:
    """From ``page`` (showing ``path``, idle): the link to another page, then back; seconds
    from the click back until idle (nan without a navigation)."""
    away = "" if path else PAGES["normalization-math"]
    link = nav_link(page, away)
    if link is None:
        return float("nan")
    link.click()
    page.wait_for_url(lambda url: urlsplit(url).path.strip("/") == away, timeout=timeout_s * 1000)
    page.wait_for_timeout(300)
    wait_idle(page, time.perf_counter(), timeout_s)
    back = nav_link(page, path)
    started = time.perf_counter()
    back.click()
    page.wait_for_url(lambda url: urlsplit(url).path.strip("/") == path, timeout=timeout_s * 1000)
    page.wait_for_timeout(300)  # the page's run has begun
    return wait_idle(page, started, timeout_s)


def time_page(browser, url: str, path: str, timeout_s: float) -> tuple[float, float, float, float]:
    """(first paint, cold idle, warm revisit idle, navigation revisit idle) on a fresh server at ``url``."""
    first_paint, cold_idle = visit(browser, f"{url}/{path}", timeout_s)
    _, warm_idle, page = visit(browser, f"{url}/{path}", timeout_s, keep=True)
    try:
        nav_idle = navigation_revisit(page, path, timeout_s)
    finally:
        page.close()
    return first_paint, cold_idle, warm_idle, nav_idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names (default: all)")
    parser.add_argument("--results-dir", help="a result store to use (default: a new empty one per server)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one page (default 600)")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the checkout whose app to time (default: this one)")
    parser.add_argument("--floor", action="store_true", help="also time a one-chart Streamlit app (the framework's floor)")
    args = parser.parse_args()
    names = [name.strip() for name in args.pages.split(",") if name.strip()]
    unknown = [name for name in names if name not in PAGES]
    if unknown:
        parser.error(f"unknown pages {unknown}; known: {', '.join(PAGES)}")
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else None, args=CHROMIUM_ARGS)
        targets = [(name, args.app_root, "streamlit_app.py", PAGES[name]) for name in names]
        if args.floor:
            floor_root = Path(tempfile.mkdtemp(prefix="bnviz-floor-"))
            (floor_root / "app.py").write_text(FLOOR_APP)
            targets.append(("Streamlit floor (one chart)", floor_root, "app.py", ""))
        for name, root, entry, path in targets:
            server, url = start_server(args.results_dir or tempfile.mkdtemp(prefix="bnviz-timings-"), root=root, entry=entry)
            try:
                timings = time_page(browser, url, path, args.timeout)
            finally:
                server.terminate()
                server.wait()
            rows.append((name, *timings))
            print(f"  {name}: " + ", ".join(f"{what} {value:.2f} s" for what, value in zip(("first paint", "idle", "warm revisit idle", "navigation revisit idle"), timings)), file=sys.stderr, flush=True)
        browser.close()
    store = "given store" if args.results_dir else "empty store"
    print(f"\n{load()}; app: {args.app_root}")
    print(f"\n| page | first paint (fresh server) | idle (fresh server, {store}) | warm revisit, new tab: idle | navigation revisit: idle |")
    print("|---|---|---|---|---|")
    for name, *timings in rows:
        print(f"| {name} | " + " | ".join("-" if value != value else f"{value:.2f} s" for value in timings) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
