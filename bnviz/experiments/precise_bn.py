"""PreciseBN (Wu & Johnson 2021, arXiv 2105.07576): population statistics recomputed after training.

PyTorch's eval-mode statistics are an exponential moving average (EMA) of
batch statistics collected *while the weights moved*: with momentum m it
mostly remembers the last ~1/m steps, computed by older weights. Wu & Johnson
show the EMA lags behind the model when the weights move fast (a high learning
rate, a small momentum), and propose PreciseBN: freeze the weights, run N
training images through the network in train mode (batches of the training
batch size), and aggregate the per-batch statistics exactly
(:func:`bnviz.bn_stats.precise_batch_norm_statistics` with ``pooled_variance``, written into the
running buffers by :func:`bnviz.bn_stats.recalibrate_batch_norm`)::

    mean = (1/K) sum_k mu_k,    var = (1/K) sum_k (sigma_k^2 + mu_k^2) - mean^2

The same MLP is trained at a low and a high learning rate; for each, test
accuracy with the EMA statistics against PreciseBN from N = 10^2..10^4
training images (several random draws of the N images), and the distance
between the EMA and the precise statistics, per BN layer.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..budget import check_view_cost, training_cost
from ..bn_stats import batch_norm_layers, recalibrate_batch_norm
from ..config import Config, check
from ..data import load_mnist
from ..models import PAPER_HIDDEN, ModelConfig
from ..norms import PYTORCH_DEFAULT_MOMENTUM
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, TrainResult, evaluate, pick_device, train_together
from ..verdicts import Verdict, judge
from . import Experiment

SAMPLE_COUNTS = (100, 300, 1000, 3000, 10_000)
# Keras/TensorFlow's BatchNormalization default momentum 0.99, in PyTorch's convention: the EMA
# averages over ~100 steps, so it lags a model whose weights move fast (Wu & Johnson 2021, Sec. 3).
KERAS_DEFAULT_MOMENTUM = 0.01
EMA, PRECISE = "EMA (running statistics)", "PreciseBN"


@dataclass(frozen=True)
class PreciseBNConfig(Config):
    """The paper's MLP (3 x 100 sigmoid units, BN before each nonlinearity), plain SGD, one model per learning rate.

    ``sample_counts``: training images PreciseBN aggregates over (rounded to
    whole batches of ``batch_size``); ``draws``: random sets of images per count.
    """

    learning_rates: tuple[float, ...] = (0.1, 10.0)
    bn_momentum: float = KERAS_DEFAULT_MOMENTUM
    batch_size: int = PAPER_BATCH_SIZE
    steps: int = 600
    hidden: tuple[int, ...] = PAPER_HIDDEN
    activation: str = "sigmoid"
    sample_counts: tuple[int, ...] = SAMPLE_COUNTS
    draws: int = 3
    seed: int = 0
    seeds: int = 3  # seeds seed .. seed + seeds - 1 for the lag verdict; the charts show the first


    def __post_init__(self):
        check(1 <= len(self.learning_rates) <= 4 and all(0 < lr <= 20 for lr in self.learning_rates), "Choose 1 to 4 learning rates in (0, 20].")
        check(0.0 < self.bn_momentum <= 1.0, "BN momentum must be in (0, 1].")
        check(2 <= self.batch_size <= 1024, "Batch size must be between 2 and 1,024.")
        check(10 <= self.steps <= 20_000, "steps must be between 10 and 20,000.")
        check(self.sample_counts and all(self.batch_size <= n <= 60_000 for n in self.sample_counts), "Sample counts must be between one batch and 60,000.")
        check(1 <= self.draws <= 10, "Draws per sample count: 1 to 10.")
        check(1 <= self.seeds <= 10, "Choose 1 to 10 seeds (3 or more give the lag verdict an interval).")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.model_config()
        check_view_cost(self, "fewer learning rates or steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        # PreciseBN's statistics are forward passes over at most 60,000 images per draw: a small share
        return training_cost(self.runs())

    def runs(self) -> list[tuple[ModelConfig, TrainConfig]]:
        """What :func:`run` trains: one model per learning rate at each seed, seed by seed."""
        return [(self.model_config(), self.train_config(lr, seed)) for seed in range(self.seed, self.seed + self.seeds) for lr in self.learning_rates]

    def model_config(self) -> ModelConfig:
        return ModelConfig(hidden=self.hidden, activation=self.activation, norm="batch", bn_momentum=self.bn_momentum)

    def train_config(self, lr: float, seed: int | None = None) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=lr, seed=self.seed if seed is None else seed, eval_every=max(10, self.steps // 20))

    def batches_for(self, count: int) -> int:
        return max(1, round(count / self.batch_size))


@dataclass
class PreciseBNResult:
    """Per learning rate (index L): ``precise_accuracy`` (L, K, D) over sample counts K and draws D;
    ``ema_accuracy`` (L,); ``stat_gap`` rows {lr, layer, mean_gap, var_gap}: EMA vs PreciseBN with the
    most samples, mean over units of |mu_EMA - mu|/sigma and |var_EMA/var - 1|. The charts show the
    first seed; ``seed_lags`` (L, S) is :meth:`lag` for every seed (NaN where a run diverged)."""

    config: PreciseBNConfig
    runs: list[TrainResult]
    samples_used: np.ndarray  # (K,) batches x batch size
    ema_accuracy: np.ndarray
    precise_accuracy: np.ndarray
    stat_gap: list[dict]
    seed_lags: np.ndarray | None = None

    def diverged(self, index: int) -> bool:
        return self.runs[index].diverged

    def records(self) -> list[dict]:
        rows = []
        for i, lr in enumerate(self.config.learning_rates):
            for k, n in enumerate(self.samples_used):
                for d in range(self.precise_accuracy.shape[2]):
                    rows.append({"learning_rate": lr, "samples": int(n), "draw": d, "statistics": PRECISE, "accuracy": float(self.precise_accuracy[i, k, d])})
            rows.append({"learning_rate": lr, "samples": None, "draw": None, "statistics": EMA, "accuracy": float(self.ema_accuracy[i])})
        return rows

    def lag(self, index: int) -> float:
        """PreciseBN's accuracy with the most samples (mean over draws) minus the EMA's, for learning rate ``index``."""
        return float(self.precise_accuracy[index, -1].mean() - self.ema_accuracy[index])


# The EMA "lags more" at the high learning rate only by more than a quarter point of accuracy.
LAG_MARGIN_POINTS = 0.25


def lag_verdict(result: PreciseBNResult) -> Verdict:
    """Wu & Johnson's claim, judged over seeds: PreciseBN-minus-EMA accuracy at the highest
    learning rate exceeds that at the lowest by more than :data:`LAG_MARGIN_POINTS` (paired)."""
    lags = result.seed_lags if result.seed_lags is not None else np.array([[result.lag(i)] for i in range(len(result.runs))])
    return judge("the EMA lags more when the weights move fast", lags[-1], lags[0], margin=LAG_MARGIN_POINTS, unit="points", display_scale=100, decimals=2)


def statistics_gap(model, estimates) -> list[tuple[float, float]]:
    """Per BN layer: mean over units of |running_mean - mean| / sqrt(var), and of |running_var / var - 1|."""
    gaps = []
    for layer, estimate in zip(batch_norm_layers(model), estimates):
        mean, var = estimate.mean.double().cpu(), estimate.var.double().cpu()
        running_mean, running_var = layer.running_mean.double().cpu(), layer.running_var.double().cpu()
        gaps.append((float(((running_mean - mean).abs() / var.sqrt()).mean()), float((running_var / var - 1).abs().mean())))
    return gaps


@torch.no_grad()
def precise_model(model, x: torch.Tensor, batch_size: int, num_batches: int, seed: int):
    """A copy of ``model`` whose BN running statistics are PreciseBN's, and the estimates."""
    copy_ = copy.deepcopy(model)
    estimates = recalibrate_batch_norm(copy_, x, batch_size, num_batches, seed, pooled_variance=True)
    return copy_.eval(), estimates


