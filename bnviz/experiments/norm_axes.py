"""Which values share one mean and variance: BN, LayerNorm, InstanceNorm, GroupNorm.

Every one of these layers computes ``x_hat = (x - mu_S) / sqrt(sigma_S^2 + eps)``
where ``S`` is the set of values the element belongs to; they differ only in
how a tensor is cut into sets. Here each cut is written as an integer *set id*
per element (elements with the same id share one mean and variance), the
same real activations are normalised by each cut, and the result is held
against torch's own layer (``torch_normalize``).

Layouts and torch's conventions (``eps`` 1e-5, biased variance, no affine):

* ``image`` (N, C, H, W), a conv layer's output. BN: one set per channel
  (over N, H, W; ``BatchNorm2d``). LN: one per example (over C, H, W;
  ``LayerNorm([C, H, W])``). IN: one per (example, channel), over H, W
  (``InstanceNorm2d``). GN: one per (example, group of C/G channels)
  (``GroupNorm(G, C)``).
* ``features`` (N, F), a fully connected layer's output. BN: per feature over
  N (``BatchNorm1d``); LN: per example over F (``LayerNorm(F)``); GN per
  (example, group); IN has one value per set, so it outputs 0
  (``GroupNorm(F, F)``).
* ``sequence`` (N, T, F), a recurrent layer's summed input per time step.
  BN per time step: per (step, feature) over N (one ``BatchNorm1d`` per
  step, recurrent BN); LN: per (example, step) over F (``LayerNorm(F)``);
  GN: per (example, step, group); IN: per (example, feature) over *time*
  (``InstanceNorm1d`` on (N, F, T)), which needs the whole sequence and so
  cannot run inside a recurrent step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import Config, check
from ..data import load_mnist
from ..models import model_label
from ..norms import PYTORCH_DEFAULT_EPS
from ..train import pick_device
from . import Experiment

METHODS = ("batch", "layer", "instance", "group")
LAYOUTS = ("image", "features", "sequence")
AXIS_NAMES = {
    "image": ("example", "channel", "row", "column"),
    "features": ("example", "feature"),
    "sequence": ("example", "time step", "feature"),
}
WIDTH = 8  # channels or features: divisible by 1, 2, 4 and 8 groups
SPATIAL_SIDE = 4  # image layout: 4 x 4 positions per channel
TIME_STEPS = 7  # sequence layout: the image read as 7 rows (pooled from 28)


@dataclass(frozen=True)
class NormAxesConfig(Config):
    """``batch`` examples of real activations in one ``layout``; GN with ``groups`` groups."""

    layout: str = "image"
    batch: int = 4
    groups: int = 2
    seed: int = 0

    def __post_init__(self):
        check(self.layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}.")
        check(2 <= self.batch <= 8, "Choose a batch of 2 to 8 examples.")
        check(self.groups in (1, 2, 4, 8), f"groups must divide the {WIDTH} channels: 1, 2, 4 or 8.")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``): none, one small tensor is normalised."""
        return 0.0


@dataclass
class NormAxesResult:
    """``values``: the raw activations; ``set_ids[m]``: same shape, equal ids share one mean/variance.

    ``normalized[m]``: ``values`` normalised by method m's sets; ``torch_max_difference[m]``:
    max |ours - torch's layer|. ``pooled_mean_abs[i, j]`` / ``pooled_var[i, j]``: the
    output of method ``METHODS[i]`` measured over the sets of method ``METHODS[j]``
    (average |mean| and average variance over those sets).
    """

    config: NormAxesConfig
    axis_names: tuple[str, ...]
    values: np.ndarray
    set_ids: dict[str, np.ndarray]
    normalized: dict[str, np.ndarray]
    torch_max_difference: dict[str, float]
    pooled_mean_abs: np.ndarray
    pooled_var: np.ndarray

    def set_size(self, method: str) -> int:
        return int(np.bincount(self.set_ids[method].ravel()).max())


