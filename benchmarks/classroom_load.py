"""A class on one cold page, in real browsers; and the server's memory after every page.

Starts the app as users run it (``streamlit run``, headless, a free port, an
empty result store of its own), then:

* default: opens N (30) browser sessions (one headless Chromium, one context
  each: separate Streamlit sessions over their own websockets) on the same cold
  page at once, and prints how many times the store computed that config (read
  from the store itself), whether every session shows the same metric values,
  the seconds until the first and the last session shows its charts, and the
  server's peak resident memory (``VmHWM`` in ``/proc/<pid>/status``).
  ``--configs K`` spreads the sessions over K configs (seeds): it also prints
  the most jobs computing at once (bnviz.jobs runs at most one per core).
* ``--visit-all``: opens every page once, in the light views the browser suite
  uses (``E2E_FAST_QUERY`` in tests/e2e/test_app_in_browser.py), one after
  another in one session, and prints the server's resident memory after each
  page and its peak. ``--defaults`` visits each page's default view instead
  (minutes: every default computed). ``--presets`` then opens every classroom
  preset's link (``bnviz.page_presets``), and ``--maxima`` every page with every
  URL key at the heaviest value its control allows (a number past every slider's
  top, so each clamps to its maximum; a combination over the per-view budget is
  refused by the page). ``--max-minutes`` stops the tour when its time is up.

    .venv/bin/python benchmarks/classroom_load.py [--sessions 30] [--query "steps=600"] [--configs 5]
    .venv/bin/python benchmarks/classroom_load.py --visit-all [--defaults]

``--server-python`` runs the app with another environment's interpreter, e.g. one
installed from ``hosted/requirements.txt`` (CPU-only torch, as on Streamlit
Community Cloud), whose memory is the one a hosted tier's 1 GB limit sees.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from screenshot import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def _browser_suite():
    """The browser suite's page list, fast queries and page-state scripts: one source of truth."""
    spec = importlib.util.spec_from_file_location("bnviz_e2e_suite", ROOT / "tests" / "e2e" / "test_app_in_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUITE = _browser_suite()
VIEWPORT = {"width": 1400, "height": 900}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS: RssAnon, the process's own data, + RssFile, mapped
    libraries' pages) and its peak (VmHWM) of one process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) / 1024  # kB
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(mem: dict[str, float]) -> str:
    return (f"now {mem['VmRSS']:.0f} MiB ({mem['RssAnon']:.0f} MiB own data + {mem['RssFile']:.0f} MiB of mapped "
            f"libraries), peak (VmHWM) {mem['VmHWM']:.0f} MiB")


SERVER_PYTHON = sys.executable  # --server-python replaces it


def start_server(results_dir: str, root: Path = ROOT, entry: str = "streamlit_app.py") -> tuple[subprocess.Popen, str]:
    """``streamlit run <entry>`` in ``root`` (another checkout, e.g. a worktree of an
    earlier commit, for a before/after), ready at ``/_stcore/health``."""
    port = free_port()
    env = os.environ | {"BNVIZ_RESULTS_DIR": results_dir}
    server = subprocess.Popen(
        [SERVER_PYTHON, "-m", "streamlit", "run", entry, "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return server, url
        except OSError:
            if server.poll() is not None:
                raise SystemExit("the app exited at start")
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the app did not start in 120 s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def load() -> str:
    return "load average %.1f %.1f %.1f (1, 5, 15 min), %d CPUs" % (*os.getloadavg(), os.cpu_count())


def home_config(query: str):
    """The HomeConfig a home-page URL query selects (the page's URL keys)."""
    from bnviz.experiments.home import HomeConfig

    kinds = {"steps": ("steps", int), "seed": ("seed", int), "lr": ("lr", float), "act": ("activation", str)}
    values = {kinds[k][0]: kinds[k][1](v) for k, v in parse_qsl(query) if k in kinds}
    return HomeConfig().replace(**values)


def session_state(page) -> dict:
    charts = page.evaluate(SUITE.CHARTS_JS)
    return {
        "idle": page.evaluate(SUITE.IDLE_JS),
        "charts": len(charts),
        "painted": bool(charts) and all(chart["painted"] > 0 for chart in charts),
    }


def with_seed(query: str, seed: int) -> str:
    return "&".join([part for part in query.split("&") if part and not part.startswith("seed=")] + [f"seed={seed}"])


def running_jobs(store) -> int:
    """Jobs computing right now in the server: each writes its progress to the store while it runs."""
    return sum(1 for key in store.disk if isinstance(key, tuple) and key[0] == "progress")


def classroom(sessions: int, query: str, timeout_s: float, configs: int = 1) -> int:
    from bnviz.cache import ResultStore

    results_dir = tempfile.mkdtemp(prefix="bnviz-classroom-")
    print(f"before: {load()}")
    server, url = start_server(results_dir)
    base_seed = home_config(query).seed
    # session i asks for config i % configs (the query with another seed)
    queries = [with_seed(query, base_seed + k) if configs > 1 else query for k in range(configs)]
    store = ResultStore(results_dir)
    peak_running = 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            pages = [browser.new_context(viewport=VIEWPORT).new_page() for _ in range(sessions)]
            errors: list[str] = []
            for page in pages:
                page.on("pageerror", lambda exc: errors.append(str(exc)))
            start = time.monotonic()
            for i, page in enumerate(pages):  # all sessions connect at once: no waiting on any page's load
                page.goto(f"{url}/?{queries[i % configs]}", wait_until="commit", timeout=timeout_s * 1000)  # 30 contexts on 2 busy cores: more than playwright's 30 s
            done_at: dict[int, float] = {}
            deadline = start + timeout_s
            while len(done_at) < sessions and time.monotonic() < deadline:
                for i, page in enumerate(pages):
                    if i in done_at:
                        continue
                    try:
                        state = session_state(page)
                    except Exception:  # the page is still loading its frontend
                        continue
                    if state["idle"] and state["charts"] >= 2 and state["painted"]:
                        done_at[i] = time.monotonic() - start
                peak_running = max(peak_running, running_jobs(store))
                time.sleep(0.2)
            metrics = {}
            for i in sorted(done_at):
                values = tuple((m["label"], m["value"]) for m in pages[i].evaluate(SUITE.METRICS_JS))
                metrics.setdefault(i % configs, []).append(values)
            browser.close()
        mem, cpu = memory_mib(server.pid), cpu_seconds(server.pid)
    finally:
        stop_server(server)
    counts = [ResultStore(results_dir).computations("home", home_config(q)) for q in queries]
    same = len(done_at) == sessions and all(len(set(group)) == 1 for group in metrics.values())
    print(f"page: home, {configs} config(s): " + ", ".join(f"/?{q}" for q in queries))
    print(f"sessions: {sessions}, showing their charts: {len(done_at)}, page errors: {len(errors)}")
    print(f"computations in the store per config: {counts}")
    print(f"jobs computing at once (sampled every 0.2 s): peak {peak_running}, on {len(os.sched_getaffinity(0))} cores")
    print(f"the sessions of each config show the same metric values: {'yes' if same else 'NO'}")
    for k, group in sorted(metrics.items()):
        print(f"  config {k}: " + "; ".join(f"{label} = {value}" for label, value in group[0]))
    if done_at:
        print(f"seconds until the first session shows its charts: {min(done_at.values()):.1f}")
        print(f"seconds until the last session shows its charts: {max(done_at.values()):.1f}")
    print(f"server resident memory: {describe(mem)}")
    print(f"server CPU time (user + system, start included): {cpu:.1f} s; the browsers share the same CPUs")
    print(f"after: {load()}")
    return 0 if (all(count == 1 for count in counts) and same and not errors) else 1


URL_PATHS = {"home": "", "normalization_math": "normalization-math", "train_vs_eval": "train-vs-eval", "paper_results": "paper-results",
             "distribution_shift": "distribution-shift", "bn_vs_layernorm": "bn-vs-layernorm", "small_batches": "small-batches", "placement": "placement",
             "why_bn_works": "why-bn-works", "common_pitfalls": "common-pitfalls"}
HEAVIEST = "1e308"  # past every numeric control's top: each clamps to its maximum (bnviz.app.Controls)


def preset_visits() -> list[tuple[str, str, str]]:
    """(label, url path, query) of every classroom preset's link."""
    from urllib.parse import urlencode

    from bnviz.page_presets import DEFAULT_VIEW, PAGE_PRESETS, url_text

    return [(f"preset {name!r}", URL_PATHS[page], urlencode({k: url_text(v) for k, v in query.items()}))
            for page, presets in PAGE_PRESETS.items() for name, (_experiment, query) in presets.queries().items() if name != DEFAULT_VIEW]


def maxima_visits() -> list[tuple[str, str, str]]:
    """(label, url path, query) of every page at its controls' maxima: every numeric key past its top; the
    choice keys at their heaviest option (the larger sweeps, the CNN, every section switched on)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_url_fuzz import page_keys

    heavy_choices = {"arch": "cnn", "sweep": "full", "sizes": "full", "reg": "true", "pbrun": "true", "fewrun": "true", "noisy": "true",
                     "n": "60000", "regn": "5000", "width": "400", "rnn_hidden": "128", "batch": "256", "bs": "256"}
    visits = []
    for page, path in URL_PATHS.items():
        query = {key: heavy_choices.get(key, HEAVIEST) for key in sorted(page_keys(page))}
        visits.append((f"maxima of {page}", path, "&".join(f"{k}={v}" for k, v in query.items())))
    return visits


def visit_all(defaults: bool, timeout_s: float, presets: bool = False, maxima: bool = False, max_minutes: float = 0.0) -> int:
    results_dir = tempfile.mkdtemp(prefix="bnviz-visit-all-")
    print(f"before: {load()}")
    server, url = start_server(results_dir)
    failures = 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(url)
            SUITE.wait_idle(page, timeout_s)
            paths = [path for path, _title in SUITE.nav_links(page)] or [""]
            print(f"server after start and the first home view: {memory_mib(server.pid)['VmRSS']:.0f} MiB resident")
            visits = [("default view" if defaults else "light view", path, "" if defaults else SUITE.E2E_FAST_QUERY.get(path, "")) for path in paths]
            visits += preset_visits() if presets else []
            visits += maxima_visits() if maxima else []
            tour_ends = time.monotonic() + 60 * max_minutes if max_minutes else float("inf")
            for label, path, query in visits:
                if time.monotonic() > tour_ends:
                    print(f"  time is up ({max_minutes:g} min): stopped before {label}")
                    failures += 1
                    break
                start = time.monotonic()
                page.goto(f"{url}/{path}" + (f"?{query}" if query else ""))
                try:
                    SUITE.wait_idle(page, timeout_s)
                    status = "ok"
                except Exception as exc:  # noqa: BLE001 - report and go on to the next page
                    status = f"NOT FINISHED ({type(exc).__name__})"
                    failures += 1
                mem = memory_mib(server.pid)
                print(f"  {label}: /{path or ''}{'?' + query if query else ''}: {status} in {time.monotonic() - start:.1f} s; "
                      f"server {mem['VmRSS']:.0f} MiB resident, peak {mem['VmHWM']:.0f} MiB", flush=True)
            browser.close()
        mem = memory_mib(server.pid)
    finally:
        stop_server(server)
    view = "default views" if defaults else "light views (E2E_FAST_QUERY)"
    view += ", then every preset" if presets else ""
    view += ", then every page at its controls' maxima" if maxima else ""
    print(f"every page visited ({len(paths)} pages, {view}): server resident memory {describe(mem)}")
    print(f"after: {load()}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--query", default="steps=600&seed=0", help="home-page URL query all sessions open (default: its default view)")
    parser.add_argument("--configs", type=int, default=1, help="spread the sessions over this many configs (the query's seed, +1, +2, ...)")
    parser.add_argument("--visit-all", action="store_true", help="visit every page once and report the server's memory")
    parser.add_argument("--defaults", action="store_true", help="with --visit-all: each page's default view, not the light one")
    parser.add_argument("--presets", action="store_true", help="with --visit-all: then open every classroom preset's link")
    parser.add_argument("--maxima", action="store_true", help="with --visit-all: then every page at its controls' heaviest values")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="with --visit-all: stop the tour after this many minutes (0: no limit)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the sessions (or one page)")
    parser.add_argument("--server-python", default=sys.executable, help="interpreter that runs the app (default: this one)")
    args = parser.parse_args()
    global SERVER_PYTHON
    SERVER_PYTHON = args.server_python
    print(f"server: {SERVER_PYTHON} -m streamlit run streamlit_app.py")
    if args.visit_all:
        return visit_all(args.defaults, args.timeout, args.presets, args.maxima, args.max_minutes)
    return classroom(args.sessions, args.query, args.timeout, args.configs)


if __name__ == "__main__":
    sys.exit(main())
