"""BN, LayerNorm, GroupNorm (and no norm) across batch sizes: where does each one win?

Every model is trained for the same number of steps with the same optimiser
at each batch size (so a larger batch sees more examples; the no-norm model
shows what batch size alone does), for ``seeds`` seeds, and scored on the full
test set in eval mode. After training, a :class:`SingleInputConsistency`
recorder feeds one test digit through each model in eval and train mode,
alone and with two sets of batch-mates.

Context, not assumed (Wu & He 2018, "Group Normalization", Fig. 1, ResNet-50
on ImageNet): BN's validation error rose from 23.6% at 32 examples per GPU to
34.7% at 2, while GN's stayed near 24.1%.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..budget import check_view_cost
from ..config import Config, check
from ..models import ModelConfig, model_label
from ..probes import SingleInputConsistency
from ..train import ProgressFn
from . import Experiment
from .batch_size_sweep import FULL_BATCH_SIZES, BatchSizeSweep, BatchSizeSweepResult, run_sweep

SWEEP_NORMS = ("none", "batch", "layer", "rms", "group", "instance")
HIDDEN = {"mlp": (100, 100), "cnn": (8, 16)}
LIGHT_BATCH_SIZES = (2, 16, 128)
CHECK_EXAMPLES = 256  # test digits scored in train mode by the consistency recorder
# Wu & He 2018, Fig. 1 (ImageNet, ResNet-50, validation error by examples per GPU)
GN_PAPER_BN_ERROR = {32: 0.236, 2: 0.347}
GN_PAPER_GN_ERROR = 0.241
# outputs closer than this are "the same" (float32 sums in a different order)
SAME_OUTPUT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class NormComparisonConfig(BatchSizeSweep, Config):
    """A batch-size sweep (:mod:`bnviz.experiments.batch_size_sweep`). ``seeds``: seeds 0 .. seeds-1 per (norm, batch size).

    Adam at lr 1e-3 (the step size it normalises for itself) so that one
    learning rate serves every batch size; ReLU; GroupNorm with ``groups``.
    """

    arch: str = "mlp"
    norms: tuple[str, ...] = ("none", "batch", "layer", "rms", "group")
    batch_sizes: tuple[int, ...] = LIGHT_BATCH_SIZES
    # 3 seeds: a mean with a spread to read (one seed cannot tell a fall from noise); the
    # default view's cost is 3,405 reference steps (about 7 s of a core), 2% of the view budget
    seeds: int = 3
    steps: int = 100
    lr: float = 0.001
    groups: int = 4

    def __post_init__(self):
        check(self.arch in HIDDEN, "arch must be 'mlp' or 'cnn'.")
        check(1 <= len(self.norms) <= len(SWEEP_NORMS) and all(n in SWEEP_NORMS for n in self.norms), f"norms are some of {', '.join(SWEEP_NORMS)}.")
        check("instance" not in self.norms or self.arch == "cnn", "InstanceNorm needs spatial positions: sweep it with the CNN.")
        check(1 <= len(self.batch_sizes) <= 10 and all(2 <= b <= 512 for b in self.batch_sizes), "Choose 1 to 10 batch sizes between 2 and 512 (BN cannot train on 1).")
        check(1 <= self.seeds <= 5, "Choose 1 to 5 seeds.")
        check(10 <= self.steps <= 5000, "steps must be between 10 and 5,000.")
        check(1 <= self.groups <= min(HIDDEN[self.arch]), f"groups must be between 1 and {min(HIDDEN[self.arch])} (the narrowest layer).")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.train_config(self.batch_sizes[0], 0), [self.model(norm) for norm in self.norms]
        check_view_cost(self, "fewer seeds, batch sizes or steps, or the MLP")

    def model(self, norm: str) -> ModelConfig:
        return ModelConfig(arch=self.arch, hidden=HIDDEN[self.arch], activation="relu", norm=norm, groups=self.groups)


@dataclass
class NormComparisonResult(BatchSizeSweepResult):
    """``accuracy(norm)[i, s]``: final test accuracy at ``batch_sizes[i]``, seed s (NaN if diverged).

    ``runs[(norm, batch_size, seed)]`` holds each run (its ``records`` carry the
    consistency probe: ``mode_logits``, ``train_alone_error``, ``mode_accuracy``).
    """

    config: NormComparisonConfig

    def ms_per_step(self, norm: str, batch_size: int) -> float:
        runs = [self.runs[(norm, batch_size, s)] for s in range(self.config.seeds)]
        return 1000 * float(np.mean([r.seconds / max(len(r.step_loss), 1) for r in runs]))

    def consistency(self, norm: str, batch_size: int) -> dict:
        """:func:`consistency_summary` of the seed-0 run of ``norm`` at ``batch_size``."""
        return consistency_summary(self.runs[(norm, batch_size, 0)].records)

    def summary_rows(self) -> list[dict]:
        """One row per norm, every cell from the runs (mean over seeds)."""
        small, large = min(self.config.batch_sizes), max(self.config.batch_sizes)
        rows = []
        for norm in self.config.norms:
            accuracy = self.accuracy(norm)
            probe = self.consistency(norm, small)
            eval_acc, train_acc = probe["mode_accuracy"]
            if probe["train_alone_error"]:
                alone = "refused by torch"
            elif probe["train_alone_vs_eval"] <= SAME_OUTPUT_TOLERANCE:
                alone = "yes, same as eval mode"
            else:
                alone = f"runs, differs (max logit change {probe['train_alone_vs_eval']:.2f})"
            rows.append({
                "norm": model_label(norm),
                f"test accuracy, batch {small}": float(np.nanmean(accuracy[0])) if np.isfinite(accuracy[0]).any() else float("nan"),
                f"test accuracy, batch {large}": float(np.nanmean(accuracy[-1])) if np.isfinite(accuracy[-1]).any() else float("nan"),
                f"train − eval accuracy, batch {small}": train_acc - eval_acc,
                "one example alone, train mode": alone,
                f"ms/step, batch {large}": self.ms_per_step(norm, large),
            })
        return rows


def consistency_summary(records: dict) -> dict:
    """What a :class:`SingleInputConsistency` probe says, as max |logit differences|.

    ``batch_dependence``: train mode, batch-mates a vs b; ``train_eval_gap``: train
    mode vs eval mode, same batch; ``alone_vs_batch``: eval mode, alone vs in a batch;
    ``train_alone_vs_eval``: train mode alone vs eval mode alone (NaN when torch
    refused, its message in ``train_alone_error``); ``mode_accuracy``: [eval, train].
    """
    logits = dict(zip(SingleInputConsistency.MODES, records["mode_logits"]))

    def gap(a, b):
        return float(np.abs(logits[a] - logits[b]).max())

    return {
        "batch_dependence": gap("train_batch_a", "train_batch_b"),
        "train_eval_gap": gap("train_batch_a", "eval_batch"),
        "alone_vs_batch": gap("eval_alone", "eval_batch"),
        "train_alone_vs_eval": gap("train_alone", "eval_alone"),
        "train_alone_error": str(records["train_alone_error"]),
        "mode_accuracy": np.asarray(records["mode_accuracy"], dtype=float),
    }


def probe_recorder(data, batch_size: int, at_step: int) -> SingleInputConsistency:
    """Test digit 0 as the probe; digits 1.. and the next ones as two sets of batch-mates; after step ``at_step``."""
    x, y = data.test_x, data.test_y
    mates = batch_size - 1
    return SingleInputConsistency(x[:1], x[1 : 1 + mates], x[1 + mates : 1 + 2 * mates], x[:CHECK_EXAMPLES], y[:CHECK_EXAMPLES], at_step)


def run(config: NormComparisonConfig, progress: ProgressFn | None = None) -> NormComparisonResult:
    runs = run_sweep(config, lambda data, batch_size: probe_recorder(data, batch_size, config.steps), progress, chunk_fraction=0.2)
    return NormComparisonResult(config, runs)


def summarize(result: NormComparisonResult) -> dict:
    return {row["norm"]: {k: v for k, v in row.items() if k != "norm"} for row in result.summary_rows()}


EXPERIMENT = Experiment(
    name="norm_comparison",
    title="BN vs LayerNorm vs GroupNorm across batch sizes",
    summary="The same MLP (or small CNN) with no norm, BN, LN and GN trained at batch sizes 2 to 256; test accuracy and train/eval consistency.",
    config_type=NormComparisonConfig,
    run=run,
    order=61,
    presets={
        "Full sweep, MLP (8 batch sizes, 3 seeds)": NormComparisonConfig(batch_sizes=FULL_BATCH_SIZES, seeds=3, steps=200),
        "CNN with InstanceNorm (light)": NormComparisonConfig(arch="cnn", norms=SWEEP_NORMS, steps=100, seeds=1),  # 3 seeds: over the view budget
    },
    summarize=summarize,
)
