"""The forward pass that changed my model: ``torch.no_grad()`` does not freeze BN.

A trained BN model is passed once over the test images **in train mode**, as an
evaluation loop that forgot ``model.eval()`` does. ``torch.no_grad()`` stops
autograd from recording the graph; it does not stop ``nn.BatchNorm1d`` from
updating its buffers: in train mode every forward pass still runs::

    running_mean <- (1 - momentum) * running_mean + momentum * batch_mean
    running_var  <- (1 - momentum) * running_var  + momentum * batch_var * m / (m - 1)

(PyTorch's convention, momentum 0.1), so after the pass the running statistics
are those of the last ~1/momentum test batches, and every later eval-mode
prediction uses them. Measured on the same trained weights, per seed:

* the pass under ``torch.no_grad()`` and the same pass without it (the buffers
  end identical: gradients have nothing to do with it);
* the one-line fix, ``model.eval()`` before the pass: the buffers do not move;
* ``pass_over = "one digit at a time"``: the loop that scores each digit
  separately (a per-class accuracy table), which leaves the statistics of the
  last digit's images behind.

**The counter-example**: the from-scratch BN of *Dive into Deep Learning*
(d2l.ai, "Batch Normalization", implementation from scratch) chooses batch or
moving statistics with ``torch.is_grad_enabled()``, not with ``self.training``
(:class:`GradSwitchedBatchNorm`). Under ``no_grad`` it uses the moving
statistics even in train mode (so the pitfall above does not happen to it),
but it ignores ``model.eval()``: a forward pass with gradients enabled uses and
updates batch statistics whatever the mode.

**Forgetting ``model.eval()`` at test time**: accuracy of train-mode
predictions (each test batch normalised with its own statistics) on the first
:data:`SWEEP_EXAMPLES` test images against the test batch size; a batch of 1 is refused by PyTorch in train mode (its
variance over one value is 0/0 in the unbiased update).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import ModelConfig
from ..norms import PYTORCH_DEFAULT_EPS, PYTORCH_DEFAULT_MOMENTUM
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, evaluate, pick_device, train_together
from . import Experiment

PASS_OVER = ("test set", "one digit at a time")
TEST_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1000)
# A running statistic "moved" when it changed by more than this (float32 buffers; 0 when untouched).
STAT_TOLERANCE = 1e-6
# An accuracy change counts when every seed's change is beyond half a percentage point.
ACCURACY_MARGIN = 0.005
SHOWN_UNITS = 10  # first-layer units whose running statistics the page lists
SWEEP_EXAMPLES = 1000  # test images scored in train mode at each test batch size (batch 2: 500 forward passes)


@dataclass(frozen=True)
class ForwardPassConfig(Config):
    """A ReLU MLP with BN before each activation, trained ``steps`` SGD steps at batch 60 for
    seeds 0 .. seeds-1, then passed once over the 10,000 test images in batches of
    ``pass_batch_size`` (``pass_over``: in the test set's order, or digit by digit)."""

    depth: int = 2
    width: int = 100
    steps: int = 300
    lr: float = 0.1
    seeds: int = 3
    pass_over: str = "one digit at a time"
    pass_batch_size: int = 100
    test_batch_sizes: tuple[int, ...] = TEST_BATCH_SIZES

    def __post_init__(self):
        check(1 <= self.depth <= 6, "Choose 1 to 6 hidden layers.")
        check(16 <= self.width <= 512, "Width must be between 16 and 512 units.")
        check(10 <= self.steps <= 5000, "Training steps must be between 10 and 5,000.")
        check(0.0 < self.lr <= 1.0, "The learning rate must be in (0, 1].")
        check(1 <= self.seeds <= 5, "Choose 1 to 5 seeds.")
        check(self.pass_over in PASS_OVER, f"pass_over must be one of: {', '.join(PASS_OVER)}.")
        check(2 <= self.pass_batch_size <= 1000, "The pass's batch size must be between 2 and 1,000 (train-mode BN refuses a batch of 1).")
        check(1 <= len(self.test_batch_sizes) <= 12 and all(1 <= b <= SWEEP_EXAMPLES for b in self.test_batch_sizes), f"Choose 1 to 12 test batch sizes between 1 and {SWEEP_EXAMPLES:,}.")
        check_view_cost(self, "fewer seeds or steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``): one BN model per seed."""
        return training_cost(self.runs())

    def runs(self) -> list[tuple[ModelConfig, TrainConfig]]:
        """What :func:`run` trains: one BN model per seed."""
        return [(self.model(), self.train_config(seed)) for seed in range(self.seeds)]

    def model(self) -> ModelConfig:
        return ModelConfig(hidden=(self.width,) * self.depth, activation="relu", norm="batch")

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=PAPER_BATCH_SIZE, lr=self.lr, seed=seed, eval_every=self.steps, eval_examples=1000)


class GradSwitchedBatchNorm(nn.Module):
    """BN that decides by ``torch.is_grad_enabled()`` (d2l.ai's from-scratch pattern), not by ``self.training``.

    Gradients enabled: normalise with the batch mean and *biased* variance and
    update ``moving = (1 - momentum) * moving + momentum * batch`` (the biased
    variance, as d2l does); disabled: normalise with the moving statistics.
    Shapes: x (B, C); gamma, beta, moving_mean, moving_var (C,).
    """

    def __init__(self, num_features: int, eps: float = PYTORCH_DEFAULT_EPS, momentum: float = PYTORCH_DEFAULT_MOMENTUM):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("moving_mean", torch.zeros(num_features))
        self.register_buffer("moving_var", torch.ones(num_features))

    @classmethod
    def like(cls, layer: nn.BatchNorm1d) -> "GradSwitchedBatchNorm":
        """The same affine parameters and running statistics as a trained ``nn.BatchNorm1d``."""
        new = cls(layer.num_features, layer.eps, layer.momentum).to(layer.weight)  # its device and dtype
        with torch.no_grad():
            new.gamma.copy_(layer.weight)
            new.beta.copy_(layer.bias)
            new.moving_mean.copy_(layer.running_mean)
            new.moving_var.copy_(layer.running_var)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            x_hat = (x - self.moving_mean) / torch.sqrt(self.moving_var + self.eps)
        else:
            mean, var = x.mean(dim=0), ((x - x.mean(dim=0)) ** 2).mean(dim=0)
            x_hat = (x - mean) / torch.sqrt(var + self.eps)
            with torch.no_grad():
                self.moving_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.moving_var.mul_(1 - self.momentum).add_(self.momentum * var)
        return self.gamma * x_hat + self.beta


def with_grad_switched_bn(model: nn.Module) -> nn.Module:
    """A copy of a bnviz MLP whose BN layers are :class:`GradSwitchedBatchNorm` with the same numbers."""
    switched = copy.deepcopy(model)
    for block in switched.blocks:
        block.norm = GradSwitchedBatchNorm.like(block.norm)
    return switched


def running_statistics(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, var) buffers of every BN layer, copied: nn.BatchNorm1d's running_* or d2l's moving_*."""
    stats = []
    for block in model.blocks:
        norm = block.norm
        mean, var = (norm.running_mean, norm.running_var) if hasattr(norm, "running_mean") else (norm.moving_mean, norm.moving_var)
        stats.append((mean.detach().clone(), var.detach().clone()))
    return stats


def largest_change(before, after) -> float:
    """The largest |change| of any running mean or variance, over all BN layers."""
    return max(max((a_m - b_m).abs().max().item(), (a_v - b_v).abs().max().item()) for (b_m, b_v), (a_m, a_v) in zip(before, after))


def pass_batches(x: torch.Tensor, y: torch.Tensor, pass_over: str, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The accidental pass's batches: the test set in order, or digit 0's images, then 1's, ... 9's."""
    if pass_over == "one digit at a time":
        groups = [(x[y == digit], y[y == digit]) for digit in range(10)]
    else:
        groups = [(x, y)]
    return [(gx[s : s + batch_size], gy[s : s + batch_size]) for gx, gy in groups for s in range(0, len(gy), batch_size)]


def accidental_pass(model: nn.Module, batches, train_mode: bool, no_grad: bool) -> float:
    """Run every batch through ``model`` (in place) in the given mode, with or without
    ``torch.no_grad()``, as a test loop does (no optimiser step). Returns the accuracy of the
    predictions made during the pass."""
    model.train(train_mode)
    correct, total = 0, 0
    context = torch.no_grad() if no_grad else torch.enable_grad()
    with context:
        for x, y in batches:
            logits = model(x)
            correct += (logits.argmax(dim=1) == y).sum().item()
            total += len(y)
    model.eval()
    return correct / total


@torch.no_grad()
def train_mode_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, str]:
    """Accuracy of train-mode predictions (each batch of ``batch_size`` normalised by its own
    statistics) on a copy of ``model``; with a batch PyTorch refuses, (NaN, its message)."""
    probe = copy.deepcopy(model).train()
    correct = 0
    try:
        for start in range(0, len(y), batch_size):
            correct += (probe(x[start : start + batch_size]).argmax(dim=1) == y[start : start + batch_size]).sum().item()
    except ValueError as exc:  # "Expected more than 1 value per channel when training, got input size torch.Size([1, 100])"
        return float("nan"), str(exc)
    return correct / len(y), ""


