"""The one trainer every experiment uses.

A run is ``(ModelConfig, TrainConfig)`` -> :class:`TrainResult`. The trainer
draws seeded batches by index from tensors already on the device, records the
loss every step, evaluates on a fixed test subset every ``eval_every`` steps
(eval mode, no stalls on the full set), and the full test set once at the end.
A NaN or inf loss stops the run and marks it ``diverged``: a result, never an
exception for the page.

Recorders observe a run without changing it. They may implement any of::

    attach(model)                              once, before training
    on_batch(step, x, y)                       the batch step ``step`` is about to train on
    after_backward(step, model)                gradients present, weights not yet updated
    after_step(step, model)                    after the optimiser step
    watch_evaluation(model) -> [hook handles]  hooks for one evaluation pass, removed after it
    on_eval(step, model, activations)          activations[i]: input of block i's nonlinearity
    finish() -> dict[str, np.ndarray]          stored in ``TrainResult.records``

Which hooks a run's recorders have decides how fast it trains (:mod:`bnviz.engine`): with
none acting during training, the steps between evaluations run as one engine call; a
forward hook on the model or ``after_backward`` needs the Python step; ``on_batch`` or
``after_step`` one engine call per step.

Several runs can advance together (:func:`train_together`), so a page can
draw all their curves as they grow.
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .config import Config, check
from .data import MNIST, BatchSampler, batch_source, class_subset, first_examples
from .engine import StackedMLPStep, engine_for, stack_key
from .models import ModelConfig, Net, build_model

OPTIMIZERS = ("sgd", "momentum", "adam")
# What a non-finite training loss does: "stop" marks the run diverged; "skip" skips that
# step's update and goes on, as torch.amp.GradScaler does with inf/NaN gradients (the
# forward pass has already updated buffers such as BN's running statistics, exactly as in
# PyTorch); "rollback" skips it and also restores the buffers saved before the forward.
NONFINITE_LOSS_POLICIES = ("stop", "skip", "rollback")
# Ioffe & Szegedy 2015, Sec. 4.1: MNIST, mini-batches of 60 examples.
PAPER_BATCH_SIZE = 60
PAPER_STEPS = 50_000


def pick_device(preference: str | None = None) -> torch.device:
    """``cuda``, then ``mps``, else ``cpu``; ``preference`` or ``BNVIZ_DEVICE`` overrides."""
    choice = preference or os.environ.get("BNVIZ_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def configure_torch_threads() -> None:
    """One intra-op thread: these tiny models run no faster on two (measured, issue 11),
    and on a shared CPU a second thread only steals from other sessions."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@dataclass(frozen=True)
class TrainConfig(Config):
    """How a model is trained and observed.

    ``eval_every``: steps between evaluations on the first ``eval_examples``
    test images. ``train_examples``: a seeded subset of the training set
    (None: all 60,000). ``classes``: train and test only on these digits.
    """

    steps: int = 1000
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0
    eval_every: int = 50
    eval_examples: int = 2000
    train_examples: int | None = None
    classes: tuple[int, ...] | None = None
    on_nonfinite_loss: str = "stop"

    def __post_init__(self):
        check(1 <= self.steps <= 200_000, "steps must be between 1 and 200,000.")
        check(1 <= self.batch_size <= 60_000, "batch size must be between 1 and 60,000.")
        check(0.0 < self.lr <= 100.0 and math.isfinite(self.lr), "learning rate must be in (0, 100].")
        check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}.")
        check(1 <= self.eval_every, "eval_every must be at least 1.")
        check(10 <= self.eval_examples <= 10_000, "eval_examples must be between 10 and 10,000.")
        check(self.train_examples is None or self.train_examples >= 1, "train_examples must be positive.")
        check(self.classes is None or (len(self.classes) >= 1 and all(0 <= c <= 9 for c in self.classes)), "classes are digits 0-9.")
        check(self.on_nonfinite_loss in NONFINITE_LOSS_POLICIES, f"on_nonfinite_loss must be one of {', '.join(NONFINITE_LOSS_POLICIES)}.")


