"""Play / pause / step through training: one run of the trainer advanced on demand,
recording what every BN layer did at each step (TensorFlow Playground's controls, for BN).

:class:`TrainingStepper` owns a :class:`bnviz.train.Run` (the one trainer, its
plain Python step) and advances it one batch (Step) or a few (each tick of Play).
At every training step it records, for :data:`UNITS_WATCHED` units (from ``first_unit``)
of each BN layer (``BatchNorm1d``, PyTorch's conventions):

* ``batch_mean = mean_i x_i`` and ``batch_var = mean_i (x_i - batch_mean)^2``
  over this batch (eq. (1)-(2) of the paper, biased: what BN divides by in
  training mode), from the layer's input;
* ``running_mean``, ``running_var`` after the step's update,
  ``r <- (1 - momentum) r + momentum * s`` with ``s`` the batch mean and the
  *unbiased* batch variance (``m / (m - 1)`` times the biased one);
* ``gamma`` (``weight``) and ``beta`` (``bias``) after the optimiser step.

Shapes: each of these arrays is ``(layers, units)``. ``loss`` is the step's
training loss.

:class:`StepperRegistry` keeps the steppers of the sessions (a paused one too)
and reclaims them by the policy of :mod:`bnviz.jobs`: a stepper nobody touched
for :data:`STEPPER_KEEP_SECONDS` is dropped, and at most :data:`MAX_STEPPERS`
are kept (the least recently touched goes first).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import BnvizError
from .jobs import JobState
from .models import ModelConfig
from .train import Run, TrainConfig

UNITS_WATCHED = 3
STEPPER_KEEP_SECONDS = 600.0
MAX_STEPPERS = 16


@dataclass(frozen=True)
class StepRecord:
    """One training step of every BN layer (arrays ``(layers, units)``)."""

    step: int
    loss: float
    batch_mean: np.ndarray
    batch_var: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray


class BatchStatsRecorder:
    """A trainer recorder (:mod:`bnviz.train`): the input statistics of each BN layer on the
    training batch (a forward pre-hook, training mode only), then its running estimates and
    γ, β after the step."""

    def __init__(self, units: int = UNITS_WATCHED, first_unit: int = 0):
        self.units, self.first_unit = units, first_unit
        self.records: list[StepRecord] = []
        self._batch: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._norms: list[torch.nn.Module] = []

    def attach(self, model) -> None:
        self._norms = [norm for norm in model.norm_layers() if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm)]
        if not self._norms:
            raise BnvizError("Stepping through BN needs a model with BN layers.")
        if self.first_unit + self.units > self._norms[0].num_features:
            raise BnvizError(f"The BN layers have {self._norms[0].num_features} units: choose a first unit below {self._norms[0].num_features - self.units + 1}.")
        for index, norm in enumerate(self._norms):
            norm.register_forward_pre_hook(self._hook(index))

    def _hook(self, index: int):
        def hook(module, inputs):
            if module.training:
                x = inputs[0].detach()[:, self.first_unit : self.first_unit + self.units].double()
                self._batch[index] = (x.mean(0).cpu().numpy(), x.var(0, unbiased=False).cpu().numpy())

        return hook

    def after_step(self, step: int, model) -> None:
        def stacked(read) -> np.ndarray:
            watched = slice(self.first_unit, self.first_unit + self.units)
            return np.stack([read(norm)[watched].detach().double().cpu().numpy() for norm in self._norms])

        self.records.append(
            StepRecord(
                step=step,
                loss=float("nan"),  # filled in by the stepper from the run's own record
                batch_mean=np.stack([self._batch[i][0] for i in range(len(self._norms))]),
                batch_var=np.stack([self._batch[i][1] for i in range(len(self._norms))]),
                running_mean=stacked(lambda norm: norm.running_mean),
                running_var=stacked(lambda norm: norm.running_var),
                gamma=stacked(lambda norm: norm.weight),
                beta=stacked(lambda norm: norm.bias),
            )
        )


class TrainingStepper:
    """A run that advances only when asked: :meth:`step` (one batch or ``n``), :meth:`reset`.

    ``playing`` is the page's Play/Pause state; :meth:`status` says ``paused``, ``running``
    (playing) or ``done``. The model and its batches are the trainer's own for
    ``(model_cfg, train_cfg)`` (same seed, same batch order), on its plain Python step.
    """

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, data, units: int = UNITS_WATCHED, first_unit: int = 0):
        if model_cfg.norm != "batch":
            raise BnvizError("Stepping through BN needs a model with norm='batch'.")
        self.model_cfg, self.train_cfg, self.mnist = model_cfg, train_cfg, data
        self.units, self.first_unit = units, first_unit
        self.playing = False
        self._lock = threading.Lock()  # a session's fragment reruns may overlap a click
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.recorder = BatchStatsRecorder(self.units, self.first_unit)
            self.run = Run(self.model_cfg, self.train_cfg, self.mnist, recorders=[self.recorder], accelerate=False)
            self.playing = False

    def step(self, n: int = 1) -> list[StepRecord]:
        """Train ``n`` more batches (fewer at the end); the records of those steps."""
        with self._lock:
            before = len(self.recorder.records)
            self.run.advance(n)
            new = self.recorder.records[before:]
            for offset, record in enumerate(new):  # the run's own loss of that step (step k: index k - 1)
                self.recorder.records[before + offset] = StepRecord(**{**record.__dict__, "loss": self.run.step_loss[record.step - 1]})
            if self.done:
                self.playing = False
            return self.recorder.records[before:]

    @property
    def records(self) -> list[StepRecord]:
        return self.recorder.records

    @property
    def done(self) -> bool:
        return self.run.done

    @property
    def layers(self) -> int:
        return len(self.recorder._norms)

    def status(self) -> JobState:
        if self.done:
            return JobState.DONE
        return JobState.RUNNING if self.playing else JobState.PAUSED


class StepperRegistry:
    """The process's steppers by key (e.g. session and page); reclaimed as the module says."""

    def __init__(self, keep_seconds: float = STEPPER_KEEP_SECONDS, max_steppers: int = MAX_STEPPERS, clock: Callable[[], float] = time.monotonic):
        self.keep_seconds, self.max_steppers, self.clock = keep_seconds, max_steppers, clock
        self._lock = threading.Lock()
        self._steppers: OrderedDict[str, tuple[TrainingStepper, float]] = OrderedDict()

    def get(self, key: str, make: Callable[[], TrainingStepper]) -> TrainingStepper:
        with self._lock:
            now = self.clock()
            for old_key, (_, touched) in list(self._steppers.items()):
                if now - touched > self.keep_seconds:
                    del self._steppers[old_key]
            if key in self._steppers:
                stepper = self._steppers.pop(key)[0]
            else:
                stepper = make()
            self._steppers[key] = (stepper, now)
            while len(self._steppers) > self.max_steppers:
                self._steppers.popitem(last=False)
            return stepper

    def __len__(self) -> int:
        return len(self._steppers)