@dataclass
class ForwardPassResult:
    """Per seed (arrays of shape (seeds,)): eval-mode test accuracy before and after each pass,
    and the largest change of any running statistic. ``grad_switched``: rows (layer, mode,
    grad, uses_batch_stats, moved, accuracy_after). ``train_mode_accuracy``: (seeds, sizes)."""

    config: ForwardPassConfig
    accuracy_before: np.ndarray
    accuracy_after: dict  # pass name -> (seeds,)
    stat_change: dict  # pass name -> (seeds,)
    same_buffers_with_and_without_grad: bool
    shown_stats: list[dict]  # seed 0, first layer, first units: before / after the no_grad pass
    grad_switched: list[dict]
    train_mode_accuracy: np.ndarray
    refused_batch_sizes: dict  # batch size -> PyTorch's message
    train_accuracy: np.ndarray  # (seeds,) final training-run test accuracy, for reference

    def change(self, pass_name: str) -> np.ndarray:
        return self.accuracy_after[pass_name] - self.accuracy_before

    def records(self) -> list[dict]:
        return [{"batch_size": b, "seed": s, "accuracy": float(self.train_mode_accuracy[s, i])}
                for s in range(self.train_mode_accuracy.shape[0]) for i, b in enumerate(self.config.test_batch_sizes)]


