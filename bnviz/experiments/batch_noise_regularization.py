"""BN's regularization side effect (article C.2.2): batch noise, weaker with bigger batches.

In training, each example is normalised with statistics of a random batch, so
its hidden values carry noise that shrinks as the batch grows. The article
says this acts as a regularizer: "greater batch size, lesser regularization".
Measured here on a small training subset (where a network can overfit): the
gap between training and test accuracy for BN and no-BN models at several
batch sizes, with several seeds to show the noise of the measurement itself.
Every run has the same number of steps and learning rate; only the batch size
and BN differ, so BN's effect at one batch size is the no-BN gap minus the BN gap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import ModelConfig
from ..train import ProgressFn, Run, TrainConfig, evaluate, pick_device, train_together
from ..verdicts import Verdict, judge
from . import Experiment


@dataclass(frozen=True)
class RegularizationConfig(Config):
    """``train_examples`` images (a seeded subset, the same for every run of one seed),
    ``steps`` SGD steps at every batch size, seeds ``0 .. num_seeds - 1``."""

    hidden: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    batch_sizes: tuple[int, ...] = (8, 32, 128)
    train_examples: int = 1000
    steps: int = 400
    lr: float = 0.1
    num_seeds: int = 3

    def __post_init__(self):
        check(1 <= len(self.hidden) <= 4, "Choose 1 to 4 hidden layers.")
        check(1 <= len(self.batch_sizes) <= 6 and all(2 <= b <= 1024 for b in self.batch_sizes), "Choose 1 to 6 batch sizes between 2 and 1,024.")
        check(100 <= self.train_examples <= 60_000, "train_examples must be between 100 and 60,000.")
        check(10 <= self.steps <= 20_000, "steps must be between 10 and 20,000.")
        check(1 <= self.num_seeds <= 10, "num_seeds must be between 1 and 10.")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.runs()
        check_view_cost(self, "fewer seeds, batch sizes or steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost(self.runs())

    def runs(self) -> list[tuple[ModelConfig, TrainConfig]]:
        base = ModelConfig(hidden=self.hidden, activation=self.activation)
        return [
            (model, TrainConfig(steps=self.steps, batch_size=size, lr=self.lr, seed=seed, eval_every=self.steps, train_examples=self.train_examples))
            for seed in range(self.num_seeds)
            for size in self.batch_sizes
            for model in (base, base.replace(norm="batch"))
        ]


@dataclass
class RegularizationResult:
    """One row per run: model, batch_size, seed, train/test accuracy and loss (eval mode), gap."""

    config: RegularizationConfig
    rows: list[dict]
    diverged: list[str]  # "BN, batch 8, seed 1" for any run that diverged

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def mean_gap(self) -> pd.DataFrame:
        """Mean and spread over seeds of the train-test accuracy gap, per model and batch size."""
        grouped = self.table.groupby(["model", "batch_size"])["gap"]
        return grouped.agg(["mean", "min", "max"]).reset_index()

    def bn_effect(self) -> pd.DataFrame:
        """Per batch size and seed: no-BN gap minus BN gap (positive = BN narrowed the gap)."""
        wide = self.table.pivot_table(index=["batch_size", "seed"], columns="model", values="gap").reset_index()
        wide["bn_effect"] = wide["no BN"] - wide["BN"]
        return wide[["batch_size", "seed", "bn_effect"]]


# "Greater batch size, lesser regularization" holds only if BN's effect on the gap differs by more than this.
TREND_MARGIN_POINTS = 0.5


def trend_verdict(result: RegularizationResult) -> Verdict:
    """The article's "greater batch size, lesser regularization", judged over seeds: BN's effect
    on the gap (no BN minus BN) at the smallest batch size minus at the largest, paired by seed,
    margin :data:`TREND_MARGIN_POINTS`."""
    effect = result.bn_effect().pivot_table(index="seed", columns="batch_size", values="bn_effect").sort_index()
    smallest, largest = min(effect.columns), max(effect.columns)
    return judge("BN regularises more at the smaller batch", effect[smallest].to_numpy(), effect[largest].to_numpy(), margin=TREND_MARGIN_POINTS, unit="points", display_scale=100)


def run(config: RegularizationConfig, progress: ProgressFn | None = None) -> RegularizationResult:
    data = load_mnist(str(pick_device()))
    runs = [Run(model, train, data, label=model.label) for model, train in config.runs()]
    train_together(runs, progress, chunk=config.steps // 4 or 1)
    rows, diverged = [], []
    for one in runs:
        result = one.result(final=False)
        if result.diverged:
            diverged.append(f"{one.label}, batch {one.train_cfg.batch_size}, seed {one.train_cfg.seed}")
        train_loss, train_acc, _ = evaluate(one.model, one.train_x, one.train_y)
        test_loss, test_acc, _ = evaluate(one.model, one.test_x, one.test_y)
        rows.append(
            {"model": one.label, "batch_size": one.train_cfg.batch_size, "seed": one.train_cfg.seed, "train_acc": float(train_acc), "test_acc": float(test_acc),
             "train_loss": float(train_loss), "test_loss": float(test_loss), "gap": float(train_acc - test_acc)}
        )
    return RegularizationResult(config=config, rows=rows, diverged=diverged)


def summarize(result: RegularizationResult) -> dict:
    return {"mean_gap": result.mean_gap().to_dict(orient="records"), "diverged": result.diverged, "trend_verdict": trend_verdict(result).rule}


EXPERIMENT = Experiment(
    name="batch_noise_regularization",
    title="BN's regularization side effect at several batch sizes",
    summary="Train-test accuracy gap of BN and no-BN models on a small training subset, batch sizes and seeds.",
    config_type=RegularizationConfig,
    run=run,
    order=21,
    summarize=summarize,
)