@dataclass
class TrainResult:
    """What a run produced, as plain arrays (the cache, the CLI and charts read this).

    ``eval_step``: steps at which the test subset was evaluated; ``train_loss``
    and ``train_acc`` are averages over the steps since the previous evaluation.
    """

    label: str
    model: ModelConfig
    train: TrainConfig
    eval_step: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    step_loss: np.ndarray  # every step's training loss
    final_test_acc: float
    final_test_loss: float
    diverged: bool
    diverged_step: int | None
    seconds: float
    device: str
    records: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # on_nonfinite_loss="skip"/"rollback"

    def steps_to_accuracy(self, target: float) -> int | None:
        """First evaluated step whose test accuracy reaches ``target`` (None if never)."""
        reached = np.nonzero(self.test_acc >= target)[0]
        return int(self.eval_step[reached[0]]) if len(reached) else None


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    momentum = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=momentum)


@torch.no_grad()
def evaluate(model: Net, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000, capture: bool = False):
    """Eval-mode loss and accuracy; with ``capture``, also each block's nonlinearity input.

    Returns ``(loss, accuracy, activations)``; a non-finite logit counts as wrong.
    """
    was_training = model.training
    model.eval()
    captured: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    handles = []
    if capture:
        for index, block in enumerate(model.blocks):
            handles.append(block.act.register_forward_pre_hook(lambda _m, inputs, i=index: captured[i].append(inputs[0].detach())))
    total_loss, correct = 0.0, 0
    try:
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            total_loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            finite = torch.isfinite(logits).all(dim=1)
            correct += ((logits.argmax(dim=1) == target) & finite).sum().item()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    activations = [torch.cat(parts) for parts in captured] if capture else []
    return total_loss / len(y), correct / len(y), activations


