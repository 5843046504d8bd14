"""Cold views of chosen page URLs, each on a fresh server, alternating checkouts.

For a before/after of the same views, or of one page at other settings (the same page
with ``?seeds=1``: the work of a one-seed default). Each view: a fresh ``streamlit run``
of the checkout, with its own empty result store, then headless Chromium opens the URL
and waits until nothing computes (``page_timings.py``'s first paint and idle). The views
run in the order given, round after round, so the checkouts share the machine's drift.

    git worktree add /tmp/before 187379e && mkdir -p /tmp/before/.bnviz_cache && \\
        cp -r .bnviz_cache/mnist /tmp/before/.bnviz_cache/
    .venv/bin/python benchmarks/cold_views.py --rounds 2 "/tmp/before|paper-results" \\
        ".|paper-results" ".|paper-results?seeds=1"

Prints each view as it ends, then one line per view with its idle times (s) per round.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from screenshot import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from classroom_load import start_server, stop_server  # noqa: E402
from page_timings import visit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("views", nargs="+", help="CHECKOUT|PATH?QUERY, e.g. '/tmp/before|paper-results' or '.|why-bn-works?n_seeds=1'")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one view")
    args = parser.parse_args()
    views = [(Path(root).resolve(), path) for root, _, path in (v.partition("|") for v in args.views)]
    idle: dict[int, list[float]] = {i: [] for i in range(len(views))}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for round_number in range(1, args.rounds + 1):
            for index, (root, path) in enumerate(views):
                server, url = start_server(tempfile.mkdtemp(prefix="bnviz-cold-"), root=root)
                try:
                    paint, done = visit(browser, f"{url}/{path}", args.timeout)
                finally:
                    stop_server(server)
                idle[index].append(done)
                print(f"round {round_number} {time.strftime('%H:%M:%S')} {root} /{path}: first paint {paint:.2f} s, idle {done:.2f} s", flush=True)
        browser.close()
    for index, (root, path) in enumerate(views):
        print(f"{str(root)}|{path}: idle " + " / ".join(f"{t:.2f}" for t in idle[index]) + " s")


if __name__ == "__main__":
    main()
