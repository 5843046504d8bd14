"""Hypothesis (1), tested the way Santurkar et al. 2018 (Sec. 2.1) did: inject covariate shift.

If BN helped by keeping each layer's input distribution stable, BN plus
deliberate, time-varying noise after every BN layer ("noisy BN", their
Algorithm 1) should lose most of BN's advantage. Four models train on the
same batches: no BN, BN, noisy BN, and the same noise on the network without
BN (for contrast); :class:`~bnviz.recorders.ActivationDrift` measures how far
each layer's input distribution moves from step to step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import ACTIVATIONS, PAPER_HIDDEN, ModelConfig
from ..recorders import ActivationDrift
from ..results import Comparison, SeededComparison, first_seed_progress as _first_seed
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, TrainResult, pick_device, train_together
from . import Experiment

NOISY_MODELS = ("none", "batch", "noisy_batch", "noise")


@dataclass(frozen=True)
class NoisyBNConfig(Config):
    """The paper's MLP (784-100-100-100-10 sigmoid), plain SGD, four models on the same batches.

    ``noise_strength`` multiplies Algorithm 1's ranges (1 = the paper's:
    mu ~ U(-0.5, 0.5), sigma ~ U(1, 1.25), per-example jitter 0.1).
    """

    hidden: tuple[int, ...] = PAPER_HIDDEN
    activation: str = "sigmoid"
    steps: int = 400
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = 0.5
    noise_strength: float = 1.0
    seed: int = 0
    eval_every: int = 25
    seeds: int = 3  # seeds seed .. seed + seeds - 1: the charts show the first, the scoreboard's verdicts use all

    def __post_init__(self):
        check(1 <= len(self.hidden) <= 6, "Choose 1 to 6 hidden layers.")
        check(self.activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}.")
        check(20 <= self.steps <= 20_000, "steps must be between 20 and 20,000.")
        check(1 <= self.seeds <= 10, "Choose 1 to 10 seeds (3 or more give the scoreboard an interval).")
        check(0.0 <= self.noise_strength <= 5.0, "noise strength must be between 0 and 5.")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.models(), self.train_config()
        check_view_cost(self, "fewer steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost(self.runs())

    def runs(self) -> list[tuple[ModelConfig, TrainConfig]]:
        """What :func:`run` trains: every model of :meth:`models` at each seed, seed by seed."""
        return [(model, self.train_config(seed)) for seed in range(self.seed, self.seed + self.seeds) for model in self.models()]

    def models(self) -> list[ModelConfig]:
        base = ModelConfig(hidden=self.hidden, activation=self.activation, noise_strength=self.noise_strength)
        return [base.replace(norm=norm) for norm in NOISY_MODELS]

    def train_config(self, seed: int | None = None) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed if seed is None else seed, eval_every=self.eval_every)


def run(config: NoisyBNConfig, progress: ProgressFn | None = None) -> Comparison:
    data = load_mnist(str(pick_device()))
    runs = [Run(model, train, data, [ActivationDrift()]) for model, train in config.runs()]
    models = len(config.models())
    return SeededComparison.from_seeds(train_together(runs, _first_seed(progress, models)), models)


def drift(run: TrainResult) -> tuple[float, float]:
    """Median over steps of the step-to-step change in a unit's input mean and variance (all layers averaged).

    NaN for a diverged run: its last steps before the NaN are blowing up, not drifting.
    """
    mean_drift, var_drift = run.records["drift_mean"], run.records["drift_var"]
    if run.diverged or mean_drift.size == 0 or not np.isfinite(mean_drift).any():
        return float("nan"), float("nan")
    return float(np.nanmedian(mean_drift.mean(axis=1))), float(np.nanmedian(var_drift.mean(axis=1)))


def summarize(result: Comparison) -> dict:
    summary = result.summary()
    for run in result.runs:
        mean_drift, var_drift = drift(run)
        summary[run.label].update(median_mean_drift=mean_drift, median_var_drift=var_drift)
    return summary


EXPERIMENT = Experiment(
    name="why_noisy_bn",
    title="Why does BN work? (1) noisy BN: injected covariate shift",
    summary="No BN, BN, noisy BN (Santurkar et al. 2018, Algorithm 1) and noise without BN; accuracy and how far each layer's input distribution moves per step.",
    config_type=NoisyBNConfig,
    run=run,
    order=60,
    presets={
        "Paper's noise, 1,500 steps": NoisyBNConfig(steps=1500),
        "ReLU network (as the probes)": NoisyBNConfig(activation="relu"),
        "Twice the paper's noise": NoisyBNConfig(noise_strength=2.0),
    },
    summarize=summarize,
)
