"""One batch-size sweep, shared by the norm comparison and the small-batch page.

The same models (one per norm) are trained for the same number of Adam steps at
every batch size, for seeds 0 .. ``seeds``-1, and scored on the full test set in
eval mode; a probe recorder per run looks at the trained model (train vs eval
mode). Adam at lr 1e-3 normalises its own step size, so one learning rate serves
every batch size; a larger batch sees more examples in the same steps (the no-norm
model shows what batch size alone does).

``bnviz.experiments.norm_comparison`` (MLP or CNN; BN, LN, RMSNorm, GN, IN; a
single-input consistency probe) and ``bnviz.experiments.small_batches`` (MLP;
BN, Batch Renorm, ghost BN, GN, LN; a train/eval mismatch probe) are this sweep
with their own models, defaults and probe. Each keeps its config and result
names, so its cache keys, presets and CLI name stay as they were.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np

from ..budget import training_cost
from ..data import load_mnist
from ..models import ModelConfig, model_label
from ..train import ProgressFn, Run, TrainConfig, TrainResult, pick_device
from . import train_in_waves

FULL_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
SweepKey = tuple[str, int, int]  # (norm, batch size, seed)


class BatchSizeSweep:
    """What a sweep config shares (a mixin for a frozen :class:`bnviz.config.Config` with
    fields ``norms``, ``batch_sizes``, ``seeds``, ``steps``, ``lr`` and a ``model(norm)``)."""

    norms: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    seeds: int
    steps: int
    lr: float

    def model(self, norm: str) -> ModelConfig:  # pragma: no cover - each sweep builds its own
        raise NotImplementedError

    def train_config(self, batch_size: int, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=batch_size, lr=self.lr, optimizer="adam", seed=seed, eval_every=self.steps, eval_examples=500)

    def runs(self) -> list[tuple[SweepKey, ModelConfig, TrainConfig]]:
        """Every run the sweep trains, ``((norm, batch size, seed), model, training)``, in the
        order :func:`run_sweep` trains them (batch size, then norm, then seed)."""
        return [((norm, b, s), self.model(norm), self.train_config(b, s)) for b in self.batch_sizes for norm in self.norms for s in range(self.seeds)]

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``): the runs of :meth:`runs`."""
        return training_cost(self.runs())


@dataclass
class BatchSizeSweepResult:
    """``runs[(norm, batch_size, seed)]``: each run, its probe's values in ``records``."""

    config: Any  # a BatchSizeSweep config
    runs: dict[SweepKey, TrainResult]

    def accuracy(self, norm: str) -> np.ndarray:
        """(batch sizes, seeds) final test accuracy, NaN where the run diverged."""
        c = self.config
        return np.array([[float("nan") if self.runs[(norm, b, s)].diverged else self.runs[(norm, b, s)].final_test_acc for s in range(c.seeds)] for b in c.batch_sizes])

    def mean_accuracy(self, norm: str, batch_size: int) -> float:
        """Mean over the seeds that did not diverge (NaN if none)."""
        values = self.accuracy(norm)[self.config.batch_sizes.index(batch_size)]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def run_sweep(config: BatchSizeSweep, probe: Callable[[Any, int], Any], progress: ProgressFn | None = None, chunk_fraction: float = 0.25) -> dict[SweepKey, TrainResult]:
    """Train every run of ``config.runs()``, each with its own recorder ``probe(data, batch_size)``;
    a run's model is built when its wave comes (:func:`bnviz.experiments.train_in_waves`)."""
    data = load_mnist(str(pick_device()))
    jobs = {
        key: (f"{model_label(key[0])}, batch {key[1]}, seed {key[2]}", partial(Run, model, train, data, [probe(data, key[1])]))
        for key, model, train in config.runs()
    }
    return train_in_waves(jobs, progress, chunk_fraction=chunk_fraction)
