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
    on_eval(step, model, activations)          activations[i]: input of block i's nonlinearity
    finish() -> dict[str, np.ndarray]          stored in ``TrainResult.records``

Several runs can advance together (:func:`train_together`), so a page can
draw all their curves as they grow.
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .config import Config, check
from .data import MNIST, BatchSampler, class_subset, first_examples
from .engine import engine_for
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
            self.step_correct.extend(torch.stack(self._pending_correct).tolist())
            self._pending_correct.clear()

    def _evaluate(self) -> None:
        self._flush_correct()
        loss, accuracy, activations = evaluate(self.model, self.eval_x, self.eval_y, capture=self.needs_activations)
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
            indices = self.sampler.next_indices()
            x, y = self.train_x[indices], self.train_y[indices]
            for recorder in self.recorders:
                if hasattr(recorder, "on_batch"):  # probes re-run this batch between steps
                    recorder.on_batch(self.step + 1, x, y)
            policy = self.train_cfg.on_nonfinite_loss
            saved_buffers = [b.detach().clone() for b in model.buffers()] if policy == "rollback" else None
            if engine is not None:
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
            engine.backward() if engine is not None else loss.backward()
            for recorder in self.recorders:
                if hasattr(recorder, "after_backward"):
                    recorder.after_backward(self.step, model)
            if engine is not None and self.train_cfg.optimizer == "sgd":
                engine.sgd_step(self.train_cfg.lr)
            else:
                optimizer.step()
            for recorder in self.recorders:
                if hasattr(recorder, "after_step"):
                    recorder.after_step(self.step, model)
            self.step_loss.append(loss_value)
            self._pending_correct.append((logits.detach().argmax(dim=1) == y).float().mean())
            if self.step % self.train_cfg.eval_every == 0 or self.step == self.train_cfg.steps:
                self._evaluate()
        self.seconds += time.perf_counter() - started

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


# progress(fraction_done, message, partial_results) -> None
ProgressFn = Callable[[float, str, list[TrainResult]], None]


def training_threads(num_runs: int) -> int:
    """How many runs train at once: one per usable core (``BNVIZ_TRAIN_THREADS`` overrides).

    Each run's ops use one intra-op thread (:func:`configure_torch_threads`) and
    release the GIL, so independent runs on separate Python threads use separate
    cores (measured in ``benchmarks/bench_training.py``). Usable cores are the CPU
    affinity, capped by a cgroup CPU quota (containers, hosted tiers).
    """
    override = os.environ.get("BNVIZ_TRAIN_THREADS")
    if override:
        return max(1, min(num_runs, int(override)))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(num_runs, cores))


def train_together(runs: Sequence[Run], progress: ProgressFn | None = None, chunk: int | None = None, threads: int | None = None) -> list[TrainResult]:
    """Advance every run a chunk of steps at a time, reporting progress after each chunk.

    Interleaving lets a page draw all curves growing side by side; results are
    the same as training each run alone, since runs share no state. With more
    than one thread (default: :func:`training_threads`), runs advance on worker
    threads, one chunk per task, round robin; progress is still reported from the
    calling thread (Streamlit draws only from the script's thread), from snapshots
    taken between a run's chunks.
    """
    runs = list(runs)
    total = sum(run.train_cfg.steps for run in runs)
    threads = training_threads(len(runs)) if threads is None else max(1, min(threads, len(runs)))

    def report(snapshots: list[TrainResult]) -> None:
        if progress is not None:
            steps = [len(snap.step_loss) for snap in snapshots]
            done = sum(run.train_cfg.steps if snap.diverged else step for run, snap, step in zip(runs, snapshots, steps))
            progress(done / total, f"step {max(steps):,} of {max(r.train_cfg.steps for r in runs):,}", snapshots)

    if threads == 1:
        while not all(run.done for run in runs):
            for run in runs:
                if not run.done:
                    run.advance(chunk or run.train_cfg.eval_every)
            if progress is not None:
                report([r.result(final=False) for r in runs])
        return [run.result() for run in runs]

    snapshots = [run.result(final=False) for run in runs]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bnviz-train") as pool:
        in_flight = {pool.submit(run.advance, chunk or run.train_cfg.eval_every): index for index, run in enumerate(runs) if not run.done}
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                index = in_flight.pop(future)
                future.result()  # a worker's exception surfaces here
                run = runs[index]
                snapshots[index] = run.result(final=False)  # the run is idle now: a consistent copy
                if not run.done:
                    in_flight[pool.submit(run.advance, chunk or run.train_cfg.eval_every)] = index
            report(snapshots)
        # final evaluations on the full test set, in parallel too
        return list(pool.map(lambda run: run.result(), runs))


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, data: MNIST, recorders: Sequence = (), progress: ProgressFn | None = None, label: str | None = None) -> TrainResult:
    """Train one model; see :class:`Run`."""
    return train_together([Run(model_cfg, train_cfg, data, recorders, label)], progress)[0]
