"""Classroom checks (issue 13): a whole class on one cold page, and processes sharing one store.

1. 30 AppTest sessions (threads, as Streamlit serves sessions) open the home page
   cold at once: all succeed with the same numbers, and the store counts ONE
   computation of that config.
2. Two processes share one result directory: computing the same key at the same
   time gives one computation and the same value in both; a process killed
   (SIGKILL) while it holds the key's lock, mid-compute, leaves no entry and no
   stuck lock (the OS releases it), so the next caller computes the result; a
   process killed while writing large entries leaves a consistent store.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from apptest_helpers import chart_count, metric_values, open_page

from bnviz.app import result_store
from bnviz.experiments.home import HomeConfig

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = 30
# steps=100 with a seed no other test uses: cold in this test session's fresh store
CLASS_QUERY = {"steps": 100, "seed": 7}


@pytest.fixture
def concurrent_apptests(monkeypatch):
    """Let AppTests run in threads at once, as a server runs sessions. AppTest itself is
    written for one test at a time and touches process-wide state on every run, so 30 at
    once raced in the harness, not in bnviz (CI, 2026-12-02):

    * each run compiles the page with a ScriptCache of its own, and CPython 3.11's
      ``ast.parse`` is not safe in threads at once ("AST constructor recursion depth
      mismatch", python/cpython#106905): a real server compiles a page once, in one
      shared, locked ScriptCache, so the sessions here share one too;
      The first job's TorchScript compile parses source too (``bnviz.engine.warm_up``,
      which the app calls as its core loads): done here before the sessions start;
    * each run sets ``Runtime._instance`` to its mock runtime and to None when it ends,
      under the feet of the runs still going ("Runtime hasn't been created!"): here a
      run's mock (they are alike) becomes the instance and its None is ignored;
    * each run patches ``streamlit.config.get_option`` and restores what it saw, so
      interleaved runs could leave a mock in place for later tests: restored here.
    """
    from streamlit import config as st_config
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import magic
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner

    shared_cache = ScriptCache()

    class KeepsTheInstance(type(Runtime)):
        def __setattr__(cls, name, value):
            if name != "_instance":
                super().__setattr__(name, value)
            elif value is not None:
                Runtime._instance = value

    monkeypatch.setattr(app_test, "ScriptCache", lambda: shared_cache)  # its pages manager's
    monkeypatch.setattr(local_script_runner, "ScriptCache", lambda: shared_cache)  # the one that compiles
    monkeypatch.setattr(app_test, "Runtime", KeepsTheInstance("AppTestRuntime", (Runtime,), {}))
    monkeypatch.setattr(Runtime, "_instance", None)  # restored when the test ends
    compiled = []  # the page's compilations: one, as in a server
    add_magic = magic.add_magic
    monkeypatch.setattr(magic, "add_magic", lambda code, path: compiled.append(path) or add_magic(code, path))
    from bnviz import engine

    engine.warm_up()
    get_option = st_config.get_option
    yield compiled
    st_config.get_option = get_option


def test_thirty_sessions_on_a_cold_page_compute_once_and_agree(concurrent_apptests):
    config = HomeConfig(steps=100, seed=7)
    assert result_store().get("home", config) is None, "the class's config must be cold"
    outcomes: list = [None] * SESSIONS
    start = threading.Barrier(SESSIONS)

    def session(i: int):
        try:
            at = open_page("app_pages/home.py", **CLASS_QUERY)
            start.wait(timeout=60)
            at.run()
            outcomes[i] = (repr(at.exception) if at.exception else None, metric_values(at), chart_count(at))
        except Exception as exc:  # a session that crashed is reported, never hangs the test
            outcomes[i] = (repr(exc), {}, 0)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=200)
    assert all(outcome is not None for outcome in outcomes), "a session did not finish"
    errors = [outcome[0] for outcome in outcomes if outcome[0]]
    assert not errors, errors[:3]
    first = outcomes[0][1]
    assert "Test accuracy with BN (all 10,000 test images)" in first and "Test accuracy without BN (all 10,000 test images)" in first
    differing = {i: outcome[1] for i, outcome in enumerate(outcomes) if outcome[1] != first}
    assert not differing, f"sessions saw different results: session 0 {first}; others {dict(list(differing.items())[:3])}"
    assert all(outcome[2] == 2 for outcome in outcomes), [outcome[2] for outcome in outcomes]
    assert result_store().computations("home", config) == 1
    assert len(concurrent_apptests) == 1, f"the page was compiled {len(concurrent_apptests)} times"


# ------------------------------------------------------------- two processes

CHILD = r"""
import json, os, sys, time
from dataclasses import dataclass
import numpy as np
from bnviz.cache import ResultStore
from bnviz.config import Config

