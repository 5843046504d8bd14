"""Before or after the nonlinearity: where to put BN, measured over seeds and learning rates.

Ioffe & Szegedy (2015, Sec. 3.2) normalise ``z = W u + b`` and feed it to the
nonlinearity, ``g(BN(W u))``; many practitioners put BN after it,
``BN(g(W u + b))``. For every learning rate of a sweep and every seed, three
models are trained side by side: no BN, BN before, BN after. The three models
of one seed start from the same linear weights (``build_model`` seeds with
``TrainConfig.seed``; BN's γ=1, β=0 draw no random numbers) and see the same
batches (the sampler is seeded with ``seed + 1``); :func:`run` checks both.

Each (learning rate, seed) cell is stored on its own in the result store, so
adding a seed or a learning rate trains only what is new. The verdict compares
placements with a paired t interval over seeds and a margin (:func:`verdict`,
:func:`bnviz.verdicts.judge`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..budget import check_view_cost, training_cost
from ..cache import ResultStore
from ..config import Config, check
from ..data import load_mnist
from ..models import ACTIVATIONS, ModelConfig
from ..recorders import NonlinearityInputs
from ..train import OPTIMIZERS, PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, TrainResult, pick_device, train_together
from ..unit_stats import is_flat
from ..verdicts import NOT_SUPPORTED, SUPPORTED, T_CRITICAL_95, judge, paired_interval  # noqa: F401 (T_CRITICAL_95: re-exported)
from ..verdicts import Verdict as JudgedVerdict
from . import Experiment

LABELS = ("no BN", "BN before", "BN after")
PLACEMENT_ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "elu")
# The learning rates a user picks a range from: half-decades on a log scale.
LR_LADDER = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)



@dataclass(frozen=True)
class PlacementConfig(Config):
    """An MLP of ``depth`` hidden layers of ``width`` units, trained as no BN, BN before
    and BN after, for every learning rate in ``lrs`` and seeds ``0 .. seeds - 1``.

    The default (ReLU, plain SGD, learning rates 0.1-1, 3 seeds, 150 steps of
    60 examples) trains 27 runs in seconds; more seeds and steps on request.
    """

    activation: str = "relu"
    depth: int = 2
    width: int = 100
    lrs: tuple[float, ...] = (0.1, 0.3, 1.0)
    optimizer: str = "sgd"
    batch_size: int = PAPER_BATCH_SIZE
    seeds: int = 3
    steps: int = 150
    eval_every: int = 15
    eval_examples: int = 1000

    def __post_init__(self):
        check(self.activation in PLACEMENT_ACTIVATIONS, f"activation must be one of {', '.join(PLACEMENT_ACTIVATIONS)}.")
        check(1 <= self.depth <= 8, "Choose 1 to 8 hidden layers.")
        check(4 <= self.width <= 1024, "Layer width must be between 4 and 1,024 units.")
        check(1 <= len(self.lrs) <= len(LR_LADDER), f"Choose 1 to {len(LR_LADDER)} learning rates.")
        check(all(0.0 < lr <= 100.0 and math.isfinite(lr) for lr in self.lrs), "Learning rates must be in (0, 100].")
        check(len(set(self.lrs)) == len(self.lrs), "Each learning rate once, please.")
        check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}.")
        check(2 <= self.batch_size <= 1000, "Batch size must be between 2 and 1,000 (BN needs at least 2 examples).")
        check(2 <= self.seeds <= 10, "Choose 2 to 10 seeds: one seed cannot tell a difference from noise.")
        check(10 <= self.steps <= 20_000, "steps must be between 10 and 20,000.")
        check(1 <= self.eval_every <= self.steps, "eval_every must be between 1 and the number of steps.")
        check(100 <= self.eval_examples <= 10_000, "eval_examples must be between 100 and 10,000.")
        check_view_cost(self, "fewer seeds, learning rates or steps, or narrower or fewer layers")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost((model, self.train_config(lr, seed)) for lr in self.lrs for seed in range(self.seeds) for model in self.models().values())

    @property
    def total_steps(self) -> int:
        return len(self.lrs) * self.seeds * len(LABELS) * self.steps

    @property
    def first_lr(self) -> float:
        """The middle of the sweep: trained first, so the page's default curves fill in first."""
        return sorted(self.lrs)[(len(self.lrs) - 1) // 2]

    def lr_order(self) -> list[float]:
        return [self.first_lr] + [lr for lr in sorted(self.lrs) if lr != self.first_lr]

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return (self.width,) * self.depth

    def models(self) -> dict[str, ModelConfig]:
        base = ModelConfig(hidden=self.hidden_widths, activation=self.activation)
        return {
            "no BN": base,
            "BN before": base.replace(norm="batch", placement="before"),
            "BN after": base.replace(norm="batch", placement="after"),
        }

    def train_config(self, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=lr, optimizer=self.optimizer, seed=seed, eval_every=self.eval_every, eval_examples=self.eval_examples)


@dataclass(frozen=True)
class CellConfig(Config):
    """One (learning rate, seed) of a sweep: its own key in the result store."""

    models: tuple[ModelConfig, ...]
    train: TrainConfig


@dataclass
class Cell:
    """The three runs of one (learning rate, seed), and the check that they started alike.

    ``init_max_difference``: the largest |difference| between the models'
    initial linear weights and biases (0: identical). ``same_batches``: their
    samplers started from the same random state.
    """

    runs: list[TrainResult]
    init_max_difference: float
    same_batches: bool


@dataclass
class PlacementResult:
    config: PlacementConfig
    runs: list[TrainResult]  # every (learning rate, seed, model)
    init_max_difference: float
    same_batches: bool

    def runs_at(self, lr: float, label: str | None = None) -> list[TrainResult]:
        """Runs at ``lr`` (of one model if ``label``), ordered by seed."""
        chosen = [r for r in self.runs if r.train.lr == lr and (label is None or r.label == label)]
        return sorted(chosen, key=lambda r: (LABELS.index(r.label), r.train.seed))

    def final_accuracy(self, lr: float) -> dict[str, np.ndarray]:
        """Full-test-set accuracy per model, one entry per seed (a diverged run keeps what it scores)."""
        return {label: np.array([r.final_test_acc for r in self.runs_at(lr, label)]) for label in LABELS}

    def diverged(self, lr: float) -> dict[str, np.ndarray]:
        return {label: np.array([r.diverged for r in self.runs_at(lr, label)]) for label in LABELS}

    def layer_statistic(self, lr: float, key: str) -> dict[str, np.ndarray]:
        """A :class:`NonlinearityInputs` record at the last evaluation, per model: (seeds, layers)."""
        return {label: np.stack([r.records[key][-1] for r in self.runs_at(lr, label)]) for label in LABELS}

    def verdict(self, lr: float) -> "Verdict":
        return verdict(self.final_accuracy(lr), self.diverged(lr))

    def histograms(self, lr: float) -> dict[str, np.ndarray]:
        """Share of nonlinearity inputs per bin at the last evaluation, per model: (seeds, layers, bins)."""
        return {label: np.stack([r.records["act_input_hist"] for r in self.runs_at(lr, label)]) for label in LABELS}

    @property
    def histogram_edges(self) -> np.ndarray:
        return self.runs[0].records["act_input_hist_edges"]

    def flat_at(self, x: np.ndarray) -> np.ndarray:
        """Whether the activation is flat (saturated or inactive) at each x: :func:`bnviz.unit_stats.is_flat`."""
        return is_flat(ACTIVATIONS[self.config.activation](), torch.as_tensor(x, dtype=torch.float64)).numpy()


def _models_start_alike(runs: Sequence[Run]) -> tuple[float, bool]:
    """Largest initial difference of the runs' linear layers (and head), and whether their samplers agree."""
    largest = 0.0
    reference = runs[0]
    for run in runs[1:]:
        for block, ref_block in zip(run.model.blocks, reference.model.blocks):
            for name in ("weight", "bias"):
                largest = max(largest, (getattr(block.linear, name) - getattr(ref_block.linear, name)).abs().max().item())
        for name in ("weight", "bias"):
            largest = max(largest, (getattr(run.model.head, name) - getattr(reference.model.head, name)).abs().max().item())
    state = reference.sampler.generator.get_state()
    same_batches = all(torch.equal(run.sampler.generator.get_state(), state) for run in runs)
    return largest, same_batches


def train_cell(config: PlacementConfig, lr: float, seed: int, data, progress: ProgressFn | None = None) -> Cell:
    """Train the three models of one (learning rate, seed) side by side."""
    train_cfg = config.train_config(lr, seed)
    runs = [Run(model, train_cfg, data, [NonlinearityInputs()], label=label) for label, model in config.models().items()]
    init_max_difference, same_batches = _models_start_alike(runs)
    return Cell(train_together(runs, progress), init_max_difference, same_batches)


def run(config: PlacementConfig, progress: ProgressFn | None = None, store: ResultStore | None = None) -> PlacementResult:
    """Every (learning rate, seed) cell, from the store or trained; the sweep's middle rate first.

    ``progress``'s partial is the runs at the learning rate being trained or
    read (all its seeds so far), so a live chart shows bands growing.
    """
    store = store if store is not None else ResultStore()
    cells = [(lr, seed) for lr in config.lr_order() for seed in range(config.seeds)]
    data = None
    done: list[Cell] = []
    for index, (lr, seed) in enumerate(cells):
        key = CellConfig(models=tuple(config.models().values()), train=config.train_config(lr, seed))
        earlier = [r for cell in done for r in cell.runs if r.train.lr == lr]

        def cell_progress(fraction, message, partial, index=index, lr=lr, seed=seed, earlier=earlier):
            if progress is not None:
                progress((index + fraction) / len(cells), f"learning rate {lr:g}, seed {seed + 1} of {config.seeds}: {message}", earlier + list(partial))

        def compute(_report, lr=lr, seed=seed, cell_progress=cell_progress):
            nonlocal data
            data = data if data is not None else load_mnist(str(pick_device()))
            return train_cell(config, lr, seed, data, cell_progress)

        done.append(store.get_or_compute("placement-cell", key, compute))
        if progress is not None:
            progress((index + 1) / len(cells), f"learning rate {lr:g}, seed {seed + 1} of {config.seeds}: done", [r for cell in done for r in cell.runs if r.train.lr == lr])
    return PlacementResult(
        config=config,
        runs=[r for cell in done for r in cell.runs],
        init_max_difference=max(cell.init_max_difference for cell in done),
        same_batches=all(cell.same_batches for cell in done),
    )


# ----------------------------------------------------------------------------- verdict
# A placement "wins" only by more than this many accuracy points (beyond the 95% interval):
# half a point is about the seed-to-seed spread of these short runs' final accuracy.
PLACEMENT_MARGIN_POINTS = 0.5


@dataclass(frozen=True)
class PairedDifference:
    """``better`` minus ``worse`` in final accuracy, paired by seed.

    With d_s the difference on seed s (same init, same batches), n seeds:
    ``mean = mean(d)``, ``half_width = t_{0.975, n-1} * std(d, ddof=1) / sqrt(n)``
    (:func:`bnviz.verdicts.paired_interval`; the 95% interval is mean +- half_width).
    ``significant`` when the interval excludes 0. Differences are in accuracy
    (0-1), never negative.
    """

    better: str
    worse: str
    mean: float
    half_width: float
    seeds: int
    significant: bool


def paired_difference(label_a: str, accuracy_a: Sequence[float], label_b: str, accuracy_b: Sequence[float]) -> PairedDifference:
    """Paired t interval of a - b over seeds; the labels come back ordered best first."""
    a, b = np.asarray(accuracy_a, dtype=float), np.asarray(accuracy_b, dtype=float)
    check(a.shape == b.shape and a.ndim == 1 and len(a) >= 1, "Paired accuracies need one value per seed for both models.")
    interval = paired_interval(a - b)
    mean, half_width = interval.mean, interval.half_width
    significant = abs(mean) > half_width if half_width > 0 else mean != 0.0
    if mean < 0:
        label_a, label_b, mean = label_b, label_a, -mean
    return PairedDifference(better=label_a, worse=label_b, mean=mean, half_width=half_width, seeds=interval.seeds, significant=significant)


@dataclass(frozen=True)
class Verdict:
    """Which placement wins and whether it is more than seed-to-seed noise, in words.

    ``judged``: :func:`bnviz.verdicts.judge` of "the leading placement beats
    the other by more than :data:`PLACEMENT_MARGIN_POINTS`"."""

    placement: PairedDifference  # BN before vs BN after
    versus_no_bn: dict[str, PairedDifference]  # each placement vs no BN
    judged: JudgedVerdict
    sentences: list[str] = field(default_factory=list)

    @property
    def winner(self) -> str | None:
        """The placement that wins beyond the noise and the margin, or None."""
        return self.placement.better if self.judged.supported else None

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def _points(accuracy_difference: float) -> str:
    return f"{100 * accuracy_difference:.1f} points"


def verdict(final_accuracy: dict[str, Sequence[float]], diverged: dict[str, Sequence[bool]] | None = None) -> Verdict:
    """The page's verdict, from final accuracies per model (one per seed, paired by seed).

    Pure: the same numbers give the same words. ``final_accuracy`` needs
    "no BN", "BN before" and "BN after"; ``diverged`` (same shape) adds a
    sentence for models whose loss became NaN or infinite. The winner's word
    comes from :func:`bnviz.verdicts.judge` with a margin of
    :data:`PLACEMENT_MARGIN_POINTS`.
    """
    placement = paired_difference("BN before", final_accuracy["BN before"], "BN after", final_accuracy["BN after"])
    versus = {label: paired_difference(label, final_accuracy[label], "no BN", final_accuracy["no BN"]) for label in ("BN before", "BN after")}
    judged = judge(
        f"{placement.better} beats {placement.worse}",
        final_accuracy[placement.better], final_accuracy[placement.worse],
        margin=PLACEMENT_MARGIN_POINTS, unit="points", display_scale=100,
    )
    sentences = []
    if judged.word == SUPPORTED:
        sentences.append(f"**{placement.better}** wins: it beats {placement.worse} by **{_points(placement.mean)}** ({judged.rule})")
    elif placement.mean == 0.0:
        sentences.append("**No difference** between BN before and BN after: they score the same on every seed.")
    elif judged.word == NOT_SUPPORTED:
        sentences.append(f"**No difference beyond the {PLACEMENT_MARGIN_POINTS:g}-point margin** between the placements: {placement.better} leads by {_points(placement.mean)} ({judged.rule})")
    else:
        sentences.append(f"**{judged.label.capitalize()}**: {placement.better} leads by {_points(placement.mean)}, but the interval is wider than the gap ({judged.rule})")
    clauses = []
    for label, diff in versus.items():
        if not diff.significant:
            clauses.append(f"{label} is within the noise of no BN ({diff.better} ahead by {_points(diff.mean)} ± {_points(diff.half_width)})")
        elif diff.better == label:
            clauses.append(f"{label} beats no BN by {_points(diff.mean)} (± {_points(diff.half_width)})")
        else:
            clauses.append(f"{label} trails no BN by {_points(diff.mean)} (± {_points(diff.half_width)})")
    sentences.append("Against the network without BN: " + "; ".join(clauses) + ".")
    if diverged is not None:
        failures = [f"{label} in {int(np.sum(flags))} of {len(flags)}" for label, flags in diverged.items() if np.any(flags)]
        if failures:
            sentences.append("Diverged (loss NaN or infinite) " + ", ".join(failures) + " seeds; a diverged run counts with the accuracy it ends at.")
    return Verdict(placement=placement, versus_no_bn=versus, judged=judged, sentences=sentences)


def summarize(result: PlacementResult) -> dict:
    out = {}
    for lr in sorted(result.config.lrs):
        accuracy = result.final_accuracy(lr)
        out[f"lr={lr:g}"] = {
            **{label: {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0} for label, values in accuracy.items()},
            "verdict": result.verdict(lr).text,
        }
    out["models start alike"] = result.init_max_difference == 0.0 and result.same_batches
    return out


EXPERIMENT = Experiment(
    name="placement",
    title="Before or after the nonlinearity: where to put BN",
    summary="No BN, BN before and BN after the activation, over seeds and a learning-rate sweep, with a paired-seed verdict.",
    config_type=PlacementConfig,
    run=run,
    order=60,
    presets={
        "The paper's sigmoid": PlacementConfig(activation="sigmoid", lrs=(0.3, 1.0, 3.0)),
        "ReLU, more seeds and steps": PlacementConfig(seeds=5, steps=600, eval_every=60),
        "Adam": PlacementConfig(optimizer="adam", lrs=(0.001, 0.003, 0.01)),
    },
    summarize=summarize,
)
