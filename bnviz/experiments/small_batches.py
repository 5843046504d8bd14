"""Small batches: BN, Batch Renorm, ghost BN, GroupNorm and LayerNorm across batch sizes.

The same ReLU MLP with each norm (and with none, as a reference) is trained
for the same number of Adam steps at each batch size, for ``seeds`` seeds, and
scored on the full test set in eval mode. A :class:`TrainEvalMismatch`
recorder then feeds test digits through each trained model in train mode (in
batches of the training batch size, batch statistics) and in eval mode
(running averages), and counts the predictions that change.

Batch Renorm's warm-up follows the paper's schedule (Ioffe 2017, Sec. 4.1:
plain BN for 5k of 160k steps, d_max reached at 25k, r_max at 40k), scaled to
this run's length: the warm-up is ``steps * 5,000 / 160,000`` steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..budget import check_view_cost
from ..config import Config, check
from ..models import ModelConfig, model_label
from ..probes import TrainEvalMismatch
from ..renorm import PAPER_TRAINING_STEPS, PAPER_WARMUP_STEPS
from ..train import ProgressFn
from ..verdicts import Verdict, judge
from . import Experiment
from .batch_size_sweep import FULL_BATCH_SIZES, BatchSizeSweep, BatchSizeSweepResult, run_sweep

SWEEP_NORMS = ("none", "batch", "batch_renorm", "ghost_batch", "group", "layer")
DEFAULT_BATCH_SIZES = (2, 4, 8, 32, 128)
LIGHT_BATCH_SIZES = (2, 8, 128)
CHECK_EXAMPLES = 512  # test digits the mismatch probe sends through in both modes


@dataclass(frozen=True)
class SmallBatchesConfig(BatchSizeSweep, Config):
    """A batch-size sweep (:mod:`bnviz.experiments.batch_size_sweep`). ``seeds``: seeds 0 .. seeds-1 per (norm, batch size).

    Adam at lr 1e-3 (one learning rate for every batch size), ReLU, hidden
    widths ``(width, width)``, GroupNorm with ``groups`` groups.
    ``r_max``/``d_max``: Batch Renorm's final limits; ``ghost_batch_size``: v.
    """

    norms: tuple[str, ...] = SWEEP_NORMS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    seeds: int = 2
    steps: int = 100
    lr: float = 0.001
    width: int = 64
    groups: int = 4
    r_max: float = 3.0
    d_max: float = 5.0
    ghost_batch_size: int = 16

    def __post_init__(self):
        check(1 <= len(self.norms) <= len(SWEEP_NORMS) and all(n in SWEEP_NORMS for n in self.norms), f"norms are some of {', '.join(SWEEP_NORMS)}.")
        check(1 <= len(self.batch_sizes) <= 8 and all(2 <= b <= 512 for b in self.batch_sizes), "Choose 1 to 8 batch sizes between 2 and 512 (BN cannot train on 1).")
        check(1 <= self.seeds <= 5, "Choose 1 to 5 seeds.")
        check(10 <= self.steps <= 5000, "steps must be between 10 and 5,000.")
        check(0.0 < self.lr <= 1.0, "learning rate must be in (0, 1].")
        check(1 <= self.groups <= 64, "groups (GroupNorm's) must be between 1 and 64.")
        check(8 <= self.width <= 512 and self.width % self.groups == 0, "width must be 8 to 512 and divide into the groups.")
        # r_max, d_max, ghost_batch_size are checked by ModelConfig
        self.model("batch_renorm")
        self.model("ghost_batch")
        check_view_cost(self, "fewer seeds, batch sizes or steps")

    @property
    def warmup_steps(self) -> int:
        """The paper's 5,000 of 160,000 steps, scaled to ``steps`` (at least 1)."""
        return max(1, round(self.steps * PAPER_WARMUP_STEPS / PAPER_TRAINING_STEPS))

    def model(self, norm: str) -> ModelConfig:
        return ModelConfig(
            hidden=(self.width, self.width), activation="relu", norm=norm, groups=self.groups,
            renorm_r_max=self.r_max, renorm_d_max=self.d_max, renorm_warmup_steps=self.warmup_steps, ghost_batch_size=self.ghost_batch_size,
        )


