"""The only bnviz module that imports streamlit: cached runners, progress, shared widgets.

Pages call :func:`run_experiment` (result store, else the config's background
job from :mod:`bnviz.jobs`, followed by a polling fragment with its status, ETA,
cancel button and optional live chart) and build their controls with
:class:`Controls`, whose widgets are bounded and mirrored in the URL
(``st.query_params``), so a link reopens a page in the same state.
:func:`training_stepper` is play / pause / step through training
(:mod:`bnviz.stepper`). With predictions on (:func:`predictions_toggle`,
``?predict=1``) :func:`run_experiment` asks the experiment's question
(:mod:`bnviz.predictions`) before its result; ``?hide=key1,key2`` hides controls
(:func:`hidden`), and :func:`preset_links` offers the "Link for your class" builder.
"""
from __future__ import annotations

import functools
import importlib
import math
import os
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

import streamlit as st

from .errors import BnvizError
from .formatting import format_percent, format_points  # noqa: F401 - the app's one percent format, re-exported for pages
from .jobs import Job, JobManager, JobState, JobStatus
from .malloc import limit_malloc_arenas, release_freed_memory
from .page_presets import HIDE_KEY, PAGE_SECTIONS, PREDICT_KEY, class_link, hidden_keys

# torch (and the modules that import it: the store reads bnviz.data's folder, the trainer,
# the stepper) is imported only when first used, so a fresh server paints the page's text
# within a second and loads torch behind a progress indicator (:func:`load_core`).
if TYPE_CHECKING:
    from .cache import ResultStore
    from .stepper import StepperRegistry


@st.cache_resource(show_spinner=False)
def result_store() -> ResultStore:
    """One store per process; the directory is shared by every process and replica."""
    from .cache import ResultStore
    from .train import configure_torch_threads

    configure_torch_threads()
    limit_malloc_arenas()
    return ResultStore()


def show_store_notice(store: ResultStore) -> None:
    """The store's one notice (a cache folder it cannot use: results in memory only), once per session."""
    if store.notice and not st.session_state.get("bnviz_store_notice_shown"):
        st.session_state["bnviz_store_notice_shown"] = True
        st.warning(store.notice)


def release_script_memory() -> None:
    """The end of a full script run: what it built and dropped (charts, frames, CSV text) handed
    back now. glibc returns by itself only free space at a heap's top; the rest waited for the
    next job's end. Measured after the why page's "Paper's noise, 1,500 steps" preset on the
    server (CPU torch): 492-510 -> 473-482 MiB resident. Costs a few milliseconds (the collection sees
    only objects made since :func:`_freeze_loaded_objects`). Where nothing is frozen (tests
    that import torch before the app: ~130 ms a collection) it only trims: Streamlit's own
    collection follows every script run anyway."""
    import gc

    if gc.get_freeze_count():
        gc.collect()
    release_freed_memory()


# What a page's first script run imports that takes seconds on a fresh server (torch alone:
# 2-15 s by the machine's load); smaller modules a page imports after them are quick.
CORE_MODULES = ("torch", "bnviz.data", "bnviz.models", "bnviz.train", "bnviz.cache")
# Imported with them so that the objects they create are there when the core is frozen
# (:func:`_freeze_loaded_objects`): every page draws with pandas and Altair.
DRAWING_MODULES = ("pandas", "altair", "bnviz.charts")


def _freeze_loaded_objects() -> None:
    """Move every object alive now (the imported modules: ~400,000 objects) out of the cyclic
    garbage collector's sight, once per process.

    Streamlit runs a full collection after every script run, fragment runs included
    (``runner.postScriptGC``); with torch, pandas and Altair loaded one took 230-280 ms of
    held GIL on the 2-core machine: a page's job followers (a fragment run every 2-4 s per
    section) and every click paid it, and the training threads waited. Frozen, it takes
    microseconds and still collects what script runs and jobs leave behind: only objects
    created before this call are exempt, and modules live for the whole process anyway."""
    import gc

    gc.collect()
    gc.freeze()


def load_core(title: str) -> None:
    """The first script run of a fresh server process: the page's title and a progress line
    while torch and bnviz's core import, instead of a blank page (the entry point calls it
    before the page runs; every later run finds them loaded and draws nothing)."""
    if all(name in sys.modules for name in CORE_MODULES):
        return
    slot = st.empty()
    with slot.container():
        st.title(title)
        with st.spinner("Loading PyTorch and bnviz's models: the first visit after the server started takes a few seconds…", show_time=True):
            for name in CORE_MODULES + DRAWING_MODULES:
                importlib.import_module(name)
            importlib.import_module("bnviz.engine").warm_up()  # before any job: see its docstring
            _freeze_loaded_objects()
    slot.empty()


LIVE_REDRAW_SECONDS = 0.5
# A computing section redraws its progress and live chart this often (a fragment rerun,
# not the page): often enough to look live, rare enough that a class of 30 watching does
# not take the cores the training wants. Measured on 2 cores, the pitfalls page cold (four
# sections, each following its job) went idle after 72 s at a 1-s poll and 20 s at 2 s:
# each poll of each section is a fragment run that holds the GIL the training threads want.
JOB_POLL_SECONDS = 2.0
# A section that also redraws a live chart each poll polls less often: the chart is most of
# a tick's cost. Measured cold on 2 cores (benchmarks/page_timings.py), home / train vs eval:
# every follower at 2 s 9.58 / 14.19 s, at 4 s 7.62 / 12.46 s, with no live chart 5.37 /
# 9.65 s; before jobs (the page trained in its own run) 7.88 / 12.67 s.
LIVE_POLL_SECONDS = 4.0
# ...and each of its timer's runs waits up to this long for the job to end, then reruns the page
# at once: a job that ends between two polls no longer leaves its section idle until the next
# (half a poll on average, 1-2 s per job). Measured cold on 2 cores (page_timings.py, one run
# each, 2026-12-03): BN vs LN 25.4 -> 20.3 s, why 27.9 -> 20.3 s, paper 35.8 -> 32.8 s; a
# profile of the train vs eval page had found 11.6 s of busy threads in 12.7 s of waiting.
# The wait holds the session's script thread, not the GIL; a click meanwhile is handled when
# it ends, so it stays short. A section's first run, in the page's run, does not wait: the
# sections below it must start.
FINISH_WAIT_SECONDS = 1.0
IN_SCRIPT_ENV = "BNVIZ_JOBS_IN_SCRIPT"  # "1": wait for jobs inside the script run (AppTest); else a polling fragment
_CANCELLED_KEY = "bnviz.cancelled_jobs"  # session state: job keys this session cancelled


@st.cache_resource(show_spinner=False)
def job_manager() -> JobManager:
    """The process's jobs (:mod:`bnviz.jobs`), shared by every session."""
    return JobManager(result_store(), on_finished=release_freed_memory)


_SESSION_ID_KEY = "bnviz.session_id"


def _session_id() -> str:
    """This browser session's own id (a uuid kept in its session state): the owner of the
    jobs it starts (only it may cancel them) and the scope of its steppers."""
    if _SESSION_ID_KEY not in st.session_state:
        st.session_state[_SESSION_ID_KEY] = uuid.uuid4().hex
    return st.session_state[_SESSION_ID_KEY]


