"""Norms in a recurrent network: sequential MNIST with no norm, LayerNorm and per-step BN.

The image is read row by row (28 time steps of 28 pixels) by a one-layer tanh
RNN (``ModelConfig(arch="rnn")``); the norm sits on each step's summed input.
BN keeps separate statistics per time step (recurrent BN, Cooijmans et al.
2016); LN normalises each example's state vector at each step (Ba et al.
2016) and needs no statistics from other examples or other steps.

After training, each model reads longer sequences: the test digits with
``k`` blank rows (the background pixel) added before or after the image.
Per-step BN has statistics only for steps 0..27; it uses step 27's for
every later step (as Cooijmans et al. do), and when the rows come first
every step's statistics belong to another row. A :class:`SingleInputConsistency`
probe shows what happens with a batch of one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import IMAGE_SHAPE, MNIST_PIXEL_MEAN, MNIST_PIXEL_STD, load_mnist
from ..formatting import format_percent, format_points
from ..models import ModelConfig
from ..train import ProgressFn, Run, TrainConfig, TrainResult, evaluate, pick_device, train_together
from . import Experiment
from .norm_comparison import consistency_summary, probe_recorder

SEQUENCE_NORMS = ("none", "layer", "batch")
PLACES = ("before", "after")  # where the blank rows go
BLANK_PIXEL = (0.0 - MNIST_PIXEL_MEAN) / MNIST_PIXEL_STD  # a background pixel, standardised
EVAL_EXAMPLES = 500  # test digits for the curves and the longer sequences (the final accuracy uses all 10,000)


@dataclass(frozen=True)
class SequenceNormsConfig(Config):
    """Adam at ``lr``; every ``eval_every`` steps, accuracy on ``EVAL_EXAMPLES`` test digits; longer tests with ``extra_rows``."""

    hidden: int = 48
    steps: int = 100
    batch_size: int = 64
    lr: float = 0.003
    seed: int = 0
    eval_every: int = 10
    extra_rows: tuple[int, ...] = (0, 7, 14, 28)

    def __post_init__(self):
        check(8 <= self.hidden <= 256, "The recurrent state has 8 to 256 units.")
        check(10 <= self.steps <= 5000, "steps must be between 10 and 5,000.")
        check(2 <= self.batch_size <= 512, "batch size must be between 2 and 512 (BN cannot train on 1).")
        check(1 <= len(self.extra_rows) <= 8 and all(0 <= k <= 112 for k in self.extra_rows), "extra_rows: up to 8 counts of 0 to 112 rows.")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.models(), self.train_config()
        check_view_cost(self, "fewer steps or a smaller state")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost((model, self.train_config()) for model in self.models())

    def models(self) -> list[ModelConfig]:
        return [ModelConfig(arch="rnn", hidden=(self.hidden,), activation="tanh", norm=norm) for norm in SEQUENCE_NORMS]

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, optimizer="adam", seed=self.seed, eval_every=self.eval_every, eval_examples=EVAL_EXAMPLES)


@dataclass
class SequenceNormsResult:
    """``padded_accuracy[m, p, k]``: model m's accuracy on the ``EVAL_EXAMPLES`` test digits with
    ``extra_rows[k]`` blank rows placed ``PLACES[p]`` the image (eval mode)."""

    config: SequenceNormsConfig
    runs: list[TrainResult]
    padded_accuracy: np.ndarray

    def by_label(self, label: str) -> TrainResult:
        return next(run for run in self.runs if run.label == label)

    def consistency(self, label: str) -> dict:
        return consistency_summary(self.by_label(label).records)


def with_blank_rows(x: torch.Tensor, rows: int, place: str) -> torch.Tensor:
    """Images (N, 1, 28, 28) -> (N, 1, 28 + rows, 28), blank rows before or after the digit."""
    blank = torch.full((x.shape[0], 1, rows, IMAGE_SHAPE[2]), BLANK_PIXEL, dtype=x.dtype, device=x.device)
    return torch.cat([blank, x] if place == "before" else [x, blank], dim=2)


def run(config: SequenceNormsConfig, progress: ProgressFn | None = None) -> SequenceNormsResult:
    data = load_mnist(str(pick_device()))
    train_cfg = config.train_config()
    runs = [Run(model, train_cfg, data, recorders=[probe_recorder(data, config.batch_size, config.steps)]) for model in config.models()]
    results = train_together(runs, progress)
    padded = np.zeros((len(runs), len(PLACES), len(config.extra_rows)))
    for m, run_ in enumerate(runs):
        for p, place in enumerate(PLACES):
            for k, rows in enumerate(config.extra_rows):
                _, padded[m, p, k], _ = evaluate(run_.model, with_blank_rows(run_.eval_x, rows, place), run_.eval_y)
    if progress is not None:
        progress(1.0, "done", results)
    return SequenceNormsResult(config, results, padded)


def training_length_sentence(result: SequenceNormsResult) -> str:
    """BN against LayerNorm on sequences as long as the training ones, said against the usual story.

    The usual story (Ba et al. 2016) is that LayerNorm suits RNNs and BN does not. On 28-row
    digits, after a short training, per-step BN may be ahead: the sentence says so when the
    measurement contradicts the story, and points to what the story is about (longer
    sequences, a batch of one). One seed: a measurement, never a verdict.
    """
    bn, ln = result.by_label("BN"), result.by_label("LayerNorm")
    if bn.diverged or ln.diverged or not (math.isfinite(bn.final_test_acc) and math.isfinite(ln.final_test_acc)):
        broken = ", ".join(run.label for run in (bn, ln) if run.diverged or not math.isfinite(run.final_test_acc))
        return f"{broken} diverged (loss NaN or infinite), so the two cannot be compared at this setting."
    before, last = PLACES.index("before"), len(result.config.extra_rows) - 1
    labels = [run.label for run in result.runs]
    fall = {label: result.padded_accuracy[labels.index(label), before, last] - result.padded_accuracy[labels.index(label), before, 0] for label in ("BN", "LayerNorm")}
    steps, seed = result.config.steps, result.config.seed
    head = (f"On sequences as long as the training ones, per-step BN is ahead of LayerNorm here ({format_percent(bn.final_test_acc)} vs "
            f"{format_percent(ln.final_test_acc)}, {steps} steps, seed {seed}), against the usual advice to prefer LayerNorm in RNNs. "
            if bn.final_test_acc >= ln.final_test_acc else
            f"On sequences as long as the training ones, LayerNorm is ahead of per-step BN here ({format_percent(ln.final_test_acc)} vs "
            f"{format_percent(bn.final_test_acc)}, {steps} steps, seed {seed}). ")
    return (head + f"That advice is about what follows: with {result.config.extra_rows[-1]} blank rows before the digit, BN's accuracy changes by "
            f"{format_points(fall['BN'])} and LayerNorm's by {format_points(fall['LayerNorm'])}, and BN cannot train on a batch of one. "
            "One seed: a single measurement, not a verdict.")


def summarize(result: SequenceNormsResult) -> dict:
    return {
        run.label: {
            "final_test_acc": run.final_test_acc,
            **{f"{rows} blank rows {place}": float(result.padded_accuracy[m, p, k]) for p, place in enumerate(PLACES) for k, rows in enumerate(result.config.extra_rows)},
        }
        for m, run in enumerate(result.runs)
    }


EXPERIMENT = Experiment(
    name="sequence_norms",
    title="Norms in an RNN: sequential MNIST with no norm, LayerNorm, per-step BN",
    summary="A small tanh RNN reads MNIST row by row; no norm vs LayerNorm vs BN with per-time-step statistics; longer test sequences and batch 1.",
    config_type=SequenceNormsConfig,
    run=run,
    order=62,
    presets={"Longer training (1,000 steps)": SequenceNormsConfig(steps=1000, eval_every=100)},
    summarize=summarize,
)
