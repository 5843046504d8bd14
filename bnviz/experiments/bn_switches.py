"""The textbook's BN exercises as switches: take one part of BN away, train the same model, compare.

The same ReLU MLP (BN before each activation, PyTorch's defaults) is trained
for seeds 0 .. seeds-1 with one switch at a time, each seed from the same
initial weights on the same batches as full BN:

* **mean-only BN**: ``y = gamma * (x - mu_B) + beta`` (no division by the batch std);
* **variance-only BN**: ``y = gamma * x / sqrt(sigma_B^2 + eps) + beta`` (no centring;
  sigma_B^2 is still the variance about the batch mean);
* **frozen gamma = 1, beta = 0**: BN's affine parameters not trained;
* **BN in the first layer only**: the other layers have none;
* **no linear bias**: the bias before BN removed (BN's mean subtraction cancels it anyway);
* **dropout before BN** (Li et al. 2019, "Understanding the Disharmony between
  Dropout and Batch Normalization by Variance Shift"): dropout with rate
  :data:`DROPOUT_RATE` on each hidden block's input. In train mode BN's running
  variance is gathered with dropout on; at test time dropout is off and the
  variance BN sees shifts. Measured per BN layer after training as
  ``mean_units(running_var) / mean_units(Var_test[x])`` on the test images in eval mode;
* **only gamma/beta trained** (Frankle et al. 2020, "Training BatchNorm and Only
  BatchNorm"): every linear weight and bias (the output layer too) frozen at its
  random initial value.

A switch is applied by :class:`ApplySwitch` when the run attaches its recorders
(after the optimiser is built on the same parameter objects, before the first
evaluation); these runs take the trainer's autograd path (``accelerate=False``),
whose step follows the modules as they are. The verdict per switch is paired by
seed against full BN (:func:`paired_verdict`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import ModelConfig
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, TrainResult, evaluate, pick_device, train_together
from . import Experiment

FULL_BN = "full BN"
SWITCHES = (FULL_BN, "mean-only BN", "variance-only BN", "frozen γ = 1, β = 0", "BN in the first layer only", "no linear bias",
            "dropout before BN", "only γ/β trained", "no BN")
DROPOUT_RATE = 0.5
MARGIN = 0.01  # one percentage point, every seed the same way


class PartialBatchNorm(nn.Module):
    """BN with only one of its two steps, around an existing ``nn.BatchNorm1d`` (same parameters and
    buffers, so the optimiser built on them trains them). ``keep``: "mean" or "variance".

    Train mode: mean-only ``gamma * (x - mu_B) + beta``; variance-only ``gamma * x / sqrt(sigma_B^2 + eps) + beta``
    (biased sigma_B^2), and the running statistics updated as torch's BN does. Eval mode: the
    running ones in their place. Shapes: x (B, C) -> (B, C).
    """

    def __init__(self, layer: nn.BatchNorm1d, keep: str):
        super().__init__()
        self.layer, self.keep = layer, keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if self.training:
            mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
            with torch.no_grad():
                m = x.shape[0]
                layer.running_mean.mul_(1 - layer.momentum).add_(layer.momentum * mean)
                layer.running_var.mul_(1 - layer.momentum).add_(layer.momentum * var * m / max(m - 1, 1))
        else:
            mean, var = layer.running_mean, layer.running_var
        y = x - mean if self.keep == "mean" else x / torch.sqrt(var + layer.eps)
        return layer.weight * y + layer.bias


class ApplySwitch:
    """A recorder whose ``attach`` applies one of :data:`SWITCHES` to a fresh bnviz MLP, in place."""

    def __init__(self, switch: str):
        self.switch = switch

    def attach(self, model: nn.Module) -> None:
        switch, blocks = self.switch, model.blocks
        if switch in ("mean-only BN", "variance-only BN"):
            for block in blocks:
                block.norm = PartialBatchNorm(block.norm, "mean" if switch == "mean-only BN" else "variance")
        elif switch == "frozen γ = 1, β = 0":
            for block in blocks:
                block.norm.weight.requires_grad_(False)
                block.norm.bias.requires_grad_(False)
        elif switch == "BN in the first layer only":
            for block in blocks[1:]:
                block.norm = nn.Identity()
        elif switch == "no linear bias":
            with torch.no_grad():
                for block in blocks:
                    block.linear.bias.zero_()
                    block.linear.bias.requires_grad_(False)
        elif switch == "dropout before BN":
            for block in blocks[1:]:  # each hidden block's input (not the pixels)
                block.linear = nn.Sequential(nn.Dropout(DROPOUT_RATE), block.linear)
        elif switch == "only γ/β trained":
            for module in list(blocks) + [model.head]:
                for param in (module.linear.parameters() if module is not model.head else module.parameters()):
                    param.requires_grad_(False)


@dataclass(frozen=True)
class SwitchesConfig(Config):
    """``depth`` hidden layers of ``width`` ReLU units, ``steps`` SGD steps at batch 60 and ``lr``,
    seeds 0 .. seeds-1, every switch in ``switches``."""

    depth: int = 3
    width: int = 100
    steps: int = 300
    lr: float = 0.1
    seeds: int = 3
    switches: tuple[str, ...] = SWITCHES

    def __post_init__(self):
        check(2 <= self.depth <= 6, "Choose 2 to 6 hidden layers (one switch keeps BN in the first only).")
        check(16 <= self.width <= 512, "Width must be between 16 and 512 units.")
        check(10 <= self.steps <= 5000, "Training steps must be between 10 and 5,000.")
        check(0.0 < self.lr <= 2.0, "The learning rate must be in (0, 2].")
        check(2 <= self.seeds <= 5, "Choose 2 to 5 seeds (the verdict is paired by seed).")
        check(FULL_BN in self.switches and all(s in SWITCHES for s in self.switches), f"switches are some of: {', '.join(SWITCHES)} (full BN always).")
        check_view_cost(self, "fewer seeds or steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``): full BN and every switch, per seed."""
        return training_cost(self.runs())

    def runs(self) -> list[tuple[tuple[str, int], ModelConfig, TrainConfig]]:
        """What :func:`run` trains, ``((switch, seed), model, training)``: every switch at each seed."""
        return [((switch, seed), self.model(switch), self.train_config(seed)) for switch in self.switches for seed in range(self.seeds)]

    def model(self, switch: str) -> ModelConfig:
        return ModelConfig(hidden=(self.width,) * self.depth, activation="relu", norm="none" if switch == "no BN" else "batch")

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=PAPER_BATCH_SIZE, lr=self.lr, seed=seed, eval_every=max(self.steps // 10, 1), eval_examples=1000)


@dataclass
class SwitchesResult:
    """``accuracy[switch]``: (seeds,) final test accuracy; ``runs[(switch, seed)]``;
    ``variance_shift``: (seeds, depth - 1) running_var / test variance of the dropout model's BN inputs."""

    config: SwitchesConfig
    runs: dict
    accuracy: dict
    variance_shift: np.ndarray | None

    def records(self) -> list[dict]:
        return [{"switch": s, "seed": seed, "accuracy": float(a)} for s, values in self.accuracy.items() for seed, a in enumerate(values)]


def paired_verdict(accuracy: np.ndarray, reference: np.ndarray, margin: float = MARGIN) -> str:
    """Against full BN, seed by seed: "worse" / "better" when every seed's difference is beyond
    ``margin`` the same way, "within margin" when every seed's is inside it; a diverged (NaN) seed
    or anything else: "inconclusive"."""
    difference = np.asarray(accuracy, dtype=float) - np.asarray(reference, dtype=float)
    if not np.all(np.isfinite(difference)):
        return "inconclusive"
    if np.all(difference < -margin):
        return "worse"
    if np.all(difference > margin):
        return "better"
    if np.all(np.abs(difference) <= margin):
        return "within margin"
    return "inconclusive"


@torch.no_grad()
def variance_shift(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Per BN layer after the first: ``mean(running_var) / mean(Var[input])`` with the input measured in
    eval mode (dropout off) on ``x``: Li et al.'s train/test variance shift (1 = none)."""
    captured = []
    handles = [block.norm.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0])) for block in model.blocks[1:]]
    try:
        model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return np.array([float(block.norm.running_var.mean() / values.var(dim=0).mean()) for block, values in zip(model.blocks[1:], captured)])