def _waits_in_script() -> bool:
    """Whether :func:`run_experiment` waits for its job inside the script run instead of a
    polling fragment: where ``run_every`` fragments never tick. AppTest runs a script once
    and never ticks them, so ``tests/conftest.py`` sets ``BNVIZ_JOBS_IN_SCRIPT=1`` (the
    browser suite's server drops it: there the app runs as users run it)."""
    return os.environ.get(IN_SCRIPT_ENV, "").strip() == "1"


def run_experiment(name: str, config, live: Callable[[Any], None] | None = None, label: str = "Training"):
    """The experiment's result for ``config``: from the store, or from its job (:mod:`bnviz.jobs`).

    A cold config starts (or joins) the process's job for it; this script run then draws
    the job's progress in a fragment that polls it every :data:`JOB_POLL_SECONDS` and stops
    (:func:`stop`): the section below waits (outside a :func:`section`, the page), and a
    widget moved meanwhile only starts or joins the job of the new config, the old one goes on (policy in :mod:`bnviz.jobs`). When
    the job ends, the fragment reruns the page, which then reads the result from the store.
    ``live(partial)`` draws the job's latest partial result (e.g. curves as they grow) at each
    poll. A config the core rejects shows one clear message and stops the section (or the
    page); it never becomes a traceback. Inside a :func:`section`, the job's fragment is nested
    in the section's: it ticks on its own, and when the job ends it reruns the page.

    A page's main experiment has a question (:data:`bnviz.predictions.QUESTIONS`): with
    predictions on (:func:`predictions_on`) it is asked here first, the job training
    meanwhile, and the section (or the page) stops here, its charts hidden, until the student
    reveals the result, which then comes with the answer the result makes true.
    """
    from .predictions import QUESTIONS

    store = result_store()
    show_store_notice(store)
    try:
        question = QUESTIONS.get(name) if predictions_on() else None
        key = store.key(name, config)
        if question is not None and key not in _revealed():
            _ask(question, name, config, key)
        result = _result(store, name, config, live, label)
        if question is not None:
            _reveal(question, config, result, _revealed()[key])
        return result
    except BnvizError as exc:
        st.error(str(exc))
        stop()


def _result(store: ResultStore, name: str, config, live, label: str):
    cached = store.get(name, config)
    if cached is not None:
        return cached
    if store.key(name, config) in st.session_state.get(_CANCELLED_KEY, ()):
        _offer_restart(store.key(name, config), label)
    manager = job_manager()
    job = manager.submit(name, config, owner=_session_id())
    status = manager.poll(job)
    if status.finished:
        return _finished_result(job, status, label)
    if _waits_in_script():
        return _wait_in_script(manager, job, live, label)
    if current_section() is None and job.finished.wait(FINISH_WAIT_SECONDS):
        # the page's own experiment: nothing below runs until it ends, so wait a little here
        # too; a short job then shows no progress box and costs no second run of the page
        return _finished_result(job, manager.poll(job), label)
    _follow_in_fragment(manager, job, live, label, drew_live=status.partial is not None)
    stop()


# ------------------------------------------------------------------ predict, then reveal
_PREDICT_SESSION = "app.predict"  # the sidebar toggle's state: one person's choice
_REVEALED_KEY = "bnviz.predict.revealed"  # session state: result key -> the option the student picked


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def predictions_on() -> bool:
    """Whether pages ask their question before showing the result: the sidebar toggle
    (:func:`predictions_toggle`) where drawn, else the link's ``?predict=1``."""
    if _PREDICT_SESSION in st.session_state:
        return bool(st.session_state[_PREDICT_SESSION])
    return _truthy(st.query_params.get(PREDICT_KEY))


def predictions_toggle() -> None:
    """The sidebar's "Predict, then reveal" toggle, seeded from the link (``?predict=1``) and
    kept in it; only this session changes. Called once by the entry point, before the page."""
    if _PREDICT_SESSION not in st.session_state:
        st.session_state[_PREDICT_SESSION] = _truthy(st.query_params.get(PREDICT_KEY))
    on = st.sidebar.toggle("Predict, then reveal", key=_PREDICT_SESSION,
                           help="Each page asks a question about its main experiment before showing the result; the answer is computed from the run. A link with ?predict=1 turns it on for a whole class.")
    if on:
        st.query_params[PREDICT_KEY] = "1"
    elif PREDICT_KEY in st.query_params:
        del st.query_params[PREDICT_KEY]


def _revealed() -> dict:
    return st.session_state.setdefault(_REVEALED_KEY, {})


def _ask(question, name: str, config, key: str) -> None:
    """The question with its options and a Reveal button; the experiment's job trains in the
    background meanwhile (its progress below, polled). Stops the section (:func:`stop`; the
    page outside one): what follows, the experiment's charts included, waits for the reveal."""
    choice_key = f"bnviz.predict.{key}"

    def reveal():
        _revealed()[key] = st.session_state.get(choice_key)

    with st.container(border=True, key=f"bnviz-question-{key}"):
        st.markdown(f"**Predict, then reveal.** {question.text(config)}")
        choice = st.radio("Your prediction", question.options(config), index=None, key=choice_key,
                          help="Commit to an answer before you see the run; the answer is then computed from its numbers.")
        st.button("Reveal the result", key=f"bnviz.reveal.{key}", on_click=reveal, type="primary", icon=":material/visibility:",
                  disabled=choice is None, help="Pick an answer first; the result and the right answer appear here.")
        if result_store().get(name, config) is None:
            _train_meanwhile(name, config)
    stop()


def _train_meanwhile(name: str, config) -> None:
    """Start (or join) the experiment's job and show how far it is, polled; when it ends the
    page reruns once (the question stays, with its pick), so the poll stops."""
    manager = job_manager()
    job = manager.submit(name, config, owner=_session_id())

    @st.fragment(run_every=JOB_POLL_SECONDS)
    def meanwhile():
        status = manager.poll(job)
        if status.finished:
            st.rerun()
        st.caption(_status_text(status, "The experiment") + ". Its charts appear with the answer.")

    meanwhile()


def _reveal(question, config, result, picked: str | None) -> None:
    """The question again, the option the result makes true (``question.answer``) and why."""
    answer = question.answer(result)
    with st.container(border=True):
        st.markdown(f"**Predict, then reveal.** {question.text(config)}")
        if answer.option is None:
            st.info(f"This run cannot settle it (you picked: {picked}). {answer.explanation}")
        elif picked == answer.option:
            st.success(f"**{answer.option}**: your prediction was right. {answer.explanation}", icon=":material/check_circle:")
        else:
            st.warning(f"**{answer.option}** (you picked: {picked}). {answer.explanation}", icon=":material/lightbulb:")


def page_config(base, **changes):
    """``base.replace(**changes)``: the config the page's controls ask for. One the core refuses
    (a combination over the per-view budget, ``bnviz.budget``) shows its message and stops the
    section (or the page) there: never a traceback."""
    try:
        return base.replace(**changes)
    except BnvizError as exc:
        st.error(str(exc))
        stop()


def budget_help(what: str) -> str:
    """A control's help line on the per-view budget: ``what`` multiplies into the work."""
    from .budget import VIEW_COST_LIMIT

    return (f"One view trains at most {VIEW_COST_LIMIT:,} reference steps (steps of the paper's MLP on a batch of 60, about five "
            f"minutes of a CPU core): {what}. Heavier runs: `python -m bnviz run NAME --allow-heavy`.")
def _finished_result(job: Job, status: JobStatus, label: str):
    if status.state is JobState.DONE:
        return job.result
    if status.state is JobState.FAILED:
        raise BnvizError(status.error or "The computation failed.")
    st.warning(f"{label} stopped: {status.message}. Change a control back or reload the page to start it again.")
    stop()