class Run:
    """One model being trained: advance it with :meth:`advance`, read it with :meth:`result`."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, data: MNIST, recorders: Sequence = (), label: str | None = None, use_engine: bool = True):
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.label = label or model_cfg.label
        self.recorders = list(recorders)
        self.device = data.device
        self.train_x, self.train_y = class_subset(data.train_x, data.train_y, train_cfg.classes)
        self.train_x, self.train_y = first_examples(self.train_x, self.train_y, train_cfg.train_examples, seed=train_cfg.seed)
        test_x, test_y = class_subset(data.test_x, data.test_y, train_cfg.classes)
        self.eval_x, self.eval_y = test_x[: train_cfg.eval_examples], test_y[: train_cfg.eval_examples]
        self.test_x, self.test_y = test_x, test_y
        self.model = build_model(model_cfg, train_cfg.seed, self.device)
        self.optimizer = make_optimizer(self.model, train_cfg)
        self.sampler = BatchSampler(len(self.train_y), train_cfg.batch_size, seed=train_cfg.seed + 1, device=self.device)
        self.needs_activations = any(hasattr(r, "on_eval") for r in self.recorders)
        for recorder in self.recorders:
            if hasattr(recorder, "attach"):
                recorder.attach(self.model)
        # the hand-written step where it covers the model exactly (after attach: hooks opt out)
        self.engine = engine_for(self.model, self.sampler.batch_size) if use_engine else None
        # the fused step does the update itself (SGD, momentum, Adam): with no recorder reading gradients
        self._fusable = not any(hasattr(r, "after_backward") for r in self.recorders)
        # and many fused steps run as one call when nothing needs Python between steps
        self._chunkable = self._fusable and not any(hasattr(r, name) for r in self.recorders for name in ("on_batch", "after_step"))
        self.step = 0
        self.step_loss: list[float] = []
        self.step_correct: list[float] = []
        self._pending_correct: list[torch.Tensor] = []  # read in one go at evaluations: no sync per step
        self.eval_step: list[int] = []
        self.train_loss: list[float] = []
        self.train_acc: list[float] = []
        self.test_loss: list[float] = []
        self.test_acc: list[float] = []
        self.diverged_step: int | None = None
        self.skipped_steps: list[int] = []
        self.seconds = 0.0
        self._evaluate()  # step 0: the untrained model

    @property
    def done(self) -> bool:
        return self.step >= self.train_cfg.steps or self.diverged_step is not None

    def _flush_correct(self) -> None:
        if self._pending_correct:
            self.step_correct.extend(torch.cat([c.reshape(-1) for c in self._pending_correct]).tolist())
            self._pending_correct.clear()

    def _evaluate(self) -> None:
        self._flush_correct()
        # recorders that watch evaluation passes hook the model for this one only
        handles = [handle for r in self.recorders if hasattr(r, "watch_evaluation") for handle in r.watch_evaluation(self.model)]
        try:
            loss, accuracy, activations = evaluate(self.model, self.eval_x, self.eval_y, capture=self.needs_activations)
        finally:
            for handle in handles:
                handle.remove()
        since = max(0, len(self.step_loss) - self.train_cfg.eval_every) if self.eval_step else 0
        recent_loss = self.step_loss[since:]
        self.eval_step.append(self.step)
        finite_loss = [v for v in recent_loss if math.isfinite(v)]  # skipped steps (NaN) are left out
        finite_correct = [v for v in self.step_correct[since:] if math.isfinite(v)]
        self.train_loss.append(float(np.mean(finite_loss)) if finite_loss else float("nan"))
        self.train_acc.append(float(np.mean(finite_correct)) if finite_correct else float("nan"))
        self.test_loss.append(loss)
        self.test_acc.append(accuracy)
        for recorder in self.recorders:
            if hasattr(recorder, "on_eval"):
                recorder.on_eval(self.step, self.model, activations)

    def advance(self, num_steps: int) -> None:
        """Train up to ``num_steps`` more steps (fewer if the run ends or diverges)."""
        model, optimizer, engine = self.model, self.optimizer, self.engine
        model.train()
        started = time.perf_counter()
        end = min(self.train_cfg.steps, self.step + num_steps)
        while self.step < end and self.diverged_step is None:
            if self._chunkable and engine is not None and self._advance_fused(min(end, _next_evaluation(self.step, self.train_cfg)) - self.step):
                if self.diverged_step is None and (self.step % self.train_cfg.eval_every == 0 or self.step == self.train_cfg.steps):
                    self._evaluate()
                continue
            indices = self.sampler.next_indices()
            x, y = self.train_x[indices], self.train_y[indices]
            for recorder in self.recorders:
                if hasattr(recorder, "on_batch"):  # probes re-run this batch between steps
                    recorder.on_batch(self.step + 1, x, y)
            policy = self.train_cfg.on_nonfinite_loss
            saved_buffers = [b.detach().clone() for b in model.buffers()] if policy == "rollback" else None
            fused = engine.fused_step(x, y, optimizer) if engine is not None and self._fusable else None
            python_step = engine is not None and engine.has_python_step
            if fused is not None:  # forward, backward and update in one call (none if the loss is not finite)
                loss, correct = fused
            elif python_step:
                loss, logits = engine.forward(x, y)
            else:
                optimizer.zero_grad(set_to_none=True)
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
            loss_value = loss.item()
            self.step += 1
            if not math.isfinite(loss_value) and policy != "stop":
                self.skipped_steps.append(self.step)
                if saved_buffers is not None:
                    with torch.no_grad():
                        for buffer, saved in zip(model.buffers(), saved_buffers):
                            buffer.copy_(saved)
                self.step_loss.append(loss_value)
                self._flush_correct()
                self.step_correct.append(float("nan"))
                if self.step % self.train_cfg.eval_every == 0 or self.step == self.train_cfg.steps:
                    self._evaluate()
                continue
            if not math.isfinite(loss_value):
                # A diverged run is a result: keep what was recorded, mark the step.
                self.diverged_step = self.step
                self.step_loss.append(loss_value)
                self._flush_correct()
                self.step_correct.append(float("nan"))
                break
            if fused is None:
                engine.backward() if python_step else loss.backward()
                for recorder in self.recorders:
                    if hasattr(recorder, "after_backward"):
                        recorder.after_backward(self.step, model)
                if python_step and self.train_cfg.optimizer == "sgd":
                    engine.sgd_step(self.train_cfg.lr)
                else:
                    optimizer.step()
            for recorder in self.recorders:
                if hasattr(recorder, "after_step"):
                    recorder.after_step(self.step, model)
            self.step_loss.append(loss_value)
            self._pending_correct.append(correct if fused is not None else (logits.detach().argmax(dim=1) == y).float().mean())
            if self.step % self.train_cfg.eval_every == 0 or self.step == self.train_cfg.steps:
                self._evaluate()
        self.seconds += time.perf_counter() - started

    def _advance_fused(self, steps: int) -> bool:
        """``steps`` steps in one engine call (it stops early at a loss that is not finite:
        the run diverged there). False, with nothing done, where the engine needs the
        step-by-step path."""
        if not self.engine.fusable(self.optimizer):
            return False
        images, standardise = batch_source(self.train_x)
        rows = torch.stack([self.sampler.next_indices() for _ in range(steps)])
        losses = torch.empty(steps, dtype=next(self.model.parameters()).dtype, device=self.device)
        correct = torch.empty(steps, dtype=torch.float32, device=self.device)
        policy = self.train_cfg.on_nonfinite_loss
        taken = self.engine.fused_steps(images, self.train_y, rows, standardise, self.optimizer, losses, correct, policy)
        loss_values = losses[:taken].tolist()
        first_step = self.step + 1
        self.step += taken
        self.step_loss.extend(loss_values)
        # as the step-by-step path records them: a step with a non-finite loss has no accuracy
        nonfinite = [index for index, value in enumerate(loss_values) if not math.isfinite(value)]
        correct[nonfinite] = float("nan")
        self._pending_correct.append(correct[:taken])
        if policy == "stop" and nonfinite:  # only the last step can be: the call stopped there
            self.diverged_step = self.step
        else:
            self.skipped_steps.extend(first_step + index for index in nonfinite)
        return True

    def result(self, final: bool = True) -> TrainResult:
        """The run so far. ``final`` also evaluates the full test set (once, at the end)."""
        if final:
            final_loss, final_acc, _ = evaluate(self.model, self.test_x, self.test_y)
        else:
            final_loss, final_acc = self.test_loss[-1], self.test_acc[-1]
        records = {}
        if final:
            for recorder in self.recorders:
                if hasattr(recorder, "finish"):
                    records.update(recorder.finish())
        return TrainResult(
            label=self.label,
            model=self.model_cfg,
            train=self.train_cfg,
            eval_step=np.asarray(self.eval_step, dtype=np.int64),
            train_loss=np.asarray(self.train_loss),
            train_acc=np.asarray(self.train_acc),
            test_loss=np.asarray(self.test_loss),
            test_acc=np.asarray(self.test_acc),
            step_loss=np.asarray(self.step_loss, dtype=np.float32),
            final_test_acc=float(final_acc),
            final_test_loss=float(final_loss),
            diverged=self.diverged_step is not None,
            diverged_step=self.diverged_step,
            seconds=self.seconds,
            device=str(self.device),
            records=records,
            skipped_steps=np.asarray(self.skipped_steps, dtype=np.int64),
        )


class RunGroup:
    """Runs that differ only in their seed, trained in lockstep as one stacked model.

    :class:`bnviz.engine.StackedMLPStep` does every run's step in one set of batched
    matmuls; each run keeps its own batches, evaluations, records and divergence (a run
    whose loss turns non-finite stops there, with the weights and BN statistics it had,
    as it would alone). Built by :func:`train_together` for runs that :func:`stack_groups`
    finds compatible.
    """

    def __init__(self, runs: Sequence[Run]):
        self.runs = list(runs)
        self.engine = StackedMLPStep([run.model for run in self.runs])
        self.step = self.runs[0].step
        self._diverged_buffers: dict[int, list[torch.Tensor]] = {}
        self._shared_data = all(run.train_x is self.runs[0].train_x for run in self.runs)

    @property
    def done(self) -> bool:
        return all(run.done for run in self.runs)

    def _batches(self) -> tuple[torch.Tensor, torch.Tensor]:
        indices = [run.sampler.next_indices() for run in self.runs]
        count, batch = len(indices), len(indices[0])
        if self._shared_data:  # one gather (and one uint8 -> float conversion) for all runs
            rows = torch.cat(indices)
            first = self.runs[0]
            return first.train_x[rows].view(count, batch, *first.train_x.shape[1:]), first.train_y[rows].view(count, batch)
        return torch.stack([run.train_x[i] for run, i in zip(self.runs, indices)]), torch.stack([run.train_y[i] for run, i in zip(self.runs, indices)])

    def advance(self, num_steps: int) -> None:
        started = time.perf_counter()
        cfg = self.runs[0].train_cfg
        for run in self.runs:
            run.model.train()
        end = min(cfg.steps, self.step + num_steps)
        while self.step < end and not self.done:
            training = torch.tensor([index not in self._diverged_buffers for index in range(len(self.runs))], device=self.runs[0].device)
            if self._shared_data:  # up to the next evaluation in one call
                losses, correct = self._fused_steps(min(end, _next_evaluation(self.step, cfg)) - self.step, training)
            else:
                x, y = self._batches()
                losses, correct = self.engine.fused_sgd_step(x, y, cfg.lr, training)
                losses, correct = losses.unsqueeze(0), correct.unsqueeze(0)
            self._record(losses, correct)
        with torch.no_grad():  # a diverged run's BN buffers as they were when it stopped
            for index, saved in self._diverged_buffers.items():
                for buffer, value in zip(self.runs[index].model.buffers(), saved):
                    buffer.copy_(value)
        share = (time.perf_counter() - started) / len(self.runs)
        for run in self.runs:
            run.seconds += share


    def _fused_steps(self, steps: int, training: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``steps`` steps of every run in one engine call: (losses, correct), (taken, K)
        each; it stops early at a step where a training run's loss is not finite."""
        first = self.runs[0]
        images, standardise = batch_source(first.train_x)
        sampler_states = [run.sampler.state() for run in self.runs]
        rows = torch.stack([torch.stack([run.sampler.next_indices() for run in self.runs]) for _ in range(steps)])
        losses = torch.empty(steps, len(self.runs), dtype=next(first.model.parameters()).dtype, device=first.device)
        correct = torch.empty(steps, len(self.runs), dtype=torch.float32, device=first.device)
        taken = self.engine.fused_sgd_steps(images, first.train_y, rows, standardise, first.train_cfg.lr, training, losses, correct)
        if taken < steps:  # a run diverged: the others go on from the first batch not used
            for run, state in zip(self.runs, sampler_states):
                run.sampler.restore(state)
                for _ in range(taken):
                    run.sampler.next_indices()
        return losses[:taken], correct[:taken]

    def _record(self, losses: torch.Tensor, correct: torch.Tensor) -> None:
        """Each run's share of ``losses``/``correct`` (steps, K) as it would record them alone.
        Only the last step can hold a newly diverged run: the engine stops there."""
        cfg = self.runs[0].train_cfg
        taken = losses.shape[0]
        loss_columns = losses.t().tolist()
        self.step += taken
        for index, run in enumerate(self.runs):
            if index in self._diverged_buffers:
                continue
            run.step += taken
            run.step_loss.extend(loss_columns[index])
            if math.isfinite(loss_columns[index][-1]):
                run._pending_correct.append(correct[:, index])
                if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                    run._evaluate()
            else:  # it stops here, with the weights and BN statistics it has now
                run._pending_correct.append(correct[: taken - 1, index])
                run._flush_correct()
                run.step_correct.append(float("nan"))
                run.diverged_step = run.step
                self._diverged_buffers[index] = [b.detach().clone() for b in run.model.buffers()]