@dataclass
class SmallBatchesResult(BatchSizeSweepResult):
    """``runs[(norm, batch_size, seed)]``; each run's ``records["mismatch"]`` is the probe's
    [eval accuracy, train-mode accuracy, prediction changes, mean |logit change|]."""

    config: SmallBatchesConfig

    def mismatch(self, norm: str) -> np.ndarray:
        """(batch sizes, seeds, 4) probe values (NaN for a diverged run)."""
        c = self.config
        rows = []
        for b in c.batch_sizes:
            row = []
            for s in range(c.seeds):
                run = self.runs[(norm, b, s)]
                row.append(np.full(len(TrainEvalMismatch.NAMES), np.nan) if run.diverged else np.asarray(run.records["mismatch"], dtype=float))
            rows.append(row)
        return np.array(rows)

    def summary_rows(self) -> list[dict]:
        """One row per (norm, batch size): means over seeds, every cell from the runs."""
        rows = []
        for norm in self.config.norms:
            accuracy, mismatch = self.accuracy(norm), self.mismatch(norm)
            for i, b in enumerate(self.config.batch_sizes):
                finite = np.isfinite(accuracy[i])
                mean = lambda v: float(np.mean(v[finite])) if finite.any() else float("nan")  # noqa: E731
                rows.append({
                    "model": model_label(norm), "batch size": b,
                    "test accuracy": mean(accuracy[i]),
                    "lowest seed": float(np.min(accuracy[i][finite])) if finite.any() else float("nan"),
                    "highest seed": float(np.max(accuracy[i][finite])) if finite.any() else float("nan"),
                    **{name: mean(mismatch[i, :, k]) for k, name in enumerate(TrainEvalMismatch.NAMES)},
                })
        return rows


# Batch Renorm "beats" BN at the smallest batch only by more than a point of accuracy.
RENORM_MARGIN_POINTS = 1.0


def renorm_verdict(result: SmallBatchesResult) -> Verdict:
    """Batch Renorm minus BN in final accuracy at the smallest batch size, paired by seed
    (diverged seeds left out), judged with margin :data:`RENORM_MARGIN_POINTS`."""
    bn, renorm = result.accuracy("batch")[0], result.accuracy("batch_renorm")[0]
    paired = np.isfinite(bn) & np.isfinite(renorm)
    return judge("Batch Renorm beats BN at the smallest batch", renorm[paired], bn[paired], margin=RENORM_MARGIN_POINTS, unit="points", display_scale=100)


def mismatch_recorder(data, batch_size: int, at_step: int) -> TrainEvalMismatch:
    """The first :data:`CHECK_EXAMPLES` test digits, in batches of ``batch_size``, after step ``at_step``."""
    return TrainEvalMismatch(data.test_x[:CHECK_EXAMPLES], data.test_y[:CHECK_EXAMPLES], batch_size, at_step=at_step)


def run(config: SmallBatchesConfig, progress: ProgressFn | None = None) -> SmallBatchesResult:
    runs = run_sweep(config, lambda data, batch_size: mismatch_recorder(data, batch_size, config.steps), progress)
    return SmallBatchesResult(config, runs)


def summarize(result: SmallBatchesResult) -> dict:
    return {f"{row['model']}, batch {row['batch size']}": {k: v for k, v in row.items() if k not in ("model", "batch size")} for row in result.summary_rows()}


EXPERIMENT = Experiment(
    name="small_batches",
    title="Small batches: BN, Batch Renorm, ghost BN, GroupNorm, LayerNorm",
    summary="The same MLP with each norm trained at batch sizes 2 to 128 over seeds; test accuracy, and how much train-mode and eval-mode predictions differ.",
    config_type=SmallBatchesConfig,
    run=run,
    order=63,
    presets={
        "All batch sizes 2-256, 3 seeds, 500 steps": SmallBatchesConfig(batch_sizes=FULL_BATCH_SIZES, seeds=3, steps=500),
    },
    summarize=summarize,
)