def _offer_restart(key: str, label: str) -> None:
    def restart():
        st.session_state[_CANCELLED_KEY].discard(key)

    st.info(f"You cancelled this computation ({label}).")
    st.button("Compute it again", key=f"bnviz.restart.{key}", on_click=restart, icon=":material/play_arrow:", help="Start this computation again (its progress was not kept).")
    stop()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _status_text(status: JobStatus, label: str) -> str:
    """One line: computing / queued (position k) / done, and the ETA from the job's own rate."""
    if status.state is JobState.QUEUED:
        return f":material/hourglass_top: {label}: queued (position {status.queue_position}); every core is busy with other computations"
    eta = f", about {_duration(status.eta_seconds)} left" if status.eta_seconds is not None else ""
    return f":material/autorenew: {label}: computing, {status.message}{eta}"


def _draw_status(manager: JobManager, job: Job, status: JobStatus) -> None:
    def cancel():
        manager.cancel(job, "cancelled by the session that started it")
        st.session_state.setdefault(_CANCELLED_KEY, set()).add(job.key)

    row = st.container(horizontal=True, vertical_alignment="center")
    if status.owner is not None and status.owner == _session_id():
        row.button("Cancel", key=f"bnviz.cancel.{job.key}", on_click=cancel, icon=":material/stop:", help="Stop this computation (nothing is stored).")
    row.caption("The computation runs on the server: leave the page or move a control and it goes on; come back and its result is here.")


def _follow_in_fragment(manager: JobManager, job: Job, live, label: str, drew_live: bool) -> None:
    """The job's status and live chart, redrawn by a fragment every :data:`JOB_POLL_SECONDS`
    (:data:`LIVE_POLL_SECONDS` with a live chart); once the job's ETA is under that period,
    every second or so (each run waits up to :data:`FINISH_WAIT_SECONDS`), until it ends."""

    period = JOB_POLL_SECONDS if live is None else LIVE_POLL_SECONDS
    eta = manager.poll(job).eta_seconds
    if eta is not None and eta < period:
        period = FINISH_WAIT_SECONDS  # ending soon: the timer's first run must not come a whole period after this page run
    inline = True  # the fragment's first run is inline in the page's run; the others are its timer's or their own

    @st.fragment(run_every=period)
    def follow():
        nonlocal inline
        status = manager.poll(job)
        if not status.finished and not inline and job.finished.wait(FINISH_WAIT_SECONDS):
            status = manager.poll(job)
        was_inline, inline = inline, False
        if status.finished:
            st.rerun()  # the whole page, which reads the result (or says why there is none)
        if live is not None and status.partial is not None and not drew_live:
            # a fragment may only redraw outside containers it wrote to in the last full run
            st.rerun()
        # the key names the box in the page (class "st-key-bnviz-job-..."): browser tests wait for it to go
        with st.container(key=f"bnviz-job-{job.key}"):
            st.progress(min(max(status.fraction, 0.0), 1.0), text=_status_text(status, label))
            _draw_status(manager, job, status)
        if live is not None and status.partial is not None:
            live(status.partial)  # every run: what a fragment run does not redraw, the browser removes
        if not was_inline and status.eta_seconds is not None and status.eta_seconds < period:
            # the job should end before the next tick: poll again now (each run waits up to
            # FINISH_WAIT_SECONDS), so the result shows within about a second of the job's end
            # instead of up to a whole period after it
            st.rerun(scope="fragment")

    follow()


def _wait_in_script(manager: JobManager, job: Job, live, label: str):
    """Wait for ``job`` in this script run (AppTest; ``BNVIZ_JOBS_IN_SCRIPT=1``): the same
    job, progress and live drawing, without a fragment. A rerun of the page meanwhile stops
    this wait, never the job."""
    bar = st.progress(0.0, text=f"{label}…")
    next_draw = 0.0
    while True:
        status = manager.poll(job)
        if status.finished:
            break
        bar.progress(min(max(status.fraction, 0.0), 1.0), text=_status_text(status, label))
        if live is not None and status.partial is not None and time.monotonic() >= next_draw:
            started = time.monotonic()
            live(status.partial)
            # Drawing holds the GIL and a core the training threads want: redraw twice a
            # second at most, and spend at most a fifth of the time drawing.
            now = time.monotonic()
            next_draw = now + max(LIVE_REDRAW_SECONDS, 4 * (now - started))
        job.finished.wait(0.05)
    bar.empty()
    return _finished_result(job, status, label)


# ------------------------------------------------------------------ play / pause / step
PLAY_TICK_SECONDS = 0.5
PLAY_STEPS_PER_TICK = 2  # four batches a second: slow enough to read the numbers move
STEPPER_HISTORY = 300  # steps the chart shows (the latest)


@st.cache_resource(show_spinner=False)
def stepper_registry() -> StepperRegistry:
    """The sessions' steppers (:mod:`bnviz.stepper`), paused ones kept for a while."""
    from .stepper import StepperRegistry

    return StepperRegistry()


def training_stepper(scope: str, model_cfg, train_cfg, first_unit: int = 0) -> None:
    """Play / Pause / Step / Reset through one training run of ``(model_cfg, train_cfg)``
    (a BN model), in a fragment: each step shows that batch's mean and variance of three
    units of a BN layer beside the running estimates, γ and β, and draws their history.
    Playing advances :data:`PLAY_STEPS_PER_TICK` batches every :data:`PLAY_TICK_SECONDS`."""
    import pandas as pd

    from .charts.stepper import stepper_chart
    from .data import load_mnist
    from .stepper import TrainingStepper
    from .train import pick_device

    key = f"{_session_id()}|{scope}|{model_cfg.to_json()}|{train_cfg.to_json()}|{first_unit}"
    try:
        stepper = stepper_registry().get(key, lambda: TrainingStepper(model_cfg, train_cfg, load_mnist(str(pick_device())), first_unit=first_unit))
    except BnvizError as exc:
        st.error(str(exc))
        return
    playing_in_this_run = stepper.playing

    def toggle():
        stepper.playing = not stepper.playing and not stepper.done

    @st.fragment(run_every=PLAY_TICK_SECONDS if playing_in_this_run else None)
    def panel():
        if stepper.playing != playing_in_this_run:
            st.rerun()  # Play or Pause changes how often the fragment ticks: the page sets it
        if stepper.playing:
            stepper.step(PLAY_STEPS_PER_TICK)
        row = st.container(horizontal=True, vertical_alignment="center")
        if stepper.playing:
            row.button("Pause", key=f"{scope}.stepper.play", on_click=toggle, icon=":material/pause:", help="Stop after this batch; Step or Play goes on from here.")
        else:
            row.button("Play", key=f"{scope}.stepper.play", on_click=toggle, icon=":material/play_arrow:", disabled=stepper.done,
                       help=f"Train one batch after another ({PLAY_STEPS_PER_TICK} every {PLAY_TICK_SECONDS:g} s) until Pause or the last step.")
        row.button("Step", key=f"{scope}.stepper.step", on_click=stepper.step, icon=":material/skip_next:", disabled=stepper.playing or stepper.done, help="Train on one more batch.")
        row.button("Reset", key=f"{scope}.stepper.reset", on_click=stepper.reset, icon=":material/replay:", help="Back to the untrained model and the first batch.")
        records = stepper.records
        state = {JobState.PAUSED: "paused", JobState.RUNNING: "playing", JobState.DONE: "done"}[stepper.status()]
        row.caption(f"Step {len(records):,} of {stepper.train_cfg.steps:,} ({state}); batches of {stepper.train_cfg.batch_size}.")
        if not records:
            st.caption("Press **Step** to train on one batch, or **Play**: each batch's statistics appear here.")
            return
        layer = st.radio("BN layer", list(range(stepper.layers)), format_func=lambda i: f"layer {i + 1}", key=f"{scope}.stepper.layer", horizontal=True,
                         help="Which BN layer's three neurons the table and the chart show.")
        latest = records[-1]
        units = range(stepper.first_unit, stepper.first_unit + stepper.units)
        st.markdown(f"**Step {latest.step}**: training loss {latest.loss:.4f} on this batch.")
        table = pd.DataFrame(
            {
                "unit": list(units),
                "batch mean": latest.batch_mean[layer],
                "batch variance": latest.batch_var[layer],
                "running mean": latest.running_mean[layer],
                "running variance": latest.running_var[layer],
                "γ": latest.gamma[layer],
                "β": latest.beta[layer],
            }
        )
        st.dataframe(table, hide_index=True, width="stretch", column_config={c: st.column_config.NumberColumn(format="%.5f") for c in table.columns if c != "unit"})
        chart = stepper_chart(records[-STEPPER_HISTORY:], layer, 0, f"Unit {stepper.first_unit} of BN layer {layer + 1}, step by step")
        show_chart(st, chart, width="content")

    panel()