@dataclass(frozen=True)
class Shared(Config):
    value: int = 1

directory, mode, marker = sys.argv[1], sys.argv[2], sys.argv[3]
store = ResultStore(directory)
if mode == "fill":  # write large entries until killed
    i = 0
    while True:
        store.put("big", Shared(i), np.full(2_000_000, float(i)))
        if i == 0:
            open(marker, "w").close()
        i += 1
computed = []

def compute(report):
    computed.append(os.getpid())
    report(0.1, "started")
    open(marker, "w").close()
    time.sleep(60 if mode == "hang" else 1.0)
    report(1.0, "done")
    return {"pid": os.getpid(), "curve": np.arange(1000.0) * 0.5}

# both processes start at the same moment: say "ready" (imports done), wait for "go"
open(marker + ".ready", "w").close()
go = os.path.join(os.path.dirname(directory), "go")
while mode == "race" and not os.path.exists(go):
    time.sleep(0.01)
result = store.get_or_compute("shared", Shared(), compute)
print(json.dumps({"computed": bool(computed), "by": result["pid"], "sum": float(result["curve"].sum())}))
"""


def _child(directory: Path, mode: str, marker: Path) -> subprocess.Popen:
    directory = directory / "store"  # the markers live beside the store, not in it
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), mode, str(marker)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def _problems(store) -> list[str]:
    """diskcache's own consistency check (it also repairs), less the note on our lock folder
    and empty value sub-folders (left when an orphan file is removed; harmless, reused later)."""
    return [
        str(w.message)
        for w in store.disk.check()
        if f"{os.sep}locks" not in str(w.message) and not str(w.message).startswith("empty directory:")
    ]


def _shared_config():
    from dataclasses import dataclass

    from bnviz.config import Config

    @dataclass(frozen=True)
    class Shared(Config):  # the same class name and fields as the child's: the same key
        value: int = 1

    return Shared()


def test_two_processes_compute_the_same_key_once(tmp_path):
    # the children import torch (seconds on a busy machine): both get ready, then go at once
    children = [_child(tmp_path, "race", tmp_path / f"started-{i}") for i in range(2)]
    for i, child in enumerate(children):
        _wait_for(tmp_path / f"started-{i}.ready", child)
    (tmp_path / "go").touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["computed"] for o in outputs) == 1, outputs
    assert outputs[0]["by"] == outputs[1]["by"] and outputs[0]["sum"] == outputs[1]["sum"] == 249750.0
    from bnviz.cache import ResultStore

    store = ResultStore(tmp_path / "store")
    assert store.computations("shared", _shared_config()) == 1
    assert _problems(store) == []


def test_a_process_killed_mid_compute_leaves_no_entry_and_no_stuck_lock(tmp_path):
    from bnviz.cache import ResultStore

    holder = _child(tmp_path, "hang", tmp_path / "started-holder")
    _wait_for(tmp_path / "started-holder", holder)  # it holds the key's lock and is computing
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    store = ResultStore(tmp_path / "store")
    config = _shared_config()
    assert store.get("shared", config) is None and store.computations("shared", config) == 0
    # the next caller gets the lock at once (the kernel dropped the dead holder's) and computes it
    start = time.monotonic()
    result = store.get_or_compute("shared", config, lambda report: {"pid": os.getpid(), "curve": list(range(3))})
    assert time.monotonic() - start < 5
    assert result["pid"] == os.getpid() and store.computations("shared", config) == 1


def test_a_process_killed_while_writing_leaves_a_consistent_store(tmp_path):
    from bnviz.cache import ResultStore

    writer = _child(tmp_path, "fill", tmp_path / "started-writer")
    _wait_for(tmp_path / "started-writer", writer)
    time.sleep(0.7)  # mid-way through a later 16 MB write, most likely
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    store = ResultStore(tmp_path / "store")
    # diskcache writes a large value's file first, then commits the row that points at it:
    # a kill in between leaves at most an orphan file ("unknown file", never read), no broken entry
    problems = _problems(store)
    assert [p for p in problems if not p.startswith("unknown file:")] == [], problems
    store.disk.check(fix=True)  # removes the orphan
    assert _problems(store) == []
    entries = [key for key in store.disk.iterkeys() if key[0] == "result"]
    assert entries, "the writer wrote nothing before it was killed"
    for key in entries:
        value = store.disk[key]
        assert value.shape == (2_000_000,) and (value == value[0]).all()