def run(config: SwitchesConfig, progress: ProgressFn | None = None) -> SwitchesResult:
    data = load_mnist(str(pick_device()))
    planned = config.runs()
    keys = [key for key, _model, _train in planned]
    runs = [Run(model, train, data, recorders=[ApplySwitch(switch)], label=f"{switch}, seed {seed}", accelerate=False)
            for (switch, seed), model, train in planned]
    results = dict(zip(keys, train_together(runs, progress)))
    accuracy = {switch: np.array([np.nan if results[(switch, s)].diverged else results[(switch, s)].final_test_acc for s in range(config.seeds)])
                for switch in config.switches}
    shift = None
    if "dropout before BN" in config.switches:
        shift = np.stack([variance_shift(run_.model, data.test_x[:2000]) for run_, key in zip(runs, keys) if key[0] == "dropout before BN"])
    return SwitchesResult(config=config, runs=results, accuracy=accuracy, variance_shift=shift)


def summarize(result: SwitchesResult) -> dict:
    reference = result.accuracy[FULL_BN]
    out = {switch: {"mean accuracy": round(float(np.nanmean(values)), 4), "vs full BN": paired_verdict(values, reference)} for switch, values in result.accuracy.items()}
    if result.variance_shift is not None:
        out["dropout variance shift per layer"] = result.variance_shift.mean(axis=0).round(3).tolist()
    return out


DEFAULT = SwitchesConfig()
EXPERIMENT = Experiment(
    name="bn_switches",
    title="The textbook's BN exercises as switches",
    summary="Mean-only, variance-only, frozen γ/β, BN in one layer, no bias, dropout before BN, only γ/β trained: each against full BN over seeds.",
    config_type=SwitchesConfig,
    run=run,
    order=67,
    presets={"Learning rate 1": DEFAULT.replace(lr=1.0), "Longer training (2,000 steps)": DEFAULT.replace(steps=2000)},
    summarize=summarize,
)