def curve_panels(panels: Sequence[tuple[Any, str, str]], total_steps: int, y_domain=None) -> Callable[[Any], None]:
    """Empty chart slots and the ``draw(runs)`` that fills them: one training-curve chart
    per ``(container, metric, title)``. Pass ``draw`` as :func:`run_experiment`'s ``live``
    to watch the curves grow, then call it once more with the final runs."""
    from .charts import curves_chart

    slots = [(container.empty(), metric, title) for container, metric, title in panels]

    def draw(runs) -> None:
        for slot, metric, title in slots:
            draw_chart(slot, curves_chart(runs, metric, title, y_domain=y_domain, total_steps=total_steps))

    return draw


def device_caption() -> None:
    from .train import pick_device

    st.sidebar.caption(f"Computing on **{pick_device().type}**. Results are stored: a second visit, by anyone, reads them instead of training again.")




def _one_of(options: Sequence) -> Callable[[str], Any]:
    """A URL-value parser that accepts only the text of one of ``options``."""
    by_text = {str(option): option for option in options}

    def parse(raw: str):
        if raw not in by_text:
            raise ValueError(raw)
        return by_text[raw]

    return parse


SHOWN_CHARACTERS = 40  # of a link's value quoted in a note: enough to recognise it, never a wall of text
NOTE_CHARACTERS = 200  # of a whole note
# The ASCII punctuation markdown (CommonMark, GFM, Streamlit's :emoji:, :color[...] and $math$)
# gives a meaning; , ; = ? ' " % / have none inline and stay as they are, so notes read normally.
MARKDOWN_PUNCTUATION = re.compile(r"([!#$&()*+\-.:<>@\[\\\]^_`{|}~])")


def shown_value(raw: str, limit: int = SHOWN_CHARACTERS) -> str:
    """A link's value as a note quotes it: control characters written as escapes, at most
    ``limit`` characters (then "…")."""
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in raw)
    return text if len(text) <= limit else text[:limit] + "…"


def plain_text(text: str) -> str:
    """``text`` as markdown that renders as exactly that text: every punctuation character
    with a markdown meaning backslash-escaped (CommonMark lets any ASCII punctuation be), so
    no link, image, emphasis, HTML, math, emoji shortcode or bare URL (GFM's autolinks need
    an unescaped "://", "www." or "@") can form."""
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


_PUBLISHED_KEY = "bnviz.published"  # session state: the URL text each control last wrote (Controls._publish)


def hidden(key: str) -> bool:
    """Whether the page's link hides the control or section ``key`` (``?hide=key1,key2``, as
    TensorFlow Playground's ``*_hide`` keys): a lecturer shares a link that shows only what the
    lesson needs. A hidden control keeps its link or default value; a hidden section is not drawn."""
    return key in hidden_keys(st.query_params.get(HIDE_KEY))


# ------------------------------------------------------------------ page sections
_SECTION_KEY = "bnviz.section"  # session state: the key of the section whose body runs now (None: the page's own code)
SECTIONS_DRAWN_KEY = "bnviz.sections_drawn"  # session state: the keys of the sections drawn, in order (tests read it)
_FULL_RUN_KEY = "bnviz.section_in_full_run"  # session state: True while a full page run draws a section
_SHARED_KEY = "bnviz.shared_with_page"  # session state: name -> the value a section shared in the last full run


def shared_with_page(name: str, value) -> None:
    """Inside a section: ``value`` (e.g. the section's config) is also read outside it, by a
    summary of several sections (the why page's scoreboard). When a rerun of the section
    alone finds it changed, the whole page reruns (from the store), so the summary never
    shows a stale result; a view-only control, which leaves it alone, still reruns only the
    section."""
    shared = st.session_state.setdefault(_SHARED_KEY, {})
    changed = name in shared and shared[name] != value
    shared[name] = value
    if changed and not st.session_state.get(_FULL_RUN_KEY, False):
        st.rerun()


class _SectionStopped(Exception):
    """Raised by :func:`stop` inside a section: that section ends there, the page goes on."""


def current_section() -> str | None:
    """The key of the :func:`section` whose body is running, or None (the page's own code)."""
    return st.session_state.get(_SECTION_KEY)


def stop() -> NoReturn:
    """``st.stop()`` scoped to the running :func:`section`: it ends there and the page's
    other sections are still drawn. Outside a section it stops the page."""
    if current_section() is not None:
        raise _SectionStopped
    st.stop()


def section(key: str):
    """Decorator: a page section (a function that draws it) as its own ``st.fragment``.

    Calling the decorated function draws the section, unless the page's link hides it
    (:func:`hidden`: ``?hide=key``), which skips it entirely (nothing drawn, nothing
    computed). A widget inside the section reruns only the section, never the page: a
    view-only control (which unit, which layer, which chart) redraws it from the stored
    result, and the section's own experiment settings start or join their job (followed by
    :func:`run_experiment`'s polling fragment, nested in this one). The section reads the
    page's variables of the last full run (the page script's globals, or its arguments).

    Bookkeeping per section: the charts it draws (:func:`draw_chart`) are offered by the
    :func:`downloads` it calls, never by another section's or the page's, and a rerun of the
    section forgets what its previous run drew, so nothing is offered stale or twice.
    :func:`stop` (and a job still computing, or a refused config) ends the section, not the
    page. ``key``: short, stable, unique on the page and unlike its controls' URL keys; each
    page's keys are listed in ``bnviz.page_presets.PAGE_SECTIONS`` (a teacher's link hides them).

    Usage::

        @section("mates")
        def batch_mates():
            st.header("2. Batch-mates: one image, many batches")
            ...

        batch_mates()
    """

    def decorate(body: Callable[..., None]) -> Callable[..., None]:
        @st.fragment
        def fragment(*args, **kwargs) -> None:
            outer = st.session_state.get(_SECTION_KEY)
            st.session_state[_SECTION_KEY] = key
            _session_charts().forget(key)
            try:
                # the key names the box in the page (class "st-key-bnviz-section-KEY")
                with st.container(key=f"bnviz-section-{key}"):
                    body(*args, **kwargs)
            except _SectionStopped:
                pass
            finally:
                st.session_state[_SECTION_KEY] = outer

        @functools.wraps(body)
        def draw(*args, **kwargs) -> None:
            # only a full run of the page calls this; a fragment rerun calls ``fragment`` alone
            if hidden(key):
                return
            drawn = st.session_state.setdefault(SECTIONS_DRAWN_KEY, [])
            if key not in drawn:
                drawn.append(key)
            st.session_state[_FULL_RUN_KEY] = True
            try:
                fragment(*args, **kwargs)
            finally:
                st.session_state[_FULL_RUN_KEY] = False

        draw.section_key = key
        return draw

    return decorate


