"""BN at initialization in deep plain networks: the gradient grows with every layer.

Yang et al. 2019 ("A Mean Field Theory of Batch Normalization", ICLR 2019,
arXiv 1902.08129) show that in a deep fully connected network with BN in every
layer and no skip connections, the gradient grows exponentially with depth at
initialization, whatever the weights' scale. Measured here with no training at
all: one batch of MNIST test images through freshly initialised MLPs of
``depth`` hidden layers (``width`` units), one backward pass of the mean
cross-entropy, and the gradient's norm at each hidden layer's output::

    g_l = || dL / dh_l ||_F        h_l: (B, width), the output of hidden layer l

for three variants, the same weights where they share them:

* **no BN**: ``h_l = relu(W_l h_{l-1})``;
* **BN**: ``h_l = relu(BN(W_l h_{l-1}))`` (train mode: batch statistics, gamma 1, beta 0);
* **SkipInit** (De & Smith 2020, arXiv 2002.10444): no normalization, a residual
  branch scaled by a learnable scalar initialised to 0,
  ``h_l = h_{l-1} + alpha_l * relu(W_l h_{l-1})``, ``alpha_l = 0``. At
  initialization every block is the identity, so the gradient reaches every
  layer unchanged.

Weights are He-normal (``N(0, 2 / fan_in)``, biases 0), the scale that keeps a
plain ReLU network's signal steady; BN does not care about the scale. The first
layer maps 784 pixels to ``width`` units in every variant.

The **growth factor per layer** is read from the deepest network as the
geometric mean ratio between consecutive layers' gradient norms, going back
towards the input, over hidden layers 2..L (layer 1's input is the image)::

    growth = (g_2 / g_L) ** (1 / (L - 2))

A back-of-the-envelope version of Yang et al.'s result for ReLU (K. Luther,
"Why BatchNorm causes exploding gradients", 2020): BN divides the backward
signal by the batch standard deviation of its input, and after ReLU that is
``sqrt((pi - 1) / pi)`` of the weights' scale, so the gradient norm grows by
``sqrt(pi / (pi - 1)) ~ 1.21`` per layer (:data:`RELU_BN_GROWTH_ESTIMATE`).
Yang et al.'s own statement of the rate was not checked for this page; the page
shows the estimate as that blog post's, beside the measurement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..budget import check_view_memory
from ..config import Config, check
from ..data import NUM_CLASSES, load_mnist
from ..train import ProgressFn, pick_device
from . import Experiment

VARIANTS = ("no BN", "BN", "SkipInit")
DEPTHS = (2, 5, 10, 20, 30, 50)
MAX_DEPTH = 50
# K. Luther 2020 (blog post), the large-width, large-batch estimate for ReLU + BN: 1 / sqrt((pi - 1) / pi)
RELU_BN_GROWTH_ESTIMATE = math.sqrt(math.pi / (math.pi - 1))
# A growth factor is "above 1" / "about 1" when every seed is beyond / within this margin of 1.
GROWTH_MARGIN = 0.05


@dataclass(frozen=True)
class InitGradientsConfig(Config):
    """MLPs of each depth in ``depths`` (hidden layers of ``width`` ReLU units), one batch of
    ``batch_size`` test images, seeds 0 .. seeds-1 (a seed draws the weights and the batch)."""

    depths: tuple[int, ...] = DEPTHS
    width: int = 128
    batch_size: int = 128
    seeds: int = 3

    def __post_init__(self):
        check(1 <= len(self.depths) <= 12 and all(2 <= d <= MAX_DEPTH for d in self.depths), f"Choose 1 to 12 depths between 2 and {MAX_DEPTH} hidden layers.")
        check(tuple(sorted(set(self.depths))) == tuple(self.depths), "List the depths once each, in increasing order.")
        check(self.depths[-1] >= 3, "The deepest network needs at least 3 hidden layers (the growth factor is read over layers 2..L).")
        check(16 <= self.width <= 1024, "Width must be between 16 and 1,024 units.")
        check(2 <= self.batch_size <= 1000, "The batch needs 2 to 1,000 images (BN's batch statistics need two).")
        check(1 <= self.seeds <= 10, "Choose 1 to 10 seeds.")
        check_view_memory(view_memory_bytes(self), "fewer units, a smaller batch or a shallower deepest network")

    def cost(self) -> float:
        """Nothing is trained: one forward and backward pass per network."""
        return 0.0


class DeepChain(nn.Module):
    """``depth`` hidden layers of ``width`` ReLU units in one of :data:`VARIANTS`, then a linear head.

    Input (B, 784); ``forward`` returns the logits (B, 10) and every hidden layer's
    output h_l (B, width), for :func:`layer_gradient_norms` to hook.
    """

    def __init__(self, variant: str, depth: int, width: int, in_features: int = 784):
        super().__init__()
        self.variant = variant
        widths = [in_features] + [width] * depth
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(width) if variant == "BN" else nn.Identity() for _ in range(depth))
        # SkipInit: one scalar per residual branch, 0 at initialization (the first layer changes width: no skip)
        self.alphas = nn.Parameter(torch.zeros(depth)) if variant == "SkipInit" else None
        self.head = nn.Linear(width, NUM_CLASSES)
        for linear in self.linears:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")

    def layer(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Hidden layer ``index``'s output h_{index+1} from its input h_index (h_0 = the images)."""
        branch = torch.relu(self.norms[index](self.linears[index](x)))
        return x + self.alphas[index] * branch if self.alphas is not None and index > 0 else branch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = []
        for index in range(len(self.linears)):
            x = self.layer(index, x)
            hidden.append(x)
        return self.head(x), hidden


