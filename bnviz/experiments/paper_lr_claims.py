"""The paper's ImageNet claims in miniature, on MNIST: larger learning rates and sigmoid.

Ioffe & Szegedy 2015, Sec. 4.2 and Table 2: with BN, Inception trained at 5x
and 30x its learning rate (BN-x5, BN-x30), reached the plain network's
accuracy in 14x fewer steps (BN-x5), and trained with sigmoid nonlinearities
(BN-x5-Sigmoid, 69.8%), which the plain network could not. Here the paper's
MNIST MLP (784-100-100-100-10) is trained with and without BN at the same
learning-rate multipliers, with ReLU and with sigmoid. A run whose loss turns
NaN or infinite is kept as a result marked ``diverged``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import PAPER_HIDDEN, ModelConfig
from ..results import Comparison
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, TrainResult, pick_device, train_together
from . import Experiment

# Table 2: Inception (x1) and BN-Baseline, BN-x5, BN-x30.
PAPER_MULTIPLIERS = (1, 5, 30)
ACTIVATION_CHOICES = ("relu", "sigmoid", "tanh")
NORMS = ("none", "batch")


@dataclass(frozen=True)
class PaperLrClaimsConfig(Config):
    """Every (activation, norm, multiplier) combination, trained side by side.

    ``base_lr`` is the x1 learning rate (plain SGD); each run uses
    ``base_lr * multiplier``. ``multipliers`` must include 1: the plain x1
    network is the yardstick the paper measures speed-ups against.
    """

    steps: int = 500
    base_lr: float = 0.1
    multipliers: tuple[int, ...] = PAPER_MULTIPLIERS
    activations: tuple[str, ...] = ("relu", "sigmoid")
    batch_size: int = PAPER_BATCH_SIZE
    seed: int = 0
    eval_every: int = 25

    def __post_init__(self):
        check(50 <= self.steps <= 20_000, "steps must be between 50 and 20,000.")
        check(1e-4 <= self.base_lr <= 1.0, "the x1 learning rate must be between 0.0001 and 1.")
        check(1 in self.multipliers, "multipliers must include 1 (the baseline every speed-up is measured against).")
        check(all(1 <= m <= 100 for m in self.multipliers) and len(set(self.multipliers)) == len(self.multipliers), "multipliers must be distinct, between 1 and 100.")
        check(1 <= len(self.activations) <= len(ACTIVATION_CHOICES) and all(a in ACTIVATION_CHOICES for a in self.activations), f"activations must be among {', '.join(ACTIVATION_CHOICES)}.")
        check(1 <= self.batch_size <= 1_000, "batch size must be between 1 and 1,000.")
        check(5 <= self.eval_every <= self.steps, "evaluate every 5 steps or more, and at most once per run.")
        check_view_cost(self, "fewer steps, multipliers or activations")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost(self.runs())

    def runs(self) -> list[tuple[str, ModelConfig, TrainConfig]]:
        """(label, model, training) for every combination; labels read like the paper's "BN-x5-Sigmoid"."""
        out = []
        for activation in self.activations:
            for norm in NORMS:
                model = ModelConfig(hidden=PAPER_HIDDEN, activation=activation, norm=norm)
                for multiplier in self.multipliers:
                    train = TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.base_lr * multiplier, seed=self.seed, eval_every=self.eval_every)
                    out.append((run_label(model.label, multiplier, activation), model, train))
        return out


def run_label(model_label: str, multiplier: float, activation: str) -> str:
    return f"{model_label} ×{multiplier:g}, {activation}"


@dataclass
class LrClaimsResult(Comparison):
    """All runs; ``base_lr`` turns a run's learning rate back into its multiplier."""

    base_lr: float = 0.1

    def multiplier(self, run: TrainResult) -> float:
        return round(run.train.lr / self.base_lr, 6)

    def find(self, model_label: str, multiplier: float, activation: str) -> TrainResult:
        return self.by_label(run_label(model_label, multiplier, activation))

    @property
    def activations(self) -> list[str]:
        return list(dict.fromkeys(run.model.activation for run in self.runs))


def run(config: PaperLrClaimsConfig, progress: ProgressFn | None = None) -> LrClaimsResult:
    data = load_mnist(str(pick_device()))
    runs = [Run(model, train, data, label=label) for label, model, train in config.runs()]

    def relay(fraction: float, message: str, partial: list[TrainResult]):
        progress(fraction, message, LrClaimsResult(partial, base_lr=config.base_lr))

    return LrClaimsResult(train_together(runs, relay if progress else None), base_lr=config.base_lr)


# --- what the page and the CLI say, computed from a result --------------------------------


def baseline_activation(result: LrClaimsResult) -> str:
    """The yardstick network's activation: ReLU, as Inception's, when it was trained."""
    return "relu" if "relu" in result.activations else result.activations[0]


def baseline_target(result: LrClaimsResult) -> float:
    """The paper's yardstick: the plain x1 (ReLU) network's final accuracy on the evaluation subset.

    Table 2 counts every model's steps, BN-x5-Sigmoid's included, to Inception's 72.2%.
    """
    return float(result.find("no BN", 1, baseline_activation(result)).test_acc[-1])