def _next_evaluation(step: int, cfg: TrainConfig) -> int:
    """The first step after ``step`` at which a run evaluates: every ``eval_every`` and the last."""
    return min(cfg.steps, (step // cfg.eval_every + 1) * cfg.eval_every)


def _stackable(run: Run):
    """The key under which ``run`` can share a :class:`RunGroup` (None: it trains alone)."""
    cfg = run.train_cfg
    if run.engine is None or cfg.optimizer != "sgd" or cfg.on_nonfinite_loss != "stop" or run.step != 0:
        return None
    if any(hasattr(r, name) for r in run.recorders for name in ("on_batch", "after_backward", "after_step")):
        return None
    model_key = stack_key(run.model, run.sampler.batch_size)
    if model_key is None:
        return None
    return (model_key, cfg.replace(seed=0), run.train_x.dtype)  # each run still reads its own data


def stack_groups(runs: Sequence[Run]) -> list[Run | RunGroup]:
    """``runs`` as units of work: runs of one configuration but for the seed become one
    :class:`RunGroup`; the rest stay single runs. Order follows ``runs``."""
    by_key: dict = {}
    for run in runs:
        key = _stackable(run)
        by_key.setdefault(key if key is not None else id(run), []).append(run)
    units, seen = [], set()
    for run in runs:
        key = _stackable(run)
        key = key if key is not None else id(run)
        if key in seen:
            continue
        seen.add(key)
        members = by_key[key]
        units.append(RunGroup(members) if len(members) > 1 else members[0])
    return units


# progress(fraction_done, message, partial_results) -> None
ProgressFn = Callable[[float, str, list[TrainResult]], None]


def usable_cores() -> int:
    """The CPU affinity, capped by a cgroup CPU quota (containers, hosted tiers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


# A job's share of the cores (bnviz.jobs runs several jobs at once): set per thread, read by
# training_threads on the thread that calls train_together.
_THREAD_BUDGET = threading.local()


@contextmanager
def thread_budget(threads: int):
    """Within the block, :func:`training_threads` on this thread uses at most ``threads``."""
    previous = getattr(_THREAD_BUDGET, "threads", None)
    _THREAD_BUDGET.threads = max(1, int(threads))
    try:
        yield
    finally:
        _THREAD_BUDGET.threads = previous


def training_threads(num_runs: int) -> int:
    """How many runs train at once: one per usable core (``BNVIZ_TRAIN_THREADS`` overrides),
    at most the :func:`thread_budget` of the calling thread.

    Each run's ops use one intra-op thread (:func:`configure_torch_threads`) and
    release the GIL, so independent runs on separate Python threads use separate
    cores (measured in ``benchmarks/bench_training.py``).
    """
    override = os.environ.get("BNVIZ_TRAIN_THREADS")
    if override:
        return max(1, min(num_runs, int(override)))
    budget = getattr(_THREAD_BUDGET, "threads", None) or usable_cores()
    return max(1, min(num_runs, usable_cores(), budget))


def train_together(runs: Sequence[Run], progress: ProgressFn | None = None, chunk: int | None = None, threads: int | None = None, stack: bool = True) -> list[TrainResult]:
    """Advance every run a chunk of steps at a time, reporting progress after each chunk.

    Interleaving lets a page draw all curves growing side by side; results are
    the same as training each run alone, since runs share no state. Two speed-ups
    change no result beyond float rounding (``tests/test_engine.py``): runs that
    differ only in their seed train as one stacked model (``stack``, see
    :class:`RunGroup`), and units of work advance on worker threads, one chunk
    per task, round robin (``threads``, default :func:`training_threads`).
    Progress is reported from the calling thread (Streamlit draws only from the
    script's thread), from snapshots taken between a unit's chunks.
    """
    runs = list(runs)
    units = stack_groups(runs) if stack else list(runs)
    members = [unit.runs if isinstance(unit, RunGroup) else [unit] for unit in units]
    total = sum(run.train_cfg.steps for run in runs)
    threads = training_threads(len(units)) if threads is None else max(1, min(threads, len(units)))
    snapshots = {id(run): run.result(final=False) for run in runs} if progress is not None else {}

    def unit_chunk(unit) -> int:
        return chunk or (unit.runs[0] if isinstance(unit, RunGroup) else unit).train_cfg.eval_every

    def snapshot(index: int) -> None:
        if progress is not None:
            for run in members[index]:  # the unit is idle now: a consistent copy
                snapshots[id(run)] = run.result(final=False)

    def report() -> None:
        if progress is not None:
            current = [snapshots[id(run)] for run in runs]
            steps = [len(snap.step_loss) for snap in current]
            done = sum(run.train_cfg.steps if snap.diverged else step for run, snap, step in zip(runs, current, steps))
            progress(done / total, f"step {max(steps):,} of {max(r.train_cfg.steps for r in runs):,}", current)

    if threads == 1:
        while not all(unit.done for unit in units):
            for index, unit in enumerate(units):
                if not unit.done:
                    unit.advance(unit_chunk(unit))
                    snapshot(index)
            report()
        return [run.result() for run in runs]

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bnviz-train") as pool:
        in_flight = {pool.submit(unit.advance, unit_chunk(unit)): index for index, unit in enumerate(units) if not unit.done}
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                index = in_flight.pop(future)
                future.result()  # a worker's exception surfaces here
                snapshot(index)
                if not units[index].done:
                    in_flight[pool.submit(units[index].advance, unit_chunk(units[index]))] = index
            report()
        # final evaluations on the full test set, in parallel too
        return list(pool.map(lambda run: run.result(), runs))


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, data: MNIST, recorders: Sequence = (), progress: ProgressFn | None = None, label: str | None = None) -> TrainResult:
    """Train one model; see :class:`Run`."""
    return train_together([Run(model_cfg, train_cfg, data, recorders, label)], progress)[0]