class Controls:
    """Bounded widgets mirrored in the URL.

    ``scope`` keeps session-state keys apart between pages; the URL uses the
    short ``key``. A hand-edited URL value is clamped or ignored with a note.
    """

    def __init__(self, scope: str, container=None):
        self.scope = scope
        self.container = container or st
        self.notes: list[str] = []

    def _session_key(self, key: str) -> str:
        return f"{self.scope}.{key}"

    def _help(self, key: str, help: str | None) -> str | None:
        """The page's own tooltip, else the control's entry in :mod:`bnviz.control_help`."""
        from .control_help import control_help

        return help if help is not None else control_help(self.scope, key)

    def _remember_default(self, key: str, default, label: str) -> None:
        """Each control's default, for the page's "Reset all" (:func:`_reset_all`), and its
        label, for the "Link for your class" builder (:func:`_class_link_builder`)."""
        st.session_state.setdefault(_defaults_key(self.scope), {})[key] = default
        st.session_state.setdefault(_labels_key(self.scope), {})[key] = label

    def _moved_in_url(self, key: str) -> bool:
        """Whether the URL's value for ``key`` is not the one this page last wrote there: the
        browser's Back or Forward brought an earlier (or later) URL, and Streamlit reran the
        page with it (its history entries are the URLs this page wrote, one per change).
        That URL's value wins over the session's, so Back undoes a change. A key missing from
        the URL (a page opened from the sidebar) is not a move: the session keeps its value."""
        raw = st.query_params.get(key)
        last = st.session_state.get(_PUBLISHED_KEY, {}).get(self._session_key(key))
        return raw is not None and last is not None and raw != last

    def _seed(self, key: str, parse: Callable[[str], Any], default, label: str):
        self._remember_default(key, default, label)
        session_key = self._session_key(key)
        if session_key not in st.session_state or self._moved_in_url(key):
            raw = st.query_params.get(key)
            value = default
            if raw is not None:
                try:
                    value = parse(raw)
                except (ValueError, TypeError, OverflowError):  # any text a link can hold: "inf", "1e999", 10,000 characters
                    self.notes.append(f"Ignored the link's value “{shown_value(raw)}” for “{key}”; using {default}.")
            st.session_state[session_key] = value
        return session_key

    def _draw(self, key: str, session_key: str, widget: Callable, label: str, **kwargs):
        """``widget(label, key=session_key, **kwargs)``, unless the link hides ``key``
        (:func:`hidden`): then it is not drawn and keeps the value the session holds (the
        link's or the default). Either way the value is published in the URL and returned."""
        value = st.session_state[session_key] if hidden(key) else widget(label, key=session_key, **kwargs)
        self._publish(key, value)
        return value

    def _publish(self, key: str, value) -> None:
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        st.session_state.setdefault(_PUBLISHED_KEY, {})[self._session_key(key)] = text
        if st.query_params.get(key) != text:
            st.query_params[key] = text

    def _clamp(self, key, value, low, high):
        if value < low or value > high:
            clamped = min(max(value, low), high)
            self.notes.append(f"The link asked for {key}={shown_value(f'{value:g}')}, outside [{low}, {high}]; using {clamped}.")
            return clamped
        return value

    def slider(self, label: str, key: str, min_value, max_value, default, step=None, help: str | None = None, **kwargs):
        number = int if isinstance(default, int) and not isinstance(default, bool) else float

        def parse(raw):
            # Clamp as a float first: int(float("1e308")) is a 309-digit integer, int(float("inf")) raises.
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return number(self._clamp(key, value, min_value, max_value))

        session_key = self._seed(key, parse, default, label)
        return self._draw(key, session_key, self.container.slider, label, min_value=min_value, max_value=max_value, step=step, help=self._help(key, help), **kwargs)

    def select(self, label: str, key: str, options: Sequence, default, help: str | None = None, slider: bool = False, format_func=str, **kwargs):
        """A selectbox (or ``select_slider``) over fixed options; URL values must be one of them."""
        self._forget_stale_choice(key, options, default)
        session_key = self._seed(key, _one_of(options), default, label)
        widget = self.container.select_slider if slider else self.container.selectbox
        return self._draw(key, session_key, widget, label, options=list(options), help=self._help(key, help), format_func=format_func, **kwargs)

    def select_range(self, label: str, key: str, options: Sequence, default: tuple, help: str | None = None, format_func=str, **kwargs) -> tuple:
        """A two-handle ``select_slider`` over fixed options; the URL holds ``low,high``."""
        options = list(options)
        parse_one = _one_of(options)

        def parse(raw):
            parts = raw.split(",")
            if len(parts) != 2:
                raise ValueError(raw)
            return tuple(sorted((parse_one(part) for part in parts), key=options.index))

        # Streamlit decides "range or single" from ``value``, not from session state, so the
        # starting range is kept under its own key and passed as ``value`` (once: the widget then keeps its own).
        self._remember_default(key, tuple(default), label)
        session_key = self._session_key(key)
        initial_key = f"{session_key}.initial"
        moved = self._moved_in_url(key)
        if initial_key not in st.session_state or moved:
            initial, raw = tuple(default), st.query_params.get(key)
            if raw is not None:
                try:
                    initial = parse(raw)
                except ValueError:
                    self.notes.append(f"Ignored the link's value {raw!r} for “{key}”; using {','.join(map(str, default))}.")
            st.session_state[initial_key] = initial
            if moved:  # Back/Forward: the widget's own value too (as a preset sets it, _apply_preset)
                st.session_state[session_key] = initial
        if hidden(key):  # not drawn: the value this session last had, else the link's or the default
            value = st.session_state.get(session_key, st.session_state[initial_key])
            self._publish(key, value)
            return tuple(value)
        value = self.container.select_slider(label, options=options, value=st.session_state[initial_key], key=session_key, help=self._help(key, help), format_func=format_func, **kwargs)
        self._publish(key, value)
        return tuple(value)

    def radio(self, label: str, key: str, options: Sequence, default, help: str | None = None, format_func=str, **kwargs):
        self._forget_stale_choice(key, options, default)
        session_key = self._seed(key, _one_of(options), default, label)
        return self._draw(key, session_key, self.container.radio, label, options=list(options), help=self._help(key, help), format_func=format_func, **kwargs)

    def toggle(self, label: str, key: str, default: bool, help: str | None = None):
        def parse(raw):
            if raw.lower() in ("true", "1"):
                return True
            if raw.lower() in ("false", "0"):
                return False
            raise ValueError(raw)

        session_key = self._seed(key, parse, default, label)
        return self._draw(key, session_key, self.container.toggle, label, help=self._help(key, help))

    def _forget_stale_choice(self, key: str, options: Sequence, default) -> None:
        """A choice whose options depend on other controls (a learning rate among those
        trained, a layer among the model's): a value no longer offered goes back to the
        default. Only a value already in the session: a link's value is read as usual."""
        session_key = self._session_key(key)
        if session_key in st.session_state and st.session_state[session_key] not in list(options):
            st.session_state[session_key] = default

    def show_notes(self) -> None:
        """Each note once, as plain text: a note quotes the link, and ``st.info`` renders
        markdown, so a link could otherwise put its own links, images or markup in a bnviz box."""
        for note in dict.fromkeys(self.notes):
            if len(note) > NOTE_CHARACTERS:  # a value quoted whole: keep the start and how the note ends
                note = note[: NOTE_CHARACTERS - SHOWN_CHARACTERS] + "…" + note[-SHOWN_CHARACTERS:]
            st.info(plain_text(note), icon=":material/link:")