def layer_gradient_norms(variant: str, depth: int, width: int, x: torch.Tensor, y: torch.Tensor, seed: int) -> np.ndarray:
    """``g_l = ||dL/dh_l||_F`` for l = 1..depth (shape (depth,)) of a fresh :class:`DeepChain`
    with weights from ``seed``, L the mean cross-entropy of the batch ``(x, y)``, in float32 (the
    norms of BN's exploding gradients stay far inside its range: ~1.2^50 = 10^4; float64 held twice
    the memory, 0.2 GB of weights and inputs at 50 x 512 units x 512 images)."""
    torch.manual_seed(seed)
    model = DeepChain(variant, depth, width, x.shape[1]).train().requires_grad_(False)
    # A forward pass with no graph that keeps each layer's input, then back one layer at a time,
    # rebuilding only that layer's graph from its input: the same ops as one backward pass
    # through the whole network (tested), with one layer's saved tensors alive at a time instead
    # of every layer's. At 50 layers of 512 units and a batch of 512 the peak falls from ~0.5 GB
    # (in float64) to the weights and the 51 kept inputs, ~0.1 GB (view_memory_bytes bounds it).
    hidden = [x.float()]
    with torch.no_grad():
        for index in range(depth):
            hidden.append(model.layer(index, hidden[-1]))
    norms = np.empty(depth)
    with torch.enable_grad():
        last = hidden.pop().requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model.head(last), y), last)
        for index in reversed(range(depth)):  # grad is dL/dh_{index+1}
            norms[index] = grad.norm().item()
            if index == 0:
                break
            inputs = hidden.pop().requires_grad_(True)
            # The vector-Jacobian product as the gradient of a scalar: torch.autograd.grad with a
            # grad_outputs tensor imports torch.fx's symbolic shapes and with them sympy (~35 MiB
            # resident, ~1 s, for the rest of the process). The backward of sum(h * grad) hands
            # exactly ``grad`` to the layer's backward (1 * grad), so the numbers are the same.
            (grad,) = torch.autograd.grad((model.layer(index, inputs) * grad).sum(), inputs)
    return norms


# Measured peak over the tensors counted: +164 MiB at 50 x 512 units x 512 images (CPU torch,
# one process) against 111 MiB of tensors; the 1 MB blocks come from malloc's heaps.
ALLOCATOR_OVERHEAD = 1.5