def run(config: PreciseBNConfig, progress: ProgressFn | None = None) -> PreciseBNResult:
    device = pick_device()
    data = load_mnist(str(device))
    all_runs = [Run(model, train, data, label=f"lr {train.lr:g}") for model, train in config.runs()]

    def train_progress(fraction, message, partial):
        if progress:
            progress(0.6 * fraction, message, None)

    all_results = train_together(all_runs, train_progress)
    rates = len(config.learning_rates)
    runs, results = all_runs[:rates], all_results[:rates]
    counts = config.sample_counts
    samples_used = np.asarray([config.batches_for(n) * config.batch_size for n in counts])
    shape = (len(runs), len(counts), config.draws)
    precise_accuracy = np.full(shape, np.nan)
    ema_accuracy = np.full(len(runs), np.nan)
    stat_gap = []
    x, y = data.test_x, data.test_y
    total = len(runs) * len(counts)
    for i, (run_, result) in enumerate(zip(runs, results)):
        if result.diverged:
            continue
        model = run_.model
        ema_accuracy[i] = evaluate(model, x, y)[1]
        for k, count in enumerate(counts):
            if progress:
                progress(0.6 + 0.4 * (i * len(counts) + k) / total, f"PreciseBN from {samples_used[k]:,} training images, lr {config.learning_rates[i]:g}", None)
            for d in range(config.draws):
                precise, estimates = precise_model(model, data.train_x, config.batch_size, config.batches_for(count), seed=config.seed * 1000 + d + 1)
                precise_accuracy[i, k, d] = evaluate(precise, x, y)[1]
        # distance between the EMA and the precise statistics from the most images (the last draw)
        for layer, (mean_gap, var_gap) in enumerate(statistics_gap(model, estimates), start=1):
            stat_gap.append({"learning_rate": config.learning_rates[i], "layer": layer, "mean_gap": mean_gap, "var_gap": var_gap})
    # the other seeds: only the lag with the most images, for the verdict
    seed_lags = np.full((rates, config.seeds), np.nan)
    seed_lags[:, 0] = precise_accuracy[:, -1].mean(axis=1) - ema_accuracy
    for index, (run_, result) in enumerate(zip(all_runs[rates:], all_results[rates:]), start=rates):
        if result.diverged:
            continue
        model = run_.model
        precise = [evaluate(precise_model(model, data.train_x, config.batch_size, config.batches_for(counts[-1]), seed=run_.train_cfg.seed * 1000 + d + 1)[0], x, y)[1] for d in range(config.draws)]
        seed_lags[index % rates, index // rates] = float(np.mean(precise)) - evaluate(model, x, y)[1]
    if progress:
        progress(1.0, "done", None)
    return PreciseBNResult(config=config, runs=results, samples_used=samples_used, ema_accuracy=ema_accuracy, precise_accuracy=precise_accuracy, stat_gap=stat_gap, seed_lags=seed_lags)


def summarize(result: PreciseBNResult) -> dict:
    return {
        f"lr {lr:g}": {
            "diverged": result.runs[i].diverged,
            "ema_accuracy": float(result.ema_accuracy[i]),
            "precise_accuracy_by_samples": dict(zip(map(int, result.samples_used), map(float, result.precise_accuracy[i].mean(axis=1)))),
            "precise_minus_ema": result.lag(i) if not math.isnan(result.ema_accuracy[i]) else None,
            "precise_minus_ema_per_seed": result.seed_lags[i].tolist() if result.seed_lags is not None else None,
        }
        for i, lr in enumerate(result.config.learning_rates)
    } | {"lag_verdict": lag_verdict(result).rule}


EXPERIMENT = Experiment(
    name="precise_bn",
    title="PreciseBN vs the EMA",
    summary="Population statistics recomputed from 10^2..10^4 training images (Wu & Johnson 2021) vs the running EMA, at a low and a high learning rate.",
    config_type=PreciseBNConfig,
    run=run,
    order=21,
    presets={"PyTorch momentum 0.1": PreciseBNConfig(bn_momentum=PYTORCH_DEFAULT_MOMENTUM)},
    summarize=summarize,
)