def steps_to_target(result: LrClaimsResult, target: float | None = None) -> list[dict]:
    """One row per run: the first evaluated step at which test accuracy reaches the target.

    ``target`` None: :func:`baseline_target` (as Table 2 counts steps to
    Inception's 72.2%). ``status`` is "reached", "not reached" or "diverged"
    (then ``steps`` is None and ``diverged_step`` says when).
    """
    rows = []
    goal = baseline_target(result) if target is None else target
    for run in result.runs:
        activation = run.model.activation
        steps = run.steps_to_accuracy(goal)
        status = "reached" if steps is not None else ("diverged" if run.diverged else "not reached")
        rows.append(
            {
                "run": run.label,
                "model": run.model.label,
                "activation": activation,
                "multiplier": result.multiplier(run),
                "lr": run.train.lr,
                "target": goal,
                "steps": steps,
                "status": status,
                "diverged_step": run.diverged_step,
                "final_test_acc": run.final_test_acc,
            }
        )
    return rows


def speedup(rows: list[dict], activation: str, baseline_activation: str = "relu") -> dict | None:
    """Table 2's "N times fewer steps": the plain x1 (``baseline_activation``) run's steps over
    the fastest ``activation`` BN run's. None when either never reached the target (step 0 counts
    as not learned: the untrained network was already there)."""
    baseline = next(row for row in rows if row["activation"] == baseline_activation and row["model"] == "no BN" and row["multiplier"] == 1)
    bn_reached = [row for row in rows if row["activation"] == activation and row["model"] == "BN" and row["steps"]]
    if not baseline["steps"] or not bn_reached:
        return None
    fastest = min(bn_reached, key=lambda row: (row["steps"], row["multiplier"]))
    return {"baseline_steps": baseline["steps"], "fastest": fastest["run"], "fastest_steps": fastest["steps"], "ratio": baseline["steps"] / fastest["steps"]}


def speedups_by_multiplier(rows: list[dict], activation: str, baseline_activation: str = "relu") -> dict:
    """Table 2's comparison at *each* multiplier: for every ``activation`` BN run, the plain
    x1 (``baseline_activation``) run's steps over its steps (None where either missed the
    target). Returns ``{"baseline_steps": int | None, "by_multiplier": [{"multiplier",
    "run", "steps", "status", "ratio"}, ...]}`` in increasing multiplier."""
    baseline = next(row for row in rows if row["activation"] == baseline_activation and row["model"] == "no BN" and row["multiplier"] == 1)
    by_multiplier = []
    for row in sorted((r for r in rows if r["activation"] == activation and r["model"] == "BN"), key=lambda r: r["multiplier"]):
        ratio = baseline["steps"] / row["steps"] if baseline["steps"] and row["steps"] else None
        by_multiplier.append({"multiplier": row["multiplier"], "run": row["run"], "steps": row["steps"], "status": row.get("status", "reached" if row["steps"] else "not reached"), "ratio": ratio})
    return {"baseline_steps": baseline["steps"], "by_multiplier": by_multiplier}


def divergence_counts(result: LrClaimsResult) -> dict[str, tuple[int, int]]:
    """Per model label ("no BN", "BN"): (runs that diverged, runs trained); one seed per run."""
    counts: dict[str, tuple[int, int]] = {}
    for run in result.runs:
        diverged, total = counts.get(run.model.label, (0, 0))
        counts[run.model.label] = (diverged + int(run.diverged), total + 1)
    return counts


def summarize(result: LrClaimsResult) -> dict:
    rows = steps_to_target(result)
    return {
        "runs": {row["run"]: {"final_test_acc": row["final_test_acc"], "steps_to_target": row["steps"], "status": row["status"]} for row in rows},
        "target": baseline_target(result),
        "speedup": {activation: speedup(rows, activation, baseline_activation(result)) for activation in result.activations},
        "speedup_by_multiplier": {activation: speedups_by_multiplier(rows, activation, baseline_activation(result)) for activation in result.activations},
        "diverged_runs": {label: {"diverged": d, "runs": n} for label, (d, n) in divergence_counts(result).items()},
        "diverged": [run.label for run in result.runs if run.diverged],
    }


def chance_level_runs(result: LrClaimsResult, margin: float = 0.05) -> list[str]:
    """Runs that ended within ``margin`` of guessing (10 classes): "could not train"."""
    return [run.label for run in result.runs if not run.diverged and np.isfinite(run.final_test_acc) and run.final_test_acc < 0.1 + margin]


EXPERIMENT = Experiment(
    name="paper_lr_claims",
    title="The paper's ImageNet claims in miniature: x5 and x30 learning rates, sigmoid",
    summary="The paper's MNIST MLP with and without BN at 1x, 5x and 30x the learning rate, with ReLU and sigmoid; divergence and steps to the plain network's accuracy.",
    config_type=PaperLrClaimsConfig,
    run=run,
    order=21,
    presets={"Longer: 2,000 steps": PaperLrClaimsConfig(steps=2_000, eval_every=100)},  # the page evaluates every 1/20 of the steps
    summarize=summarize,
)
