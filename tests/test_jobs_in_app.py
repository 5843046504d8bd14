"""Jobs under the app (issue 21): a control moved mid-computation and back finds the first
job's result, computed once; a class asking for five configs at once runs at most one job
per core and every session gets its result."""
from __future__ import annotations

import threading

from apptest_helpers import metric_values, open_page

from bnviz.app import job_manager, result_store
from bnviz.experiments.home import HomeConfig
from bnviz.jobs import JobState


def job_status_lines(at) -> list[str]:
    """The progress lines of the sections whose job is computing (or queued)."""
    return [bar.proto.text for bar in at.get("progress")]


def test_a_control_moved_mid_computation_and_back_finds_the_first_result_computed_once(monkeypatch):
    monkeypatch.setenv("BNVIZ_JOBS_IN_SCRIPT", "0")  # as in the browser: the run ends, a fragment follows the job
    first, second = HomeConfig(steps=1500, seed=8), HomeConfig(steps=1500, seed=9)
    at = open_page("app_pages/home.py", steps=1500, seed=8).run()
    assert not at.exception
    job = job_manager().find("home", first)
    assert job is not None and job.state in (JobState.QUEUED, JobState.RUNNING)
    assert any(("computing" in line or "queued" in line) for line in job_status_lines(at)), job_status_lines(at)
    assert not at.metric  # the page stops at the job's status
    assert at.button(key=f"bnviz.cancel.{job.key}")  # the session that started it may cancel it
    at.slider(key="home.seed").set_value(9).run()  # mid-computation: starts the job for seed 9
    assert job_manager().find("home", second) is not None
    at.slider(key="home.seed").set_value(8).run()  # and back: joins the first job, still going
    assert job_manager().find("home", first) is job
    assert job.finished.wait(180) and job.state is JobState.DONE
    at.run()  # what the fragment's rerun does when the job ends
    assert not at.exception and "Test accuracy with BN (all 10,000 test images)" in metric_values(at)
    assert result_store().computations("home", first) == 1
    assert job_manager().find("home", second).finished.wait(180)
    assert result_store().computations("home", second) == 1


def resident_mib() -> tuple[float, float]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
    values = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return tuple(int(values[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


def test_thirty_sessions_five_configs_at_most_one_job_per_core_and_everyone_gets_a_result(tmp_path):
    from bnviz.cache import ResultStore
    from bnviz.jobs import JobManager

    store = ResultStore(tmp_path)
    manager = JobManager(store)
    configs = [HomeConfig(steps=100, seed=30 + k) for k in range(5)]
    sessions, start = 30, threading.Barrier(30)
    results: list = [None] * sessions

    def session(i: int):
        start.wait(timeout=60)
        job = manager.submit("home", configs[i % 5], owner=f"session {i}")
        results[i] = manager.wait(job, timeout=300)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=320)
    now, peak = resident_mib()
    print(f"30 sessions, 5 configs: peak {manager.peak_running} jobs at once on {manager.cores} cores; "
          f"this process {now:.0f} MiB resident, peak {peak:.0f} MiB")
    assert all(result is not None for result in results)
    assert manager.peak_running <= manager.cores
    for k, config in enumerate(configs):
        assert store.computations("home", config) == 1
        same = {results[i].by_label("BN").final_test_acc for i in range(k, sessions, 5)}
        assert len(same) == 1  # the sessions of one config share one result