NO_GRAD_PASS, GRAD_PASS, EVAL_PASS = "train mode, under torch.no_grad()", "train mode, gradients on", "model.eval() first (the fix)"
PASSES = {NO_GRAD_PASS: (True, True), GRAD_PASS: (True, False), EVAL_PASS: (False, True)}  # name -> (train mode, no_grad)


def stats_verdict(result: ForwardPassResult) -> str:
    """"moves under no_grad" when, in every seed, the no_grad train-mode pass changed some running
    statistic by more than STAT_TOLERANCE and the eval-mode pass changed none; else "inconclusive"."""
    moved = np.all(result.stat_change[NO_GRAD_PASS] > STAT_TOLERANCE)
    frozen = np.all(result.stat_change[EVAL_PASS] <= STAT_TOLERANCE)
    return "moves under no_grad" if moved and frozen else "inconclusive"


def accuracy_verdict(change: np.ndarray, margin: float = ACCURACY_MARGIN) -> str:
    """"drops" / "rises" when every seed's accuracy change is beyond ``margin`` the same way,
    "within margin" when every seed's is inside it, else "inconclusive"."""
    change = np.asarray(change, dtype=float)
    if not np.all(np.isfinite(change)):
        return "inconclusive"
    if np.all(change < -margin):
        return "drops"
    if np.all(change > margin):
        return "rises"
    if np.all(np.abs(change) <= margin):
        return "within margin"
    return "inconclusive"


