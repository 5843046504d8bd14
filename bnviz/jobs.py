"""Training as background jobs: owned by the process, shared by every session, never by a script run.

A job is one ``(experiment name, config)`` computation. It runs on a worker
thread of the process, so a page's script run that stops (a widget moved, the
student went to another page) loses nothing: the job goes on, reports its
progress and latest partial result here, and stores its result in the
:class:`~bnviz.cache.ResultStore` when it ends, watched or not. A page only
asks for a job's state (:meth:`JobManager.poll`) and draws it.

Single flight: one job per config key in this process (every session asking
for a config joins the same job), on top of
:meth:`ResultStore.get_or_compute`, whose file lock keeps single flight across
processes (a job whose config another process is computing waits for that
result, showing the other process's progress).

States: ``queued -> running -> done | failed | cancelled``. A failure is a
state with a message (a :class:`BnvizError`'s own words; anything else is
logged with its traceback and shown as one sentence), never an exception in a
page.

Cores: at most :attr:`JobManager.max_running` jobs run at once (default: the
usable cores, :func:`bnviz.train.usable_cores`); the others queue, with their
position. A job's trainer spreads its runs over ``cores // running jobs``
worker threads (counted when it starts, at least 1): one job alone uses every
core, as before; N jobs on N cores use one trainer thread each (a job started
alone keeps its threads when others join, so for a while up to twice as many
threads as cores can be busy, never more jobs than cores).

Policy for jobs nobody watches (a job is *watched* while someone polled it in
the last :data:`WATCHED_SECONDS`; a page's fragment polls every 2 or 4 s (``bnviz.app.JOB_POLL_SECONDS``, ``LIVE_POLL_SECONDS``),
the CLI all the time):

1. A queued job a session is watching starts before one nobody watches (FIFO
   otherwise).
2. A running job nobody watches goes on and stores its result (the student who
   moves a slider back finds it), unless a watched job is queued behind it and
   it is less than :data:`YIELD_BEFORE_FRACTION` done: then it is cancelled at
   its next progress report and its core goes to the watched job.
3. A queued job nobody has watched for :data:`QUEUED_ABANDON_SECONDS` is
   dropped (it never started: nothing is lost).
4. A finished job is forgotten :data:`FINISHED_KEEP_SECONDS` after it ended
   (its result lives on in the store).

Cancellation is cooperative: the job's progress callback raises
:class:`JobCancelled` at its next report; nothing is stored.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import BnvizError

log = logging.getLogger(__name__)

WATCHED_SECONDS = 10.0
YIELD_BEFORE_FRACTION = 0.5
QUEUED_ABANDON_SECONDS = 60.0
FINISHED_KEEP_SECONDS = 120.0
ETA_MIN_FRACTION = 0.02  # below this, too little progress for a rate


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # a stepper (bnviz.stepper) waiting for Play or Step
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class JobCancelled(Exception):
    """Raised inside a job (by its progress callback) to stop it; never reaches a page."""


# run(config, progress) -> result, progress(fraction, message, partial): an experiment's run
RunFn = Callable[[Any, Callable[..., None]], Any]


@dataclass(frozen=True)
class JobStatus:
    """What a page draws: a consistent snapshot of one job."""

    state: JobState
    fraction: float
    message: str
    partial: Any  # the experiment's latest partial result (e.g. the runs so far), or None
    eta_seconds: float | None
    queue_position: int | None  # 1 = next to start; None unless queued
    error: str | None
    owner: str | None  # who submitted it (a session id), for the cancel button

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class Job:
    """One computation; its fields are written under the manager's lock."""

    def __init__(self, name: str, config, key: str, run: RunFn, owner: str | None, now: float):
        self.name, self.config, self.key, self.run, self.owner = name, config, key, run, owner
        self.state = JobState.QUEUED
        self.fraction, self.message, self.partial = 0.0, "queued", None
        self.error: str | None = None
        self.result: Any = None
        self.submitted = self.last_watched = now
        self.started: float | None = None
        self.first_report: tuple[float, float] | None = None  # (time, fraction): the rate is measured from here
        self.ended: float | None = None
        self.threads = 1
        self.cancel_reason: str | None = None
        self.finished = threading.Event()

    def __repr__(self) -> str:
        return f"Job({self.name}, {self.state.value}, {self.fraction:.0%})"