def view_memory_bytes(config: "InitGradientsConfig") -> int:
    """What one computation of ``config`` holds at its peak, in float32: the deepest network's
    weights and its kept layer inputs, plus one layer's graph (its linear, norm and ReLU outputs
    and their gradients)."""
    depth, width, batch = config.depths[-1], config.width, config.batch_size
    weights = 784 * width + (depth - 1) * width * width + width * NUM_CLASSES
    activations = batch * 784 + (depth + 1) * batch * width + 8 * batch * width
    return int(ALLOCATOR_OVERHEAD * 4 * (weights + activations))


def growth_factor(norms: np.ndarray) -> float:
    """``(g_2 / g_L) ** (1 / (L - 2))``: the gradient's mean growth per layer towards the input."""
    return float((norms[1] / norms[-1]) ** (1.0 / (len(norms) - 2)))


@dataclass
class InitGradientsResult:
    """``norms[variant][depth]``: (seeds, depth) gradient norms per hidden layer;
    ``growth[variant]``: (seeds,) growth factor per layer of the deepest network."""

    config: InitGradientsConfig
    norms: dict
    growth: dict

    @property
    def deepest(self) -> int:
        return self.config.depths[-1]

    def first_to_last(self, variant: str, depth: int) -> np.ndarray:
        """(seeds,) ``g_1 / g_L``: how much larger the gradient is at the first layer than at the last."""
        norms = self.norms[variant][depth]
        return norms[:, 0] / norms[:, -1]

    def records(self) -> list[dict]:
        rows = []
        for variant in VARIANTS:
            for depth in self.config.depths:
                for seed, values in enumerate(self.norms[variant][depth]):
                    rows += [{"model": variant, "depth": depth, "seed": seed, "layer": l + 1, "gradient_norm": float(v)} for l, v in enumerate(values)]
        return rows


def growth_verdict(growth: np.ndarray, margin: float = GROWTH_MARGIN) -> str:
    """"grows" if every seed's growth factor is above 1 + margin, "flat" if every seed's is
    within margin of 1, "shrinks" if every seed's is below 1 - margin, else "inconclusive"."""
    growth = np.asarray(growth, dtype=float)
    if not np.all(np.isfinite(growth)):
        return "inconclusive"
    if np.all(growth > 1 + margin):
        return "grows"
    if np.all(np.abs(growth - 1) <= margin):
        return "flat"
    if np.all(growth < 1 - margin):
        return "shrinks"
    return "inconclusive"


def run(config: InitGradientsConfig, progress: ProgressFn | None = None) -> InitGradientsResult:
    data = load_mnist(str(pick_device()))
    norms = {variant: {} for variant in VARIANTS}
    for d, depth in enumerate(config.depths):
        if progress is not None:
            progress(d / len(config.depths), f"{depth} layers", None)
        for variant in VARIANTS:
            rows = []
            for seed in range(config.seeds):
                batch = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(seed))[: config.batch_size].to(data.test_y.device)
                x, y = data.test_x[batch].flatten(1).cpu(), data.test_y[batch].cpu()
                rows.append(layer_gradient_norms(variant, depth, config.width, x, y, seed))
            norms[variant][depth] = np.stack(rows)
    if progress is not None:
        progress(1.0, "done", None)
    deepest = config.depths[-1]
    growth = {variant: np.array([growth_factor(row) for row in norms[variant][deepest]]) for variant in VARIANTS}
    return InitGradientsResult(config=config, norms=norms, growth=growth)


def summarize(result: InitGradientsResult) -> dict:
    return {f"{variant}: growth per layer ({result.deepest} layers)": {"per seed": result.growth[variant].round(4).tolist(), "verdict": growth_verdict(result.growth[variant])}
            for variant in VARIANTS} | {"estimate sqrt(pi/(pi-1))": RELU_BN_GROWTH_ESTIMATE}


EXPERIMENT = Experiment(
    name="init_gradients",
    title="BN at initialization in deep plain networks",
    summary="Gradient norm per layer at initialization for deep ReLU MLPs: BN without skips (grows per layer), no BN, SkipInit.",
    config_type=InitGradientsConfig,
    run=run,
    order=66,
    presets={"Wide and large batch (512 units, 512 images)": InitGradientsConfig(width=512, batch_size=512), "Batch of 8": InitGradientsConfig(batch_size=8)},
    summarize=summarize,
)