# The charts drawn in this script run, per session, for downloads() to offer as PNG/SVG
# (Streamlit 1.67's chart toolbar has no image export). Reset by the entry point each full
# run; a section (a fragment, which can rerun alone) forgets its own charts when it reruns.
class _DrawnCharts:
    def __init__(self):
        self.count = 0  # charts drawn this run: positions for chart_mark()
        # key -> (position, chart, section) not offered yet; section: the current_section() that drew it
        self.pending: dict[Any, tuple[int, Any, str | None]] = {}

    def forget(self, section: str | None) -> None:
        """Drop what ``section`` drew and did not offer: it is about to draw again."""
        self.pending = {key: entry for key, entry in self.pending.items() if entry[2] != section}


def _session_charts() -> _DrawnCharts:
    # st.session_state is the browser session's own: the charts it was shown
    return st.session_state.setdefault("bnviz.drawn_charts", _DrawnCharts())


def new_script_run() -> None:
    """Forget the previous run's charts (the entry point calls it before the page runs)."""
    drawn = _session_charts()
    drawn.count, drawn.pending = 0, {}
    st.session_state[SECTIONS_DRAWN_KEY] = []


def chart_mark() -> int:
    """A mark between the charts drawn so far and the next ones, for a page whose
    sections each have their own :func:`downloads` (``charts=(start_mark, end_mark)``)."""
    return _session_charts().count


def diverged_sweep_warning(runs: dict) -> None:
    """One warning naming the runs of a batch-size sweep that diverged (``runs`` maps
    ``(norm, batch size, seed)`` to a result); they are left out of the sweep's means."""
    diverged = [f"{run.label} (batch {key[1]}, seed {key[2]}, step {run.diverged_step})" for key, run in runs.items() if run.diverged]
    if diverged:
        st.warning("These runs **diverged** (loss NaN or infinite) and are left out of the means: " + "; ".join(diverged) + ".")


def draw_chart(where, chart, takeaway: str | None = None, **kwargs) -> None:
    """The chart (``where``: ``st``, a column or a placeholder) with its
    one-sentence takeaway under it, and keep the chart for a later :func:`downloads` to offer
    as an image. ``takeaway``: the page's computed sentence (markdown); by default the one
    :func:`bnviz.charts.takeaways.chart_takeaway` reads from the chart's own data. A
    placeholder redrawn (live curves) keeps its place and only its latest chart."""
    spec = show_chart(where, chart, takeaway, **kwargs)
    drawn, section_now = _session_charts(), current_section()
    key = (section_now, id(where) if where is not st else ("st", drawn.count))
    position = drawn.pending[key][0] if key in drawn.pending else drawn.count
    drawn.pending[key] = (position, spec, section_now)
    drawn.count += 1


def show_chart(where, chart, takeaway: str | None = None, **kwargs) -> dict:
    """The chart and its takeaway in ``where`` (as :func:`draw_chart`, but not offered for
    download: a live view redrawn every tick); returns the chart's spec."""
    from .charts import chart_spec

    spec = chart_spec(chart)  # once: the screen, the sentence and the image all read it
    box = where.container()  # in a placeholder: chart and sentence replace the previous pair
    box.vega_lite_chart(spec=dict(spec), **kwargs)  # Streamlit moves "datasets" out of its copy
    show_takeaway(box, takeaway if takeaway is not None else spec)
    return spec


def show_takeaway(where, takeaway) -> None:
    """The sentence under a chart: ``takeaway`` as markdown, or read from a chart's data (a
    chart or its spec; plain text: a series' name is shown as it is)."""
    from .charts.takeaways import chart_takeaway

    text = takeaway if isinstance(takeaway, str) else (lambda read: plain_text(read) if read else None)(chart_takeaway(takeaway))
    if text:
        where.caption(f":material/lightbulb: {text}")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _chart_title(spec: dict, index: int) -> str:
    title = spec.get("title")
    text = title if isinstance(title, str) else title.get("text") if isinstance(title, dict) else None
    subtitle = title.get("subtitle") if isinstance(title, dict) else None
    if isinstance(text, str) and text and isinstance(subtitle, str) and subtitle:
        return f"{text} ({subtitle})"  # as charts.chart_title split it
    return text if isinstance(text, str) and text else f"Chart {index}"


def _chart_image(spec: dict, kind: str):
    """PNG or SVG of a Vega-Lite spec, rendered on the server by vl-convert (what Altair's
    ``chart.save`` uses) only when the button is clicked."""
    def render():
        import vl_convert

        return vl_convert.vegalite_to_png(spec, scale=2) if kind == "png" else vl_convert.vegalite_to_svg(spec)

    return render


def downloads(name: str, config, tables: dict | None = None, title: str = "Download the data and the config", charts: tuple[int, int | None] | None = None,
              from_sections: Sequence[str] = ()) -> None:
    """Config as JSON (``python -m bnviz run NAME --config FILE`` reproduces the run), each
    chart's data as CSV, and the charts drawn with :func:`draw_chart` and not offered yet as
    PNG and SVG: those of the running :func:`section` (or, outside sections, the page's own),
    ``charts``: only those between two :func:`chart_mark` marks. ``from_sections``: also
    those of these sections, for sections with no control of their own (they rerun only with
    the page, so what they drew is never stale when the page offers it).
    ``title`` tells two of these expanders on one page apart."""
    from .charts import palette

    section_now = current_section()
    prefix = f"download.{section_now}.{name}" if section_now else f"download.{name}"  # one experiment offered by two sections
    with st.expander(title):
        file_name = f"bnviz-{name}-config.json"
        st.download_button("Experiment config (JSON)", data=config.to_json(), file_name=file_name, mime="application/json", key=f"{prefix}.config", on_click="ignore",
                           help="Every setting of this experiment; the command below reruns it exactly.")
        st.caption("Reproduce it exactly from the command line:")
        st.code(f"python -m bnviz run {name} --config {file_name}", language="bash")
        for title, frame in (tables or {}).items():
            slug = _slug(title)
            st.download_button(f"{title} (CSV)", data=frame.to_csv(index=False), file_name=f"bnviz-{name}-{slug}.csv", mime="text/csv", key=f"{prefix}.{slug}", on_click="ignore",
                               help="The chart's data, one row per plotted point (long curves are thinned on screen, not here).")
        drawn = _session_charts()
        start, end = charts if charts is not None else (0, None)
        keys = [key for key, (position, _, drew) in drawn.pending.items()
                if (drew == section_now or drew in from_sections) and position >= start and (end is None or position < end)]
        offered = sorted((drawn.pending.pop(key) for key in keys), key=lambda entry: entry[0])
        if offered:
            st.caption("The charts as images:")
        for index, (_, drawn_spec, _) in enumerate(offered, start=1):
            title = _chart_title(drawn_spec, index)
            slug = _slug(title)[:60] or f"chart-{index}"
            spec = {"background": palette().background, **drawn_spec}  # an image's ink needs the theme's page under it
            png, svg = st.columns(2)
            png.download_button(f"{title} (PNG)", data=_chart_image(spec, "png"), file_name=f"bnviz-{name}-{slug}.png", mime="image/png", key=f"{prefix}.{slug}.{index}.png", on_click="ignore", help="The chart as a PNG image (twice the screen's resolution).")
            svg.download_button(f"{title} (SVG)", data=_chart_image(spec, "svg"), file_name=f"bnviz-{name}-{slug}.svg", mime="image/svg+xml", key=f"{prefix}.{slug}.{index}.svg", on_click="ignore", help="The chart as an SVG vector image.")