def statistic_sets(method: str, layout: str, shape: tuple[int, ...], groups: int) -> np.ndarray:
    """An integer array of ``shape``: elements with equal ids share one mean and variance."""
    index = np.indices(shape)
    if layout == "image":
        n, c = index[0], index[1]
        channels = shape[1]
        ids = {"batch": c, "layer": n, "instance": n * channels + c, "group": n * groups + c // (channels // groups)}
    elif layout == "features":
        n, f = index
        features = shape[1]
        ids = {"batch": f, "layer": n, "instance": n * features + f, "group": n * groups + f // (features // groups)}
    else:
        n, t, f = index
        steps, features = shape[1], shape[2]
        ids = {
            "batch": t * features + f,
            "layer": n * steps + t,
            "instance": n * features + f,
            "group": (n * steps + t) * groups + f // (features // groups),
        }
    return ids[method]


def set_moments(values: np.ndarray, set_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each set's mean and biased variance, indexed by set id: ``mu_S``, ``sigma_S^2``."""
    flat_ids, flat = set_ids.ravel(), values.ravel().astype(np.float64)
    counts = np.bincount(flat_ids)
    means = np.bincount(flat_ids, weights=flat) / counts
    variances = np.bincount(flat_ids, weights=(flat - means[flat_ids]) ** 2) / counts
    return means, variances


def normalize_by_sets(values: np.ndarray, set_ids: np.ndarray, eps: float = PYTORCH_DEFAULT_EPS) -> np.ndarray:
    """``(x - mu_S) / sqrt(sigma_S^2 + eps)``, S the set of each element."""
    means, variances = set_moments(values, set_ids)
    return (values - means[set_ids]) / np.sqrt(variances[set_ids] + eps)


def pooled_moments(values: np.ndarray, set_ids: np.ndarray) -> tuple[float, float]:
    """Average |mean| and average (biased) variance of ``values`` over the sets of ``set_ids``."""
    means, variances = set_moments(values, set_ids)
    return float(np.abs(means).mean()), float(variances.mean())


def torch_normalize(method: str, layout: str, x: torch.Tensor, groups: int, eps: float = PYTORCH_DEFAULT_EPS) -> torch.Tensor:
    """The same normalisation by torch's own layers (training mode, no affine)."""
    channels = x.shape[-1] if layout == "sequence" else x.shape[1]
    if layout == "image":
        layer = {
            "batch": nn.BatchNorm2d(channels, eps=eps, affine=False),
            "layer": nn.LayerNorm(list(x.shape[1:]), eps=eps, elementwise_affine=False),
            "instance": nn.InstanceNorm2d(channels, eps=eps),
            "group": nn.GroupNorm(groups, channels, eps=eps, affine=False),
        }[method]
        return layer.to(x.dtype)(x)
    if layout == "features":
        layer = {
            "batch": nn.BatchNorm1d(channels, eps=eps, affine=False),
            "layer": nn.LayerNorm(channels, eps=eps, elementwise_affine=False),
            "instance": nn.GroupNorm(channels, channels, eps=eps, affine=False),
            "group": nn.GroupNorm(groups, channels, eps=eps, affine=False),
        }[method]
        return layer.to(x.dtype)(x)
    n, steps, features = x.shape
    if method == "batch":  # one BatchNorm1d per time step
        return torch.stack([nn.BatchNorm1d(features, eps=eps, affine=False).to(x.dtype)(x[:, t]) for t in range(steps)], dim=1)
    if method == "layer":
        return nn.LayerNorm(features, eps=eps, elementwise_affine=False).to(x.dtype)(x)
    if method == "group":
        return nn.GroupNorm(groups, features, eps=eps, affine=False).to(x.dtype)(x.reshape(n * steps, features)).reshape(x.shape)
    return nn.InstanceNorm1d(features, eps=eps)(x.transpose(1, 2)).transpose(1, 2)


def real_activations(layout: str, batch: int, seed: int) -> torch.Tensor:
    """What the layer would normalise: a freshly initialised (seeded) layer's output on test digits.

    image: a 3x3 conv with 8 channels on the digits average-pooled to 4 x 4;
    features: a 784 -> 8 linear layer; sequence: each of 7 pooled image rows
    through a 7 -> 8 linear layer (a recurrent layer's input term W x_t + b).
    """
    images = load_mnist(str(pick_device())).test_x[:batch].cpu()
    torch.manual_seed(seed)
    with torch.no_grad():
        if layout == "image":
            pooled = nn.functional.adaptive_avg_pool2d(images, SPATIAL_SIDE)
            return nn.Conv2d(1, WIDTH, 3, padding=1)(pooled)
        if layout == "features":
            return nn.Linear(images[0].numel(), WIDTH)(images.flatten(1))
        rows = nn.functional.adaptive_avg_pool2d(images, TIME_STEPS)[:, 0]  # (N, T, 7)
        return nn.Linear(TIME_STEPS, WIDTH)(rows)


def run(config: NormAxesConfig, progress=None) -> NormAxesResult:
    x = real_activations(config.layout, config.batch, config.seed).double()
    values = x.numpy()
    set_ids, normalized, differences = {}, {}, {}
    for method in METHODS:
        set_ids[method] = statistic_sets(method, config.layout, values.shape, config.groups)
        normalized[method] = normalize_by_sets(values, set_ids[method])
        reference = torch_normalize(method, config.layout, x, config.groups).detach().numpy()
        differences[method] = float(np.abs(normalized[method] - reference).max())
    mean_abs = np.zeros((len(METHODS), len(METHODS)))
    variances = np.zeros_like(mean_abs)
    for i, by in enumerate(METHODS):
        for j, over in enumerate(METHODS):
            mean_abs[i, j], variances[i, j] = pooled_moments(normalized[by], set_ids[over])
    if progress is not None:
        progress(1.0, "done", None)
    return NormAxesResult(config, AXIS_NAMES[config.layout], values, set_ids, normalized, differences, mean_abs, variances)


def summarize(result: NormAxesResult) -> dict:
    return {
        model_label(m): {"values per set": result.set_size(m), "max |ours - torch|": result.torch_max_difference[m]}
        for m in METHODS
    }


EXPERIMENT = Experiment(
    name="norm_axes",
    title="Which values share one mean/variance: BN, LN, IN, GN",
    summary="Real activations of one layer cut into the sets each norm pools over, normalised each way and checked against torch.",
    config_type=NormAxesConfig,
    run=run,
    order=60,
    summarize=summarize,
)
