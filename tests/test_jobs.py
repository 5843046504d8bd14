"""bnviz.jobs with a fake experiment (milliseconds): single flight, the core limit and its
queue, cancellation, results stored unwatched, failures as states, the abandoned-job policy."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from bnviz import jobs
from bnviz.cache import ResultStore
from bnviz.config import Config
from bnviz.errors import BnvizError
from bnviz.jobs import JobCancelled, JobManager, JobState


@dataclass(frozen=True)
class Fake(Config):
    value: int = 1


class FakeExperiment:
    """run(config, progress): ``steps`` reports of partial results, each after ``gate`` opens
    (or at once when ``gate`` is None); counts its runs and the most running at once."""

    def __init__(self, steps: int = 5, gate: threading.Event | None = None, fail: Exception | None = None):
        self.steps, self.gate, self.fail = steps, gate, fail
        self.calls = 0
        self.active = self.peak_active = 0
        self.threads_seen: list[int] = []
        self._lock = threading.Lock()

    def run(self, config, progress):
        from bnviz.train import training_threads

        with self._lock:
            self.calls += 1
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            self.threads_seen.append(training_threads(100))
        try:
            for step in range(1, self.steps + 1):
                if self.gate is not None:
                    assert self.gate.wait(10), "the test never opened the gate"
                else:
                    time.sleep(0.01)
                if self.fail is not None and step == 2:
                    raise self.fail
                progress(step / self.steps, f"step {step}", [config.value] * step)
            return {"value": config.value * 10}
        finally:
            with self._lock:
                self.active -= 1


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_single_flight_one_job_per_config_shared_by_every_caller(tmp_path):
    store = ResultStore(tmp_path)
    gate = threading.Event()
    fake = FakeExperiment(gate=gate)
    manager = JobManager(store, max_running=2)
    submitted = []
    threads = [threading.Thread(target=lambda: submitted.append(manager.submit("fake", Fake(), fake.run))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(job) for job in submitted}) == 1
    gate.set()
    results = [manager.wait(job) for job in submitted]
    assert results == [{"value": 10}] * 8 and fake.calls == 1
    assert store.computations("fake", Fake()) == 1 and store.get("fake", Fake()) == {"value": 10}
    # a later ask finds the finished job (or, once forgotten, the store): no new computation
    assert manager.wait(manager.submit("fake", Fake(), fake.run)) == {"value": 10} and fake.calls == 1
    fresh = JobManager(store)
    job = fresh.submit("fake", Fake(), fake.run)
    assert job.state is JobState.DONE and job.result == {"value": 10} and fake.calls == 1


def test_at_most_max_running_jobs_run_the_rest_queue_with_positions(tmp_path):
    gate = threading.Event()
    fake = FakeExperiment(gate=gate)
    manager = JobManager(ResultStore(tmp_path), max_running=2)
    submitted = [manager.submit("fake", Fake(value), fake.run) for value in range(5)]
    wait_until(lambda: fake.active == 2)
    statuses = [manager.poll(job) for job in submitted]
    assert [s.state for s in statuses] == [JobState.RUNNING] * 2 + [JobState.QUEUED] * 3
    assert [s.queue_position for s in statuses] == [None, None, 1, 2, 3]
    gate.set()
    assert [manager.wait(job) for job in submitted] == [{"value": 10 * value} for value in range(5)]
    assert fake.peak_active == 2 and manager.peak_running == 2


def test_trainer_threads_share_the_cores_between_running_jobs(tmp_path, monkeypatch):
    monkeypatch.delenv("BNVIZ_TRAIN_THREADS", raising=False)
    monkeypatch.setattr("bnviz.train.usable_cores", lambda: 4)
    gate = threading.Event()
    fake = FakeExperiment(gate=gate)
    manager = JobManager(ResultStore(tmp_path))
    assert manager.max_running == 4
    first = manager.submit("fake", Fake(1), fake.run)
    wait_until(lambda: fake.active == 1)
    later = []
    for value in (2, 3, 4):  # one at a time: each reads its share when it starts, after the one before
        later.append(manager.submit("fake", Fake(value), fake.run))
        wait_until(lambda: fake.active == value)
    gate.set()
    for job in [first, *later]:
        manager.wait(job)
    # alone: every core; then 4 // 2, 4 // 3, 4 // 4 as the others start
    assert fake.threads_seen == [4, 2, 1, 1]


def test_cancel_a_running_job_stops_it_at_its_next_report_and_stores_nothing(tmp_path):
    store = ResultStore(tmp_path)
    gate = threading.Event()
    fake = FakeExperiment(gate=gate)
    manager = JobManager(store, max_running=1)
    job = manager.submit("fake", Fake(), fake.run)
    queued = manager.submit("fake", Fake(2), fake.run)
    wait_until(lambda: fake.active == 1)
    manager.cancel(job)
    manager.cancel(queued)
    assert manager.poll(queued).state is JobState.CANCELLED  # a queued job stops at once
    gate.set()
    with pytest.raises(JobCancelled):
        manager.wait(job)
    assert manager.poll(job).state is JobState.CANCELLED and fake.calls == 1
    assert store.get("fake", Fake()) is None and store.computations("fake", Fake()) == 0
    # asked again after a cancellation: a new job computes it
    again = manager.submit("fake", Fake(), fake.run)
    assert again is not job and manager.wait(again) == {"value": 10}


def test_result_is_stored_when_nobody_watches(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    clock = [0.0]
    manager = JobManager(store, max_running=1, clock=lambda: clock[0])
    gate = threading.Event()
    fake = FakeExperiment(gate=gate)
    job = manager.submit("fake", Fake(), fake.run)
    wait_until(lambda: fake.active == 1)
    clock[0] = 10 * jobs.WATCHED_SECONDS  # nobody has polled it for a long time
    gate.set()
    job.finished.wait(10)
    assert job.state is JobState.DONE and store.get("fake", Fake()) == {"value": 10}


def test_partial_results_and_eta_while_running(tmp_path):
    clock = [100.0]
    gate = threading.Event()
    fake = FakeExperiment(steps=4, gate=gate)
    manager = JobManager(ResultStore(tmp_path), max_running=1, clock=lambda: clock[0])
    job = manager.submit("fake", Fake(3), fake.run)
    assert manager.poll(job).eta_seconds is None
    reports = []
    original = manager._report

    def report(job, fraction, message, partial=None):
        original(job, fraction, message, partial)
        reports.append(fraction)
        gate.clear()  # one report per opening of the gate

    manager._report = report
    clock[0] += 30.0  # start-up (loading data): not part of the job's rate
    gate.set()
    wait_until(lambda: len(reports) == 1)
    clock[0] += 8.0
    status = manager.poll(job)
    assert status.state is JobState.RUNNING and status.message == "step 1" and status.partial == [3]
    assert status.eta_seconds is None  # one report: no rate yet
    gate.set()
    wait_until(lambda: len(reports) == 2)
    clock[0] += 4.0  # a quarter more in 12 s since the first report: half to go, 24 s
    assert manager.poll(job).eta_seconds == pytest.approx(24.0)
    while not job.finished.is_set():
        gate.set()
        time.sleep(0.005)
    assert manager.poll(job).partial is None and job.result == {"value": 30}


def test_failure_is_a_state_with_the_message_not_a_traceback(tmp_path):
    manager = JobManager(ResultStore(tmp_path), max_running=1)
    refused = manager.submit("fake", Fake(1), FakeExperiment(fail=BnvizError("Choose fewer steps.")).run)
    with pytest.raises(BnvizError, match="Choose fewer steps."):
        manager.wait(refused)
    status = manager.poll(refused)
    assert status.state is JobState.FAILED and status.error == "Choose fewer steps."
    crashed = manager.submit("fake", Fake(2), FakeExperiment(fail=ZeroDivisionError("division by zero")).run)
    with pytest.raises(BnvizError):
        manager.wait(crashed)
    assert manager.poll(crashed).error == "The computation failed (ZeroDivisionError: division by zero)."
    assert "Traceback" not in manager.poll(crashed).error
    # the worker survived: the next job runs
    assert manager.wait(manager.submit("fake", Fake(3), FakeExperiment().run)) == {"value": 30}


def test_unwatched_job_yields_its_core_to_a_watched_one_and_unwatched_queue_is_dropped(tmp_path):
    clock = [0.0]
    gate = threading.Event()
    fake = FakeExperiment(steps=10, gate=gate)
    manager = JobManager(ResultStore(tmp_path), max_running=1, clock=lambda: clock[0])
    left_behind = manager.submit("fake", Fake(1), fake.run)
    wait_until(lambda: fake.active == 1)
    forgotten = manager.submit("fake", Fake(2), fake.run)  # queued, then nobody looks at it
    clock[0] = jobs.QUEUED_ABANDON_SECONDS + 1
    watched = manager.submit("fake", Fake(3), fake.run)  # the student's new setting
    assert manager.poll(forgotten).state is JobState.CANCELLED
    assert manager.poll(watched).queue_position == 1
    gate.set()
    assert manager.wait(watched, timeout=10) == {"value": 30}
    assert left_behind.finished.wait(10)  # not polled: waiting with wait() would watch it
    assert left_behind.state is JobState.CANCELLED and "yielded" in left_behind.message


def test_half_done_unwatched_job_finishes_even_with_a_watched_one_waiting(tmp_path):
    clock = [0.0]
    store = ResultStore(tmp_path)
    manager = JobManager(store, max_running=1, clock=lambda: clock[0])
    half = threading.Event()

    def run(config, progress):
        progress(0.6, "past half", None)
        half.set()
        time.sleep(0.1)
        progress(1.0, "done", None)
        return {"value": config.value}

    left_behind = manager.submit("fake", Fake(1), run)
    assert half.wait(10)
    clock[0] = 2 * jobs.WATCHED_SECONDS
    watched = manager.submit("fake", Fake(2), FakeExperiment().run)
    assert manager.wait(watched, timeout=10) == {"value": 20}
    assert left_behind.state is JobState.DONE and store.get("fake", Fake(1)) == {"value": 1}