def _defaults_key(scope: str) -> str:
    return f"bnviz.defaults.{scope}"


def _labels_key(scope: str) -> str:
    return f"bnviz.labels.{scope}"


def _reset_all(scope: str) -> None:
    """Button callback: every control of the page back to its default, seed included, and a
    URL with no settings (the presenter view stays as it is)."""
    _apply_preset(scope, dict(st.session_state.get(_defaults_key(scope), {})))
    for key in list(st.query_params):
        if key not in (PRESENTER_KEY, HIDE_KEY, PREDICT_KEY):  # a lecturer's choices and the presenter view outlive it
            del st.query_params[key]


def _apply_preset(scope: str, query: dict) -> None:
    """Button callback: put a preset's values into the page's controls (before they are drawn);
    a lesson's ``hide`` into the URL and its ``predict`` into the session's toggle."""
    query = dict(query)
    if HIDE_KEY in query:
        hide = query.pop(HIDE_KEY)
        if hide:
            st.query_params[HIDE_KEY] = hide
        elif HIDE_KEY in st.query_params:
            del st.query_params[HIDE_KEY]
    if PREDICT_KEY in query:
        st.session_state[_PREDICT_SESSION] = bool(query.pop(PREDICT_KEY))
    for key, value in query.items():
        session_key = f"{scope}.{key}"
        if isinstance(value, tuple):  # a range (Controls.select_range) is drawn from its ".initial" value
            st.session_state[f"{session_key}.initial"] = value
        # Set through the Session State API, so the new value is also sent to the browser: a
        # widget value left only in the browser (a range popped here once) came back at the next click.
        st.session_state[session_key] = value


def preset_help(name: str, query: dict) -> str:
    """A preset button's tooltip: the controls it sets (URL keys, as its link shows them)."""
    from .page_presets import DEFAULT_VIEW, url_text

    lesson_off = {key for key in (HIDE_KEY, PREDICT_KEY) if not query.get(key)}  # a lesson's keys, on the presets that leave them off
    settings = ", ".join(f"{key} = {url_text(value)}" for key, value in query.items() if key not in lesson_off)
    what = "Puts the controls the presets change back to their defaults" if name == DEFAULT_VIEW else "Sets this scenario's controls"
    return f"{what} ({settings}); the other controls keep their values. *Reset all* resets every control."


def preset_links(page: str) -> None:
    """The page's classroom presets one click away: a button each that sets the page's
    controls (and so the URL), and each preset's own link to share (``bnviz.page_presets``)."""
    from .page_presets import PAGE_PRESETS

    presets = PAGE_PRESETS[page]
    queries = presets.queries()
    row = st.container(horizontal=True, gap="small", vertical_alignment="center")
    page_url = st.context.url or ""
    if queries:
        row.caption("Classroom presets:")
        for name, (_experiment, query) in queries.items():
            row.button(name, key=f"{presets.scope}.preset.{name}", on_click=_apply_preset, args=(presets.scope, query), help=preset_help(name, query))
        row.button("Reset all", key=f"{presets.scope}.reset", icon=":material/restart_alt:", on_click=_reset_all, args=(presets.scope,),
                   help="Every control on this page back to its default, the seed included (a preset changes only its own controls).")
        with row.popover("Links", icon=":material/link:", help="Each preset as a link: it opens this page with the preset's settings."):
            st.caption("Send a link: it opens this page with that preset's settings (copy button at the right of each).")
            for name, (_experiment, query) in queries.items():
                st.markdown(f"**{name}**")
                st.code(presets.link(page_url, query), language=None, wrap_lines=True)
    _class_link_builder(row, page, presets.scope, page_url)


def _class_link_builder(row, page: str, scope: str, page_url: str) -> None:
    """"Link for your class": pick the controls and the sections (``PAGE_SECTIONS[page]``) to
    hide and whether the question comes first; the link (this page's current settings,
    :func:`bnviz.page_presets.class_link`) appears below.
    The popover's content is computed only while it is open (``on_change="rerun"``): by then
    the page has run once and every control it drew is known (:meth:`Controls._remember_default`)."""
    popover = row.popover("Link for your class", icon=":material/school:", on_change="rerun", key=f"{scope}.class_link",
                          help="Build a link for a lecture: the controls you hide are not shown (they keep their values), and the question can come first.")
    if not popover.open:
        return
    with popover:
        labels = st.session_state.get(_labels_key(scope), {})
        now_hidden = hidden_keys(st.query_params.get(HIDE_KEY))
        hide = st.multiselect("Hide these controls", list(labels), default=[key for key in labels if key in now_hidden], key=f"{scope}.class_link.hide",
                              format_func=lambda key: f"{labels[key]} ({key})", placeholder="Every control shown",
                              help="Hidden controls are not drawn; they keep the value the link gives them (the page's current one).")
        sections = PAGE_SECTIONS.get(page, {})
        if sections:
            hide = hide + st.multiselect("Hide these sections", list(sections), default=[key for key in sections if key in now_hidden], key=f"{scope}.class_link.sections",
                                         format_func=lambda key: f"{sections[key]} ({key})", placeholder="Every section shown",
                                         help="A hidden section is not drawn and computes nothing.")
        else:
            st.caption("This page has no sections that can be hidden yet: only its controls.")
        predict = st.toggle("Ask the question before the result (predict, then reveal)", value=predictions_on(), key=f"{scope}.class_link.predict",
                            help="The link carries ?predict=1: each page asks its question before showing its main result.")
        st.caption("The link keeps the page's current settings. Copy it (button at the right):")
        settings = {key: value for key, value in st.query_params.to_dict().items() if key != PRESENTER_KEY}  # the class's own view
        st.code(class_link(page_url, settings, hide, predict), language=None, wrap_lines=True)


# ------------------------------------------------------------------ presenter view
PRESENTER_KEY = "presenter"  # in the URL, so a teacher's link keeps it
PRESENTER_SCALE = 1.35  # the main area's zoom and the charts' fonts; browser zoom (Ctrl +) adds to it

