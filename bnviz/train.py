"""The one trainer every experiment uses.

A run is ``(ModelConfig, TrainConfig)`` -> :class:`TrainResult`. The trainer
draws seeded batches by index from tensors already on the device, records the
loss every step, evaluates on a fixed test subset every ``eval_every`` steps
(eval mode, no stalls on the full set), and the full test set once at the end.
A NaN or inf loss stops the run and marks it ``diverged``: a result, never an
exception for the page (``TrainConfig.on_nonfinite_loss`` can skip such steps instead).

One training step (:meth:`Run._step`) is the loop of any PyTorch tutorial: forward,
cross-entropy, backward, ``optimizer.step()``, with the recorders' hooks in between.

Recorders observe a run without changing it. They may implement any of::

    attach(model)                              once, before training
    watch_training(model) -> [hook handles]    forward hooks on the model while it trains
    on_batch(step, x, y)                       the batch step ``step`` is about to train on
    after_backward(step, model)                gradients present, weights not yet updated
    after_step(step, model)                    after the optimiser step
    watch_evaluation(model) -> [hook handles]  hooks for one evaluation pass, removed after it
    on_eval(step, model, activations)          activations[i]: input of block i's nonlinearity
    after_eval(step, model)                    a probe: its own passes through the model, after the evaluation
    finish() -> dict[str, np.ndarray]          stored in ``TrainResult.records``

The rule for speed: a recorder with any of the per-step hooks (:data:`PER_STEP_HOOKS`)
makes every step of its run a plain Python step. Without one, nothing needs Python between
two evaluations, and :mod:`bnviz.engine` (the optional accelerator) may take those steps in
one call, with the same numbers; it declines what it does not cover. Runs that differ only in their seed can train as one model batched over the seeds
(:class:`RunGroup`, ``torch.func``).

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

from . import engine, optim
from .config import Config, check
from .data import MNIST, BatchSampler, class_subset, training_subset
from .models import ModelConfig, Net, build_model
from .stacking import StackedModels, can_stack

OPTIMIZERS = ("sgd", "momentum", "adam")
# What a non-finite training loss does: "stop" marks the run diverged; "skip" skips that
# step's update and goes on, as torch.amp.GradScaler does with inf/NaN gradients (the
# forward pass has already updated buffers such as BN's running statistics, exactly as in
# PyTorch); "rollback" skips it and also restores the buffers saved before the forward.
NONFINITE_LOSS_POLICIES = ("stop", "skip", "rollback")
# Ioffe & Szegedy 2015, Sec. 4.1: MNIST, mini-batches of 60 examples.
PAPER_BATCH_SIZE = 60
PAPER_STEPS = 50_000
# Recorder hooks that need Python at every training step (see the module's docstring).
PER_STEP_HOOKS = ("watch_training", "on_batch", "after_backward", "after_step")
# The accelerator trains on batches gathered for a chunk of steps at once: at most this many
# examples per chunk. 2,048 MNIST images are 6.4 MB in float32 (8,192 held 25 MB per thread,
# ~60 MiB of a 2-core server's peak, for no measurable speed: a chunk is still 34 steps of
# the paper's batch of 60). Each training thread gathers its chunks into one buffer it keeps
# (_chunk_images): the server's malloc hands every block of 4 MiB or more to a mapping of its
# own (bnviz.malloc.MMAP_THRESHOLD_BYTES), so a new 6.4 MB tensor per chunk was page-faulted in
# each time: 46 faults per step, a gather of 5-6 ms instead of 0.2, two training threads
# waiting on the process's page-table lock (the paper page's jobs, as the server runs them,
# 19.1-19.7 s; see the README's Training speed).
CHUNK_EXAMPLES = 2048
_CHUNK_BUFFERS = threading.local()


def _chunk_images(images, rows: torch.Tensor) -> torch.Tensor:
    """``images[rows]`` (a 1-d index), written into this thread's chunk buffer: the same
    numbers as indexing, in memory reused from chunk to chunk. Valid until the thread's next
    chunk; a fresh tensor if it does not fit."""
    shape, dtype, device = tuple(images.shape[1:]), images.dtype, images.device
    buffer = getattr(_CHUNK_BUFFERS, "images", None)
    if buffer is None or tuple(buffer.shape[1:]) != shape or buffer.dtype != dtype or buffer.device != device:
        buffer = _CHUNK_BUFFERS.images = torch.empty((CHUNK_EXAMPLES, *shape), dtype=dtype, device=device)
    if len(rows) > len(buffer):
        return images[rows]
    out = buffer[: len(rows)]
    if isinstance(images, torch.Tensor):
        return torch.index_select(images, 0, rows, out=out)
    return images.take_into(rows, out)


def _evaluation_chunk(images, start: int, stop: int) -> torch.Tensor:
    """``images[start:stop]``: a view of a tensor, or a test set's shared first images; other
    uint8-backed images standardised into this thread's chunk buffer (the full test set's
    2,000-image chunks were 6.3 MB each, a mapping apiece under the server's malloc)."""
    if isinstance(images, torch.Tensor) or (start == 0 and images.shares_head(stop)):
        return images[start:stop]
    return _chunk_images(images, torch.arange(start, stop, device=images.device))


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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> optim.Optimizer:
    """torch.optim's SGD or Adam, bit for bit, without the compiler it imports (:mod:`bnviz.optim`)."""
    if cfg.optimizer == "adam":
        return optim.Adam(model.parameters(), lr=cfg.lr)
    momentum = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    return optim.SGD(model.parameters(), lr=cfg.lr, momentum=momentum)