def run(config: ForwardPassConfig, progress: ProgressFn | None = None) -> ForwardPassResult:
    data = load_mnist(str(pick_device()))
    runs = [Run(model, train, data, label=f"BN, seed {train.seed}") for model, train in config.runs()]
    results = train_together(runs, progress)
    if progress is not None:
        progress(1.0, "passing over the test set in train mode", None)
    x, y = data.test_x, data.test_y
    batches = pass_batches(x, y, config.pass_over, config.pass_batch_size)
    seeds = config.seeds
    before = np.zeros(seeds)
    after = {name: np.zeros(seeds) for name in PASSES}
    change = {name: np.zeros(seeds) for name in PASSES}
    same_buffers, shown, switched_rows = True, [], []
    sizes = config.test_batch_sizes
    train_mode = np.zeros((seeds, len(sizes)))
    refused: dict[int, str] = {}
    for seed, run_ in enumerate(runs):
        model = run_.model.eval()
        before[seed] = evaluate(model, x, y)[1]
        original = running_statistics(model)
        buffers = {}
        for name, (as_train, no_grad) in PASSES.items():
            probe = copy.deepcopy(model)
            accidental_pass(probe, batches, as_train, no_grad)
            buffers[name] = running_statistics(probe)
            change[name][seed] = largest_change(original, buffers[name])
            after[name][seed] = evaluate(probe, x, y)[1]
        same_buffers &= all(torch.equal(a_m, b_m) and torch.equal(a_v, b_v) for (a_m, a_v), (b_m, b_v) in zip(buffers[NO_GRAD_PASS], buffers[GRAD_PASS]))
        if seed == 0:
            (mean0, var0), (mean1, var1) = original[0], buffers[NO_GRAD_PASS][0]
            shown = [{"unit": u + 1, "mean_before": float(mean0[u]), "mean_after": float(mean1[u]), "var_before": float(var0[u]), "var_after": float(var1[u])}
                     for u in range(min(SHOWN_UNITS, len(mean0)))]
            for as_train, mode in ((True, "train mode"), (False, "eval mode")):
                for no_grad in (True, False):
                    for layer, make in (("nn.BatchNorm1d", copy.deepcopy), ("d2l's from-scratch BN", with_grad_switched_bn)):
                        probe = make(model)
                        during = accidental_pass(probe, batches, as_train, no_grad)
                        # which statistics the layer used: compare its first batch's output with eval-mode BN's
                        switched_rows.append({"layer": layer, "mode": mode, "no_grad": no_grad,
                                              "moved": largest_change(original, running_statistics(probe)) > STAT_TOLERANCE,
                                              "uses_batch_stats": uses_batch_statistics(make(model), batches[0][0], as_train, no_grad),
                                              "accuracy_during": during, "accuracy_after": evaluate(probe, x, y)[1]})
        for i, size in enumerate(sizes):
            train_mode[seed, i], message = train_mode_accuracy(model, x[:SWEEP_EXAMPLES], y[:SWEEP_EXAMPLES], size)
            if message:
                refused[size] = message
    return ForwardPassResult(config=config, accuracy_before=before, accuracy_after=after, stat_change=change,
                             same_buffers_with_and_without_grad=bool(same_buffers), shown_stats=shown, grad_switched=switched_rows,
                             train_mode_accuracy=train_mode, refused_batch_sizes=refused, train_accuracy=np.array([r.final_test_acc for r in results]))


def uses_batch_statistics(model: nn.Module, x: torch.Tensor, train_mode: bool, no_grad: bool) -> bool:
    """Does ``model``'s first BN layer normalise ``x`` with the batch's own statistics in this mode?
    (Its output then has batch mean beta to float precision; with the running statistics it does not.)"""
    model.train(train_mode)
    norm, linear = model.blocks[0].norm, model.blocks[0].linear
    context = torch.no_grad() if no_grad else torch.enable_grad()
    with context:
        out = norm(linear(x.flatten(1)))
    beta = norm.bias if hasattr(norm, "bias") and isinstance(norm.bias, torch.Tensor) else norm.beta
    return bool((out.detach().mean(dim=0) - beta.detach()).abs().max().item() < 1e-4)


def summarize(result: ForwardPassResult) -> dict:
    return {"accuracy before": result.accuracy_before.round(4).tolist(),
            **{f"after: {name}": result.accuracy_after[name].round(4).tolist() for name in PASSES},
            "largest running-statistic change": {name: result.stat_change[name].round(5).tolist() for name in PASSES},
            "statistics verdict": stats_verdict(result), "accuracy verdict (no_grad pass)": accuracy_verdict(result.change(NO_GRAD_PASS)),
            "train-mode accuracy by test batch size (mean over seeds)": dict(zip(result.config.test_batch_sizes, np.round(result.train_mode_accuracy.mean(axis=0), 4).tolist()))}


DEFAULT = ForwardPassConfig()
EXPERIMENT = Experiment(
    name="forward_pass_pitfall",
    title="The forward pass that changed my model",
    summary="One pass over the test set in train mode, with and without torch.no_grad(): the running statistics move, later accuracy changes; model.eval() is the fix.",
    config_type=ForwardPassConfig,
    run=run,
    order=65,
    presets={"Whole test set, in order": DEFAULT.replace(pass_over="test set"), "Per-digit loop, batches of 10": DEFAULT.replace(pass_batch_size=10)},
    summarize=summarize,
)