class JobManager:
    """The process's jobs. ``store``: a :class:`~bnviz.cache.ResultStore`; ``on_finished``:
    called (on the worker thread) after each job, e.g. to hand freed memory back."""

    def __init__(self, store, max_running: int | None = None, on_finished: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic):
        from .train import usable_cores

        self.store = store
        self.cores = usable_cores()
        self.max_running = max_running or self.cores
        self.on_finished = on_finished
        self.clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}  # key -> the latest job of that config
        self._queue: list[Job] = []
        self._running: list[Job] = []
        self.peak_running = 0  # the most jobs that ever ran at once (the load check reads it)

    # ---------------------------------------------------------------- asking
    def submit(self, name: str, config, run: RunFn | None = None, owner: str | None = None) -> Job:
        """The job for ``(name, config)``: the one already queued, running or recently finished,
        else a new one (done at once if the store has the result). ``run`` defaults to the
        experiment's own ``run``."""
        key = self.store.key(name, config)
        with self._lock:
            now = self.clock()
            self._forget_locked(now)
            job = self._jobs.get(key)
            if job is not None and job.state is not JobState.CANCELLED:
                job.last_watched = now
                return job
        stored = self.store.get(name, config)  # outside the lock: a disk read
        if run is None:
            from .experiments import get_experiment

            run = get_experiment(name).run
        with self._lock:
            now = self.clock()
            job = self._jobs.get(key)
            if job is not None and job.state is not JobState.CANCELLED:  # another caller won the race
                job.last_watched = now
                return job
            job = Job(name, config, key, run, owner, now)
            self._jobs[key] = job
            if stored is not None:
                job.result, job.fraction, job.message = stored, 1.0, "stored"
                self._end_locked(job, JobState.DONE, now)
            else:
                self._queue.append(job)
                self._schedule_locked(now)
            return job

    def find(self, name: str, config) -> Job | None:
        with self._lock:
            return self._jobs.get(self.store.key(name, config))

    def poll(self, job: Job) -> JobStatus:
        """The job's state now; polling marks it watched."""
        with self._lock:
            now = self.clock()
            job.last_watched = now
            self._schedule_locked(now)
            eta = None
            if job.state is JobState.RUNNING and job.first_report is not None and job.fraction >= ETA_MIN_FRACTION:
                # the job's own rate since its first report (start-up, e.g. loading MNIST, is not part of it)
                since, fraction_then = job.first_report
                if job.fraction > fraction_then and now > since:
                    eta = (now - since) * (1.0 - job.fraction) / (job.fraction - fraction_then)
            position = self._start_order_locked(now).index(job) + 1 if job.state is JobState.QUEUED else None
            return JobStatus(job.state, job.fraction, job.message, job.partial, eta, position, job.error, job.owner)

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Stop ``job``: at once if queued, at its next progress report if running."""
        with self._lock:
            if job.state is JobState.QUEUED:
                self._queue.remove(job)
                job.message = reason
                self._end_locked(job, JobState.CANCELLED, self.clock())
            elif job.state is JobState.RUNNING:
                job.cancel_reason = reason

    def wait(self, job: Job, on_progress: Callable[[JobStatus], None] | None = None, interval: float = 0.2, timeout: float | None = None):
        """Block until ``job`` ends (polling it, so it counts as watched); its result.
        A failure raises :class:`BnvizError` with the job's message; a cancellation
        :class:`JobCancelled`."""
        deadline = None if timeout is None else self.clock() + timeout
        while True:
            status = self.poll(job)
            if on_progress is not None:
                on_progress(status)
            if status.finished:
                break
            if deadline is not None and self.clock() > deadline:
                raise TimeoutError(f"{job.name} did not finish within {timeout} s")
            job.finished.wait(interval)
        if status.state is JobState.FAILED:
            raise BnvizError(status.error or "The computation failed.")
        if status.state is JobState.CANCELLED:
            raise JobCancelled(status.message)
        return job.result

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running)

    def queued(self) -> list[Job]:
        with self._lock:
            return self._start_order_locked(self.clock())

    # ---------------------------------------------------------------- scheduling
    def _watched(self, job: Job, now: float) -> bool:
        return now - job.last_watched <= WATCHED_SECONDS

    def _start_order_locked(self, now: float) -> list[Job]:
        # watched first, then first come first served (sort is stable)
        return sorted(self._queue, key=lambda job: not self._watched(job, now))

    def _schedule_locked(self, now: float) -> None:
        for job in [job for job in self._queue if now - job.last_watched > QUEUED_ABANDON_SECONDS]:
            self._queue.remove(job)
            job.message = "dropped: nobody was waiting for it"
            self._end_locked(job, JobState.CANCELLED, now)
        while self._queue and len(self._running) < self.max_running:
            job = self._start_order_locked(now)[0]
            self._queue.remove(job)
            self._running.append(job)
            self.peak_running = max(self.peak_running, len(self._running))
            job.state, job.started, job.message = JobState.RUNNING, now, "starting (loading the data, building the models)"
            job.threads = max(1, self.cores // len(self._running))
            threading.Thread(target=self._work, args=(job,), name=f"bnviz-job-{job.name}", daemon=True).start()

    def _end_locked(self, job: Job, state: JobState, now: float) -> None:
        job.state, job.ended = state, now
        if state is JobState.DONE:
            job.fraction = 1.0
        job.finished.set()

    def _forget_locked(self, now: float) -> None:
        for key, job in list(self._jobs.items()):
            if job.ended is not None and now - job.ended > FINISHED_KEEP_SECONDS:
                del self._jobs[key]

    def _should_stop_locked(self, job: Job, now: float) -> str | None:
        if job.cancel_reason:
            return job.cancel_reason
        if not self._watched(job, now) and job.fraction < YIELD_BEFORE_FRACTION and any(self._watched(other, now) for other in self._queue):
            return "yielded its core to a computation someone is watching"
        return None

    # ---------------------------------------------------------------- the worker
    def _report(self, job: Job, fraction: float, message: str, partial=None) -> None:
        """The job's progress callback (on its worker thread): record, then maybe stop."""
        with self._lock:
            job.fraction = min(max(float(fraction), 0.0), 1.0)
            job.message = message
            if job.first_report is None:
                job.first_report = (self.clock(), job.fraction)
            if partial is not None:
                job.partial = partial
            reason = self._should_stop_locked(job, self.clock())
        if reason:
            raise JobCancelled(reason)

    def _work(self, job: Job) -> None:
        from .train import thread_budget

        def compute(report):
            def progress(fraction: float, message: str, partial=None):
                report(fraction, message, partial)
                self._report(job, fraction, message, partial)

            with thread_budget(job.threads):
                return job.run(job.config, progress)

        def on_wait(fraction: float, message: str):
            self._report(job, fraction, f"another process is computing this: {message}")

        state, result, error, message = JobState.DONE, None, None, "done"
        try:
            result = self.store.get_or_compute(job.name, job.config, compute, on_wait)
        except JobCancelled as stop:
            state, message = JobState.CANCELLED, str(stop)
        except BnvizError as exc:
            state, error = JobState.FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker silently: logged, shown as a state
            log.exception("job %s failed", job.name)
            state, error = JobState.FAILED, f"The computation failed ({type(exc).__name__}: {exc})."
        with self._lock:
            job.result, job.error, job.message = result, error, message if state is not JobState.FAILED else "failed"
            job.partial = None  # the result (or the reason it has none) replaces it
            self._running.remove(job)
            self._end_locked(job, state, self.clock())
            self._schedule_locked(self.clock())
        if self.on_finished is not None:
            self.on_finished()