CNN_EVAL_CHUNK = 250  # test images per forward pass of the CNN: 8 x 28 x 28 float32 per image and layer, ~6 MB a tensor


@torch.no_grad()
def evaluate(model: Net, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000, capture: bool = False):
    """Eval-mode loss and accuracy; with ``capture``, also each block's nonlinearity input.

    Returns ``(loss, accuracy, activations)``; a non-finite logit counts as wrong.
    """
    if model.cfg.arch == "cnn":  # a CNN's activations are ~80x an MLP's per image: 2,000 at once held ~0.2 GB per model
        batch_size = min(batch_size, CNN_EVAL_CHUNK)
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
            logits = model(_evaluation_chunk(x, start, min(start + batch_size, len(y))))
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
    """One model being trained: advance it with :meth:`advance`, read it with :meth:`result`.

    ``accelerate``: let :mod:`bnviz.engine` take the steps it covers (same numbers, faster);
    False trains every step on the plain path.
    """

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, data: MNIST, recorders: Sequence = (), label: str | None = None, accelerate: bool = True):
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.label = label or model_cfg.label
        self.recorders = list(recorders)
        self.device = data.device
        self.train_x, self.train_y = class_subset(data.train_x, data.train_y, train_cfg.classes)
        self.train_x, self.train_y = training_subset(self.train_x, self.train_y, train_cfg.train_examples, seed=train_cfg.seed)
        test_x, test_y = class_subset(data.test_x, data.test_y, train_cfg.classes)
        self.eval_x, self.eval_y = test_x[: train_cfg.eval_examples], test_y[: train_cfg.eval_examples]
        self.test_x, self.test_y = test_x, test_y
        self.model = build_model(model_cfg, train_cfg.seed, self.device)
        self.optimizer = make_optimizer(self.model, train_cfg)
        self.sampler = BatchSampler(len(self.train_y), train_cfg.batch_size, seed=train_cfg.seed + 1, device=self.device)
        # The evaluation keeps every block's activations only for a recorder that reads them (on_eval):
        # the CNN's for 2,000 test images are ~0.1 GB a run, and a probe with passes of its own
        # (after_eval) has no use for them (two runs evaluating at once took the BN vs LN page's CNN
        # preset to +200 MiB).
        self.needs_activations = any(hasattr(r, "on_eval") for r in self.recorders)
        for recorder in self.recorders:
            if hasattr(recorder, "attach"):
                recorder.attach(self.model)
        self.training_hooks = [handle for r in self.recorders if hasattr(r, "watch_training") for handle in r.watch_training(self.model)]
        self.steps_in_python = any(hasattr(r, hook) for r in self.recorders for hook in PER_STEP_HOOKS)
        # rollback restores the buffers saved before each step: only the plain step saves them
        self.accelerate = accelerate and train_cfg.on_nonfinite_loss != "rollback"
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

    def advance(self, num_steps: int) -> None:
        """Train up to ``num_steps`` more steps (fewer if the run ends or diverges),
        evaluating every ``eval_every`` steps and at the last."""
        self.model.train()
        started = time.perf_counter()
        end = min(self.train_cfg.steps, self.step + num_steps)
        while self.step < end and self.diverged_step is None:
            if self._accelerated():
                self._accelerated_steps(min(end, _next_evaluation(self.step, self.train_cfg)) - self.step)
            else:
                self._step()
            if self.diverged_step is None and _evaluation_due(self.step, self.train_cfg):
                self._evaluate()
        self.seconds += time.perf_counter() - started

    def _step(self) -> None:
        """One training step, the plain way, with every recorder hook in its place."""
        x, y = self._batch()
        for recorder in self.recorders:
            if hasattr(recorder, "on_batch"):  # probes re-run this batch between steps
                recorder.on_batch(self.step + 1, x, y)
        rollback = self.train_cfg.on_nonfinite_loss == "rollback"
        buffers_before = [b.detach().clone() for b in self.model.buffers()] if rollback else None
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        correct = (logits.detach().argmax(dim=1) == y).float().mean().reshape(1)
        if not math.isfinite(loss.item()):  # no update: the divergence policy decides (_record)
            self._record(loss.detach().reshape(1), correct, buffers_before)
            return
        loss.backward()
        for recorder in self.recorders:
            if hasattr(recorder, "after_backward"):
                recorder.after_backward(self.step + 1, self.model)
        self.optimizer.step()
        self._record(loss.detach().reshape(1), correct)
        for recorder in self.recorders:
            if hasattr(recorder, "after_step"):
                recorder.after_step(self.step, self.model)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.sampler.next_indices()
        return self.train_x[indices], self.train_y[indices]

    def _accelerated(self) -> bool:
        return self.accelerate and not self.steps_in_python and engine.can_run(self.model, self.optimizer, self.sampler.batch_size)

    def _accelerated_steps(self, steps: int) -> None:
        """Up to ``steps`` steps in one accelerator call, on batches gathered at once (it stops
        early after a loss that is not finite)."""
        steps = max(1, min(steps, CHUNK_EXAMPLES // self.sampler.batch_size))
        sampler_state = self.sampler.state()
        rows = torch.cat([self.sampler.next_indices() for _ in range(steps)])
        x, y = _chunk_images(self.train_x, rows), self.train_y[rows]
        losses, correct = engine.steps(self.model, self.optimizer, x.view(steps, -1, *x.shape[1:]), y.view(steps, -1))
        if len(losses) < steps:  # it stopped early: the batches it did not use are the next steps'
            self.sampler.restore(sampler_state)
            for _ in range(len(losses)):
                self.sampler.next_indices()
        self._record(losses, correct)

    def _record(self, losses: torch.Tensor, correct: torch.Tensor, buffers_before: list[torch.Tensor] | None = None) -> None:
        """The steps just taken: their losses and shares classified right, one per step.
        Only the last can have a loss that is not finite (both paths stop there, with the
        weights not updated), and the divergence policy is applied to it here:
        ``"stop"`` ends the run; ``"skip"`` goes on; ``"rollback"`` also puts back
        ``buffers_before`` (BN's running statistics before that step's forward)."""
        loss_values = losses.tolist()
        self.step += len(loss_values)
        self.step_loss.extend(loss_values)
        if math.isfinite(loss_values[-1]):
            self._pending_correct.append(correct)
            return
        self._pending_correct.append(correct[:-1])
        self._flush_correct()
        self.step_correct.append(float("nan"))  # a step with a non-finite loss has no accuracy
        if self.train_cfg.on_nonfinite_loss == "stop":  # a diverged run is a result: keep what was recorded
            self.diverged_step = self.step
            return
        self.skipped_steps.append(self.step)
        if buffers_before is not None:
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), buffers_before):
                    buffer.copy_(saved)

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
        self.eval_step.append(self.step)
        finite_loss = [v for v in self.step_loss[since:] if math.isfinite(v)]  # skipped steps (NaN) are left out
        finite_correct = [v for v in self.step_correct[since:] if math.isfinite(v)]
        self.train_loss.append(float(np.mean(finite_loss)) if finite_loss else float("nan"))
        self.train_acc.append(float(np.mean(finite_correct)) if finite_correct else float("nan"))
        self.test_loss.append(loss)
        self.test_acc.append(accuracy)
        for recorder in self.recorders:
            if hasattr(recorder, "on_eval"):
                recorder.on_eval(self.step, self.model, activations)
            if hasattr(recorder, "after_eval"):
                recorder.after_eval(self.step, self.model)

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
        with np.errstate(over="ignore"):  # a diverging loss past float32's range is stored as inf, which it is
            step_loss = np.asarray(self.step_loss, dtype=np.float32)
        return TrainResult(
            label=self.label,
            model=self.model_cfg,
            train=self.train_cfg,
            eval_step=np.asarray(self.eval_step, dtype=np.int64),
            train_loss=np.asarray(self.train_loss),
            train_acc=np.asarray(self.train_acc),
            test_loss=np.asarray(self.test_loss),
            test_acc=np.asarray(self.test_acc),
            step_loss=step_loss,
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
    """Runs that differ only in their seed, trained in lockstep as one model batched over
    the seeds (:class:`bnviz.stacking.StackedModels`).

    Each run keeps its own batches, evaluations, records and divergence policy (a run whose
    loss turns non-finite stops there, with the weights and BN statistics it had, as it
    would alone). Built by :func:`train_together` for runs that :func:`stack_groups` finds
    compatible.
    """

    def __init__(self, runs: Sequence[Run]):
        self.runs = list(runs)
        self.stack = StackedModels([run.model for run in self.runs], self.runs[0].train_cfg.lr)
        self.step = self.runs[0].step
        self._shared_data = all(run.train_x is self.runs[0].train_x for run in self.runs)

    @property
    def done(self) -> bool:
        return all(run.done for run in self.runs)

    def _batches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every run's next batch: (K, B, ...) images and (K, B) labels."""
        indices = [run.sampler.next_indices() for run in self.runs]
        if self._shared_data:  # one gather (and one uint8 -> float conversion) for all runs
            first, rows = self.runs[0], torch.cat(indices)
            x, y = first.train_x[rows], first.train_y[rows]
            return x.view(len(indices), -1, *x.shape[1:]), y.view(len(indices), -1)
        return torch.stack([run.train_x[i] for run, i in zip(self.runs, indices)]), torch.stack([run.train_y[i] for run, i in zip(self.runs, indices)])

    def advance(self, num_steps: int) -> None:
        started = time.perf_counter()
        cfg = self.runs[0].train_cfg
        end = min(cfg.steps, self.step + num_steps)
        while self.step < end and not self.done:
            training = [not run.done for run in self.runs]
            x, y = self._batches()
            losses, correct = self.stack.step(x, y, torch.tensor(training, device=x.device))
            self.step += 1
            for index, run in enumerate(self.runs):
                if not training[index]:
                    continue
                run._record(losses[index : index + 1], correct[index : index + 1])
                if run.diverged_step is not None:  # it stops here, with the weights and BN statistics it has now
                    self.stack.write_back(index)
            if _evaluation_due(self.step, cfg):
                self._write_back()
                for run in self.runs:
                    if run.diverged_step is None:
                        run._evaluate()
        self._write_back()  # each run's own model is the stack's slice again between calls
        share = (time.perf_counter() - started) / len(self.runs)
        for run in self.runs:
            run.seconds += share


    def _write_back(self) -> None:
        for index, run in enumerate(self.runs):
            if run.diverged_step is None:
                self.stack.write_back(index)


def _next_evaluation(step: int, cfg: TrainConfig) -> int:
    """The first step after ``step`` at which a run evaluates: every ``eval_every`` and the last."""
    return min(cfg.steps, (step // cfg.eval_every + 1) * cfg.eval_every)


def _evaluation_due(step: int, cfg: TrainConfig) -> bool:
    return step % cfg.eval_every == 0 or step == cfg.steps


def _stackable(run: Run):
    """The key under which ``run`` can share a :class:`RunGroup` (None: it trains alone)."""
    cfg = run.train_cfg
    if cfg.optimizer != "sgd" or cfg.on_nonfinite_loss == "rollback" or run.step != 0 or run.steps_in_python or not can_stack(run.model):
        return None
    return (run.model_cfg, cfg.replace(seed=0), run.train_x.dtype, str(run.device))  # each run still reads its own data


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


def stacking_pays(runs: Sequence[Run]) -> bool:
    """Whether seeds trained as one batched model (:class:`RunGroup`) should be faster than
    separate runs: on a GPU, where one batched kernel costs about what one small one does.
    Not on the CPU: there the accelerator's separate runs are faster (measured in
    ``benchmarks/bench_training.py``, part 3)."""
    return bool(runs) and all(run.device.type == "cuda" for run in runs)


def train_together(runs: Sequence[Run], progress: ProgressFn | None = None, chunk: int | None = None, threads: int | None = None, stack: bool | None = None) -> list[TrainResult]:
    """Advance every run a chunk of steps at a time, reporting progress after each chunk.

    Interleaving lets a page draw all curves growing side by side; results are
    the same as training each run alone, since runs share no state. Two speed-ups
    change no result beyond float rounding (``tests/test_engine.py``): runs that
    differ only in their seed train as one stacked model (``stack``, see
    :class:`RunGroup`; None: where :func:`stacking_pays`), and units of work advance
    on worker threads, one chunk per task, round robin (``threads``, default
    :func:`training_threads`).
    Progress is reported from the calling thread (Streamlit draws only from the
    script's thread), from snapshots taken between a unit's chunks.
    """
    runs = list(runs)
    stack = stacking_pays(runs) if stack is None else stack
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