# The main area zoomed as a whole (CSS ``zoom``, as browser zoom but not the sidebar): sliders
# with their values, metrics, titles, equations, dropdowns and diagrams grow together and
# re-lay out to the narrower width, so nothing is struck through or clipped (scaling only the
# text once put slider values over their tracks). Charts are the exception: Vega sizes a chart
# from its container's on-screen width, so a zoomed chart overflowed by the zoom factor. They
# are drawn unzoomed at the full width, with their fonts (axes, legends, titles, annotations)
# scaled by the same factor instead (``bnviz.charts`` reads it). Dataframes (a canvas grid that
# also sizes itself from the on-screen width, 1,031 px in a 980 px page at 1280x720) are drawn
# unzoomed too, at their normal size. Labels and values wrap (BASE_CSS), never cut with "…".
PRESENTER_CSS = (
    "<style>"
    "[data-testid='stMainBlockContainer'] {{ zoom: {scale:.2f}; }}"
    "[data-testid='stMainBlockContainer'] :is([data-testid='stVegaLiteChart'], [data-testid='stDataFrame']) {{ zoom: {unzoom:.6f}; }}"
    "</style>"
)


# Every view, phones included: a wide equation or a wide chart (the pooling grids, faceted
# histograms) scrolls sideways inside its own box instead of being cut off at the page's edge.
BASE_CSS = (
    "<style>"
    "[data-testid='stMain'] .katex-display { overflow-x: auto; overflow-y: hidden; padding-bottom: 2px; }"
    # a chart or table wider than the screen (the pooling grids: ~890 px) keeps the page's width
    # and scrolls inside its own box; without max-width the box itself grew past the screen
    "[data-testid='stMain'] :is([data-testid='stVegaLiteChart'], [data-testid='stTable']) { overflow-x: auto; max-width: 100%; }"
    # a metric's label, value or reference and a widget's label wrap instead of ending in "…"
    # (Streamlit cuts them to one line: "0.999822 … 0.9…" said nothing)
    "[data-testid='stMain'] :is([data-testid='stMetricLabel'], [data-testid='stMetricValue'], [data-testid='stMetricDelta'], "
    "[data-testid='stWidgetLabel']) :is(div, p) { white-space: normal; overflow: visible; text-overflow: clip; }"
    # every bnviz metric's delta is a reference ("no BN: 85.5%"), not a change: no up/down arrow
    "[data-testid='stMetricDelta'] [data-testid^='stMetricDeltaIcon'] { display: none; }"
    "</style>"
)


def presenter_view() -> float:
    """The sidebar's "Presenter view" toggle (mirrored in the URL as ``?presenter=true``).

    On: the page's main area is drawn ``PRESENTER_SCALE`` times larger (:data:`PRESENTER_CSS`),
    charts at full width with fonts as large. Called once by the entry point, before the page
    runs, so every page gets it; only this session's view changes. Returns the scale in force.
    """
    from . import charts

    session_key = "app.presenter"
    if session_key not in st.session_state:
        st.session_state[session_key] = st.query_params.get(PRESENTER_KEY, "").lower() in ("true", "1")
    on = st.sidebar.toggle("Presenter view", key=session_key, help="Everything on the page larger for a projector (×1.35: text, controls, equations, diagrams, chart labels); the page's link keeps it.")
    if on:
        st.query_params[PRESENTER_KEY] = "true"
    elif PRESENTER_KEY in st.query_params:
        del st.query_params[PRESENTER_KEY]  # the normal view needs no URL key
    scale = PRESENTER_SCALE if on else 1.0
    st.session_state["bnviz.chart_scale"] = scale
    charts.set_scale_source(_session_chart_scale)
    st.html(BASE_CSS + (PRESENTER_CSS.format(scale=scale, unzoom=1 / scale) if on else ""))
    dim_room_theme()
    return scale


# ------------------------------------------------------------------ dark, high-contrast theme
# Streamlit's own theme machinery: .streamlit/config.toml's [theme.light] and [theme.dark]
# (white on black, for dim rooms) are the two themes a visitor can pick in the app menu's
# Settings, and the URL's ``embed_options=dark_theme`` / ``light_theme`` picks one on load
# (Streamlit keeps ``embed_options`` in the URL as the page's other settings change, so a
# teacher's link keeps it). The theme is only in the browser: the server reads it from
# ``st.context.theme`` (reported with every script run) to draw the charts' ink to match.
THEME_OPTIONS = ("light_theme", "dark_theme")
# Reload the page with the chosen theme's embed option (Streamlit applies a theme option on
# load only); the URL's other settings stay, so the view comes back as it was.
_THEME_RELOAD_JS = """<script>
const url = new URL(window.location.href);
const kept = url.searchParams.getAll("embed_options").filter(v => !{options}.includes(v));
url.searchParams.delete("embed_options");
for (const value of [...kept, "{choice}"]) url.searchParams.append("embed_options", value);
window.location.replace(url.toString());
</script>"""


def _session_theme() -> str:
    """The running session's theme name for the charts' palette ("light" outside a session)."""
    try:
        return str(st.session_state.get("bnviz.theme", "light"))
    except Exception:  # noqa: BLE001 - no Streamlit session (CLI, tests)
        return "light"


def dim_room_theme() -> str:
    """The sidebar's "Dim room" toggle: Streamlit's dark theme (white on black) or its light
    one, and the charts' ink to match (:func:`bnviz.charts.palette`). Returns the theme name."""
    from . import charts

    theme = "dark" if st.context.theme.type == "dark" else "light"
    st.session_state["bnviz.theme"] = theme
    charts.set_theme_source(_session_theme)
    session_key = "app.dim_room"
    st.session_state[session_key] = theme == "dark"  # the browser's theme, however it was chosen (menu, link, this toggle)

    def switch():
        st.session_state["bnviz.theme_request"] = "dark_theme" if st.session_state[session_key] else "light_theme"

    st.sidebar.toggle("Dim room: dark, high contrast", key=session_key, on_change=switch,
                      help="White on black, for a dark room or a projector that washes colours out (Streamlit's dark theme; "
                           "also in the app menu's Settings). The page reloads with the same settings; its link keeps the theme.")
    request = st.session_state.pop("bnviz.theme_request", None)
    if request in THEME_OPTIONS:
        with st.sidebar:
            st.html(_THEME_RELOAD_JS.format(options=list(THEME_OPTIONS), choice=request), unsafe_allow_javascript=True)
    return theme


def verdict_cell_style(good: bool) -> str:
    """A table cell's CSS for a measured yes (green) or no (red), readable in either theme."""
    from . import charts

    shown = charts.palette()
    return f"background-color: {shown.good_cell if good else shown.bad_cell}; color: {shown.ink}"


def _session_chart_scale() -> float:
    """The chart-font scale of the session whose script is running (1 outside a session)."""
    try:
        return float(st.session_state.get("bnviz.chart_scale", 1.0))
    except Exception:  # noqa: BLE001 - no Streamlit session (CLI, tests): the normal size
        return 1.0


def article_path(pages: Sequence, current) -> None:
    """Previous / next page in the article's order, under the page (the entry point calls it
    after the page ran): a class can follow the story without the sidebar."""
    order = [page.url_path for page in pages]
    if current.url_path not in order:
        return
    index = order.index(current.url_path)
    st.divider()
    back, _gap, forward = st.columns([2, 1, 2])
    if index > 0:
        back.page_link(pages[index - 1], label=f"Previous: {pages[index - 1].title}", icon=":material/arrow_back:")
    if index + 1 < len(pages):
        forward.page_link(pages[index + 1], label=f"Next: {pages[index + 1].title}", icon=":material/arrow_forward:")


def source_expander(*objects, title: str = "Read the code") -> None:
    """The source of the bnviz functions that computed what is on screen."""
    import inspect

    with st.expander(title):
        for obj in objects:
            st.caption(f"`{obj.__module__}.{obj.__qualname__}`")
            st.code(inspect.getsource(obj), language="python")
