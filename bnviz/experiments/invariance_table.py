"""The invariance table of Layer Normalization (Ba et al. 2016, arXiv 1607.06450, Table 1), measured.

Ba et al. list, for batch, weight and layer normalization, which
transformations of a layer's weights or of the data leave the *normalized
layer's output* unchanged. RMSNorm (Zhang & Sennrich 2019) is measured beside
LayerNorm: it divides by the root mean square without subtracting the mean, so
weight matrix re-centering (the same shift added to every unit's input) changes
it. Here each cell is measured on a real network (the
paper's MLP, 784-100-100-100-10, freshly initialised or trained): the output
of the first hidden layer's norm, ``y = norm(W x + b)`` (BN: gamma, beta and
per-unit statistics; LayerNorm: per-example statistics over the 100 units; no
norm: ``W x + b`` itself), for a batch of test images, before and after one
transformation of that layer's ``W`` or of the images:

* weight matrix re-scaling ``W' = delta W``; re-centering ``W' = W + 1 g^T``
  (the same vector g added to every unit's incoming weights);
* weight vector re-scaling: one unit's incoming weights ``w_k' = delta w_k``;
* dataset re-scaling ``x' = delta x`` and re-centering ``x' = x + c`` for every image;
* single training case re-scaling: one image ``x_0' = delta x_0``.

A cell is *invariant* when the largest change of any output over the whole
batch, relative to the largest output, stays below :data:`INVARIANCE_TOLERANCE`.
The computation runs in float64, so what remains of an invariant cell is the
``eps`` inside ``sqrt(var + eps)`` (``sqrt(delta^2 var + eps)`` is not exactly
``delta sqrt(var + eps)``), not rounding.

BN's invariances hold in **train mode**, where each batch is normalised with
its own statistics (the batch of images measured here). In **eval mode** BN is
a fixed affine map per unit (running statistics), and no transformation cancels:
the eval-mode row sets the running statistics to the batch's own before the
transformation (so both modes agree until something changes).
Ba et al.'s analysis has no bias before the normalization (their bias is the
beta after it); with PyTorch's default ``nn.Linear`` bias some LayerNorm cells
change (the bias does not scale with W or x). ``linear_bias`` switches it on.
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
from ..models import PAPER_HIDDEN, ModelConfig, build_model
from ..norms import PYTORCH_DEFAULT_EPS
from ..train import ProgressFn, Run, TrainConfig, pick_device, train_together
from . import Experiment

TRANSFORMS = (
    "weight matrix re-scaling",
    "weight matrix re-centering",
    "weight vector re-scaling",
    "dataset re-scaling",
    "dataset re-centering",
    "single training case re-scaling",
)
ROWS = ("BN, train mode", "BN, eval mode", "LayerNorm", "RMSNorm", "no norm")
ROW_NORMS = {"BN, train mode": "batch", "BN, eval mode": "batch", "LayerNorm": "layer", "RMSNorm": "rms", "no norm": "none"}
# Ba et al. 2016, Table 1 ("invariant" = True), in the order of TRANSFORMS. Their BN is BN as trained
# (batch statistics); they have no row for BN in eval mode, RMSNorm (Zhang & Sennrich 2019, later) or no normalization.
BA_ET_AL_TABLE_1 = {
    "BN, train mode": (True, False, True, True, True, False),
    "LayerNorm": (True, True, False, True, False, True),
}
BA_ET_AL_WEIGHT_NORM = (True, False, True, False, False, False)  # their third row, not measured here
# Largest relative change of an invariant cell: float64 rounding is ~1e-15; eps = 1e-5 inside
# sqrt(var + eps) leaves ~1e-5 at delta = 2; a transformation that matters changes outputs by > 1e-2.
INVARIANCE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class InvarianceConfig(Config):
    """``delta``: every re-scaling factor; ``shift``: size of the re-centering vectors (in units of
    the pixels' standard deviation for the data, of the weights' for g). ``trained_steps`` 0 is a fresh network."""

    delta: float = 2.0
    shift: float = 1.0
    linear_bias: bool = False
    eps: float = PYTORCH_DEFAULT_EPS
    batch: int = 256
    trained_steps: int = 0
    unit: int = 0
    example: int = 0
    seed: int = 0

    def __post_init__(self):
        check(0.01 <= self.delta <= 100 and self.delta != 1.0, "The re-scaling factor delta must be in [0.01, 100] and not 1.")
        check(0.0 < self.shift <= 100, "The re-centering size must be in (0, 100].")
        check(0.0 < self.eps <= 1.0, "eps must be in (0, 1]: torch's train-mode BN refuses eps = 0.")
        check(2 <= self.batch <= 10_000, "The batch needs 2 to 10,000 test images (BN's train mode needs two).")
        check(0 <= self.trained_steps <= 5000, "Training steps: 0 (fresh) to 5,000.")
        check(0 <= self.unit < PAPER_HIDDEN[0], f"unit must be one of the first layer's {PAPER_HIDDEN[0]} units.")
        check(0 <= self.example < self.batch, "example must be one of the batch's images.")
        check_view_cost(self, "fewer training steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost((self.model_config(norm), TrainConfig(steps=self.trained_steps)) for norm in ("batch", "layer", "none")) if self.trained_steps else 0.0

    def model_config(self, norm: str) -> ModelConfig:
        return ModelConfig(hidden=PAPER_HIDDEN, activation="sigmoid", norm=norm, bn_eps=self.eps)


@dataclass
class InvarianceResult:
    """``cells``: one dict per (row, transform): max_abs_diff, relative_diff, invariant, claimed (None: no claim)."""

    config: InvarianceConfig
    cells: list[dict]
    output_scale: dict  # row -> max |output| before any transformation

    def cell(self, row: str, transform: str) -> dict:
        return next(c for c in self.cells if c["row"] == row and c["transform"] == transform)

    def agreement(self) -> tuple[int, int]:
        """(cells that agree with Ba et al., cells they make a claim about)."""
        claimed = [c for c in self.cells if c["claimed"] is not None]
        return sum(c["claimed"] == c["invariant"] for c in claimed), len(claimed)


def transformed(transform: str, weight: torch.Tensor, x: torch.Tensor, config: InvarianceConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', x')`` after ``transform``. Shapes: ``weight`` (K, D), ``x`` (B, D). The random vectors
    (g for the weights, c for the data) are drawn from ``config.seed``."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    g = torch.randn(weight.shape[1], generator=generator, dtype=torch.float64).to(weight) * config.shift * weight.std()
    c = torch.randn(x.shape[1], generator=generator, dtype=torch.float64).to(x) * config.shift
    weight, x = weight.clone(), x.clone()
    if transform == "weight matrix re-scaling":
        weight *= config.delta
    elif transform == "weight matrix re-centering":
        weight += g[None, :]
    elif transform == "weight vector re-scaling":
        weight[config.unit] *= config.delta
    elif transform == "dataset re-scaling":
        x *= config.delta
    elif transform == "dataset re-centering":
        x += c[None, :]
    elif transform == "single training case re-scaling":
        x[config.example] *= config.delta
    else:
        raise ValueError(transform)
    return weight, x


@torch.no_grad()
def layer_output(model: nn.Module, weight: torch.Tensor, x: torch.Tensor, train_mode: bool) -> torch.Tensor:
    """The first hidden layer's norm output ``norm(x W^T + b)`` for the batch ``x`` (B, D), with weights ``weight``.

    Runs the model's own modules on a copy (train-mode BN would update the running statistics).
    """
    block = copy.deepcopy(model.blocks[0])
    block.linear.weight.copy_(weight)
    block.train(train_mode)
    return block.norm(block.linear(x))


def run(config: InvarianceConfig, progress: ProgressFn | None = None) -> InvarianceResult:
    device = pick_device()
    data = load_mnist(str(device))
    norms = ("batch", "layer", "rms", "none")
    if config.trained_steps:
        runs = [Run(config.model_config(n), TrainConfig(steps=config.trained_steps, seed=config.seed, eval_every=config.trained_steps), data) for n in norms]
        train_together(runs, progress)
        models = {n: r.model for n, r in zip(norms, runs)}
    else:
        models = {n: build_model(config.model_config(n), config.seed, device) for n in norms}
    if progress:
        progress(1.0, "transforming weights and data", None)
    x = data.test_x[: config.batch].flatten(1).double()
    cells, scale = [], {}
    for row in ROWS:
        model = copy.deepcopy(models[ROW_NORMS[row]]).double()
        if not config.linear_bias:
            with torch.no_grad():
                model.blocks[0].linear.bias.zero_()
        train_mode = row != "BN, eval mode"
        weight = model.blocks[0].linear.weight.detach()
        if row == "BN, eval mode":
            # running statistics = this batch's own (biased variance), so eval equals train mode before any transformation
            with torch.no_grad():
                inputs = model.blocks[0].linear(x)
                model.blocks[0].norm.running_mean.copy_(inputs.mean(dim=0))
                model.blocks[0].norm.running_var.copy_(inputs.var(dim=0, unbiased=False))
        before = layer_output(model, weight, x, train_mode)
        scale[row] = float(before.abs().max())
        claims = BA_ET_AL_TABLE_1.get(row)
        for t, transform in enumerate(TRANSFORMS):
            new_weight, new_x = transformed(transform, weight, x, config)
            after = layer_output(model, new_weight, new_x, train_mode)
            difference = float((after - before).abs().max())
            relative = difference / scale[row]
            cells.append({"row": row, "transform": transform, "max_abs_diff": difference, "relative_diff": relative,
                          "invariant": relative < INVARIANCE_TOLERANCE, "claimed": None if claims is None else claims[t]})
    return InvarianceResult(config=config, cells=cells, output_scale=scale)


def summarize(result: InvarianceResult) -> dict:
    agree, claimed = result.agreement()
    return {"agree_with_ba_et_al": f"{agree} of {claimed}",
            "cells": {f"{c['row']} / {c['transform']}": ("invariant" if c["invariant"] else "changes", c["relative_diff"]) for c in result.cells}}


EXPERIMENT = Experiment(
    name="invariance_table",
    title="Invariance table of BN and LayerNorm (Ba et al. 2016, Table 1)",
    summary="Re-scale/re-center weights, one unit's weights, the data, one example: which normalized outputs stay the same, measured.",
    config_type=InvarianceConfig,
    run=run,
    order=41,
    presets={"PyTorch's Linear bias": InvarianceConfig(linear_bias=True), "Trained 300 steps": InvarianceConfig(trained_steps=300)},
    summarize=summarize,
)
