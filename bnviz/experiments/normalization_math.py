"""Normalization math: eq. (1)-(4) of BN stepped through on one live batch.

The batch is either the pre-activations (the input of the sigmoid, where BN
would sit) of one hidden layer of the paper's MNIST MLP, trained without BN
by the shared trainer, or a synthetic batch with a chosen mean, spread, skew
and outliers. Every step is computed by :mod:`bnviz.norms` and held against
``torch.nn.BatchNorm1d`` (forward, running statistics) and autograd
(backward) in float64 on the same batch.
"""
from __future__ import annotations

import inspect
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .. import norms
from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import first_examples, load_mnist
from ..models import PAPER_HIDDEN, ModelConfig
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, evaluate, pick_device, train_together
from . import Experiment

SOURCES = ("mnist", "synthetic")
NUM_SHOWN = 3  # the article's figure follows three neurons
SYNTHETIC_WIDTH = 100  # as wide as the paper's hidden layers
NONLINEARITIES = ("sigmoid", "tanh", "relu")
# A value is in a nonlinearity's "linear" regime where its slope is at least
# LINEAR_SLOPE of the steepest slope, "saturated" where it is at most
# SATURATED_SLOPE of it (ReLU: "dead", slope exactly 0), "curved" in between.
LINEAR_SLOPE = 0.8
SATURATED_SLOPE = 0.1
# The MLP whose activations are shown learns with Adam (PyTorch's default lr):
# about 80% test accuracy in 300 steps, where plain SGD at lr 0.1 is still at chance.
SOURCE_MODEL_LR = 1e-3
OUTLIER_DISTANCE = 10.0  # an outlier sits this many spreads from the mean
LOSS_TARGET_SEED = 12345  # seeds the random targets t of the demo loss 1/2 sum (y - t)^2
# The trained MLP is shared by every batch drawn from it; training it and
# capturing its activations (forward hooks) must not interleave between sessions.
_MODEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class NormalizationMathConfig(Config):
    """One batch and the BN settings applied to it.

    ``source``: "mnist" (pre-activations of hidden layer ``layer`` of the
    paper's 784-100-100-100-10 sigmoid MLP without BN, after ``train_steps``
    Adam steps, on ``batch_size`` training images drawn with ``batch_seed``) or
    "synthetic" (every neuron draws from mean + spread * z, z a standardised
    skew-normal with shape ``skew``, a fraction ``outliers`` of values moved
    OUTLIER_DISTANCE spreads away; ``constant_neuron`` makes the first shown
    neuron constant). ``first_neuron``: the three neurons shown are
    first_neuron .. first_neuron + 2. ``gamma``/``beta`` are applied to every
    neuron; ``momentum`` follows PyTorch (None: cumulative average).
    """

    source: str = "mnist"
    layer: int = 1
    train_steps: int = 300
    batch_size: int = PAPER_BATCH_SIZE
    batch_seed: int = 0
    first_neuron: int = 0
    eps: float = norms.PYTORCH_DEFAULT_EPS
    gamma: float = 1.0
    beta: float = 0.0
    momentum: float | None = norms.PYTORCH_DEFAULT_MOMENTUM
    mean: float = 2.0
    spread: float = 3.0
    skew: float = 0.0
    outliers: float = 0.0
    constant_neuron: bool = False
    seed: int = 0

    def __post_init__(self):
        check(self.source in SOURCES, f"source must be one of {', '.join(SOURCES)}.")
        check(1 <= self.layer <= len(PAPER_HIDDEN), f"layer must be between 1 and {len(PAPER_HIDDEN)}.")
        check(0 <= self.train_steps <= 5000, "train_steps must be between 0 and 5,000.")
        check(2 <= self.batch_size <= 512, "BN needs at least 2 values per neuron: batch size must be between 2 and 512.")
        check(0 <= self.first_neuron <= self.width - NUM_SHOWN, f"first_neuron must be between 0 and {self.width - NUM_SHOWN}.")
        check(0.0 <= self.eps <= 10.0, "eps must be between 0 and 10.")
        check(-10.0 <= self.gamma <= 10.0 and -10.0 <= self.beta <= 10.0, "gamma and beta must be between -10 and 10.")
        check(self.momentum is None or 0.0 <= self.momentum <= 1.0, "momentum must be in [0, 1] or None (cumulative average).")
        check(-100.0 <= self.mean <= 100.0 and 0.0 < self.spread <= 100.0, "mean must be in [-100, 100] and spread in (0, 100].")
        check(-20.0 <= self.skew <= 20.0, "skew must be between -20 and 20.")
        check(0.0 <= self.outliers <= 0.5, "outliers must be a fraction between 0 and 0.5.")
        check_view_cost(self, "fewer training steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost([(ModelConfig(hidden=PAPER_HIDDEN, activation="sigmoid"), TrainConfig(steps=self.train_steps, batch_size=PAPER_BATCH_SIZE))]) if self.train_steps else 0.0

    @property
    def width(self) -> int:
        return PAPER_HIDDEN[self.layer - 1] if self.source == "mnist" else SYNTHETIC_WIDTH

    @property
    def neurons(self) -> tuple[int, ...]:
        return tuple(range(self.first_neuron, self.first_neuron + NUM_SHOWN))


@dataclass
class NormalizationMathResult:
    """Everything the page shows, for the three neurons shown and summarised over all.

    Per-example arrays have shape (batch_size, 3); per-neuron arrays (3,);
    ``all_*`` arrays (width,). ``checks`` (empty if torch refused) maps a quantity to the largest
    absolute difference between bnviz and torch over every neuron (NaN where
    both are NaN at the same places, inf where only one is).
    """

    config: NormalizationMathConfig
    description: str
    neurons: np.ndarray
    x: np.ndarray
    centred: np.ndarray
    x_hat: np.ndarray
    y: np.ndarray
    mean: np.ndarray  # eq. (1)
    var: np.ndarray  # eq. (2), biased
    unbiased_var: np.ndarray
    inv_std: np.ndarray  # 1 / sqrt(var + eps)
    all_mean: np.ndarray
    all_var: np.ndarray
    all_x_hat_mean: np.ndarray
    all_x_hat_var: np.ndarray
    all_y: np.ndarray  # (batch_size, width): every output value, for the nonlinearity chart
    all_y_mean: np.ndarray
    all_y_std: np.ndarray
    running_mean: np.ndarray  # after this batch, from torch's initial 0 and 1
    running_var: np.ndarray
    momentum_factor: float
    bias: np.ndarray  # the Linear bias of the shown neurons (synthetic: a seeded stand-in)
    bias_x_hat_difference: float  # max |x_hat(Wh + b) - x_hat(Wh)| over every neuron
    bias_mean_shift: np.ndarray  # mu(Wh + b) - mu(Wh) for the shown neurons
    grad_x: np.ndarray  # dL/dx by bnviz's formula
    grad_x_autograd: np.ndarray
    grad_gamma: np.ndarray
    grad_beta: np.ndarray
    grad_sum: float  # max over neurons of |sum_i dL/dx_i| (= |dL/d bias|)
    loss: float  # L = 1/2 sum (y - t)^2 by bnviz
    checks: dict[str, float]
    torch_refusal: str | None  # torch's message when it refuses the settings (eps = 0)
    regimes: dict[str, dict[str, float]]  # nonlinearity -> regime -> fraction of every output value
    regime_bounds: dict[str, dict[str, float]]  # nonlinearity -> {"linear": |y| bound, "saturated": |y| bound}
    eps_cases: list[dict]
    conventions: list[dict]
    model_test_acc: float | None
    seconds: float

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def diverged(self) -> bool:
        """True when a step produced NaN or inf (eps = 0 on a constant neuron)."""
        return not (np.isfinite(self.all_x_hat_mean).all() and np.isfinite(self.y).all())


# ------------------------------------------------------------------ the batch
@lru_cache(maxsize=8)
def _trained_mlp(train_steps: int, seed: int, device: str):
    """The paper's sigmoid MLP without BN after ``train_steps`` Adam steps (one per process)."""
    data = load_mnist(device)
    train_cfg = TrainConfig(steps=max(train_steps, 1), lr=SOURCE_MODEL_LR, optimizer="adam", seed=seed, eval_every=max(train_steps, 1))
    run = Run(ModelConfig(hidden=PAPER_HIDDEN, activation="sigmoid"), train_cfg, data)
    return run, data


def mnist_batch(config: NormalizationMathConfig, progress: ProgressFn | None = None):
    """Pre-activations (Linear output, sigmoid input) of ``config.layer`` on one batch of
    training images, float64 of shape (batch_size, 100), the layer's bias (100,) and
    the model's test accuracy (2,000 test images)."""
    device = str(pick_device())

    def report(fraction, message, partial=None):
        if progress is not None:
            progress(0.9 * fraction, f"training the MLP: {message}", None)

    with _MODEL_LOCK:
        run, data = _trained_mlp(config.train_steps, config.seed, device)
        if config.train_steps > 0 and not run.done:
            train_together([run], report)
        images, labels = first_examples(data.train_x, data.train_y, config.batch_size, seed=1000 + config.batch_seed)
        _, _, activations = evaluate(run.model, images, labels, capture=True)
    x = activations[config.layer - 1].detach().cpu().double()
    bias = run.model.blocks[config.layer - 1].linear.bias.detach().cpu().double()
    return x, bias, float(run.test_acc[-1])


def synthetic_batch(config: NormalizationMathConfig):
    """A (batch_size, 100) float64 batch: mean + spread * standardised skew-normal, with outliers.

    Skew-normal with shape a: z = delta*|u0| + sqrt(1 - delta^2)*v, delta = a/sqrt(1+a^2),
    then standardised with its exact mean delta*sqrt(2/pi) and variance 1 - 2 delta^2 / pi.
    """
    generator = torch.Generator().manual_seed(1000 * config.seed + config.batch_seed)
    shape = (config.batch_size, SYNTHETIC_WIDTH)
    delta = config.skew / math.sqrt(1.0 + config.skew**2)
    u0 = torch.randn(shape, generator=generator, dtype=torch.float64)
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    z = delta * u0.abs() + math.sqrt(1.0 - delta**2) * v
    z = (z - delta * math.sqrt(2.0 / math.pi)) / math.sqrt(1.0 - 2.0 * delta**2 / math.pi)
    x = config.mean + config.spread * z
    is_outlier = torch.rand(shape, generator=generator, dtype=torch.float64) < config.outliers
    sign = torch.where(torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0).double()
    x = torch.where(is_outlier, config.mean + sign * OUTLIER_DISTANCE * config.spread, x)
    if config.constant_neuron:
        x[:, config.first_neuron] = config.mean
    bias = torch.randn(SYNTHETIC_WIDTH, generator=generator, dtype=torch.float64)  # a stand-in Linear bias
    return x, bias


# ------------------------------------------------------------------ the math
def max_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest |ours - theirs|; NaN where both are NaN at the same places only, inf if NaNs disagree."""
    ours, theirs = ours.detach().double(), theirs.detach().double()
    nan_ours, nan_theirs = torch.isnan(ours), torch.isnan(theirs)
    if not torch.equal(nan_ours, nan_theirs):
        return math.inf
    finite = ~nan_ours
    if not finite.any():
        return math.nan
    return float((ours[finite] - theirs[finite]).abs().max())


def nonlinearity_regimes(y: torch.Tensor) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Fraction of ``y`` in each nonlinearity's linear / curved / saturated (ReLU: dead) regime.

    The regime of a value is read from the slope f'(y) relative to f's steepest
    slope (autograd on the functions themselves): >= LINEAR_SLOPE linear,
    <= SATURATED_SLOPE saturated. Also returns the |y| bounds of the regimes.
    """
    functions = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    fractions, bounds = {}, {}
    flat = y.detach().flatten()
    flat = flat[torch.isfinite(flat)]
    for name, f in functions.items():
        slope = _slope(f, flat)
        steepest = _slope(f, grid).max()
        relative = slope / steepest
        linear = relative >= LINEAR_SLOPE
        saturated = relative <= SATURATED_SLOPE
        count = max(len(flat), 1)
        saturated_name = "dead" if name == "relu" else "saturated"
        fractions[name] = {"linear": float(linear.sum()) / count}
        if name != "relu":  # ReLU's slope is 1 or 0: nothing in between
            fractions[name]["curved"] = float((~linear & ~saturated).sum()) / count
        fractions[name][saturated_name] = float(saturated.sum()) / count
        grid_relative = _slope(f, grid) / steepest
        if name == "relu":
            bounds[name] = {"linear": 0.0, saturated_name: 0.0}
        else:
            bounds[name] = {
                "linear": float(grid[(grid >= 0) & (grid_relative >= LINEAR_SLOPE)].max()),
                saturated_name: float(grid[(grid >= 0) & (grid_relative <= SATURATED_SLOPE)].min()),
            }
    return fractions, bounds


def _slope(f, values: torch.Tensor) -> torch.Tensor:
    values = values.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(values).sum(), values)
    return grad


def eps_cases(x_neuron: torch.Tensor, eps: float) -> list[dict]:
    """What eps does when a neuron's batch variance is tiny: one row per case.

    The amplification 1/sqrt(var + eps) multiplies every deviation from the
    batch mean; without eps a constant neuron divides 0 by 0.
    """
    generator = torch.Generator().manual_seed(7)
    level = float(x_neuron[0])
    cases = [
        ("this neuron, this batch", x_neuron),
        ("this neuron, first 2 values only", x_neuron[:2]),
        ("almost constant (noise 0.001)", level + 1e-3 * torch.randn(len(x_neuron), generator=generator, dtype=torch.float64)),
        ("constant neuron", torch.full_like(x_neuron, level)),
    ]
    rows = []
    for name, values in cases:
        column = values.reshape(-1, 1)
        with_eps = norms.batch_norm_steps(column, eps=eps)
        without = norms.batch_norm_steps(column, eps=0.0)
        rows.append(
            {
                "case": name,
                "batch size": int(len(values)),
                "batch variance": float(with_eps.var[0]),
                "amplification (ε)": float(with_eps.inv_std[0]),
                "amplification (ε = 0)": float(without.inv_std[0]),
                "max |x̂| (ε)": float(with_eps.x_hat.abs().max()),
                "max |x̂| (ε = 0)": float(without.x_hat.abs().max()),
            }
        )
    return rows


def framework_conventions(sample_batch: int = 8) -> list[dict]:
    """BN conventions as the installed torch has them, read from its signature and its behaviour.

    Keras is not a bnviz dependency; its documented defaults are bnviz.norms constants.
    """
    defaults = {name: p.default for name, p in inspect.signature(nn.BatchNorm1d.__init__).parameters.items() if p.default is not inspect.Parameter.empty}
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(sample_batch, 2, dtype=torch.float64, generator=generator) * 2 + 1
    layer = nn.BatchNorm1d(2, dtype=torch.float64)
    y = layer(x)
    momentum = defaults["momentum"]
    # running_mean starts at 0, so after one batch it is momentum_weight * batch mean
    new_batch_weight = float((layer.running_mean / x.mean(0)).mean())
    # running_var starts at 1: running = (1 - w) * 1 + w * batch_var
    running_var_batch = (layer.running_var - (1 - new_batch_weight)) / new_batch_weight
    unbiased = torch.allclose(running_var_batch, x.var(0, unbiased=True))
    normalised_unbiased = torch.allclose(y, (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=True) + defaults["eps"]))
    images = torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=generator)
    layer2d = nn.BatchNorm2d(3, momentum=1.0, dtype=torch.float64)
    layer2d(images)
    over_spatial = torch.allclose(layer2d.running_mean, images.mean(dim=(0, 2, 3)))
    no_affine = nn.BatchNorm1d(2, affine=False)
    no_tracking = nn.BatchNorm1d(2, track_running_stats=False)
    keras_as_pytorch = norms.keras_to_pytorch_momentum(norms.KERAS_DEFAULT_MOMENTUM)
    return [
        {
            "setting": "momentum",
            f"PyTorch {torch.__version__.split('+')[0]} (installed)": f"{momentum}: weight of the new batch (measured: {new_batch_weight:.3g})",
            "Keras 3 (documented; not installed)": f"{norms.KERAS_DEFAULT_MOMENTUM}: weight of the old value (= PyTorch {keras_as_pytorch:.2g})",
        },
        {
            "setting": "eps",
            f"PyTorch {torch.__version__.split('+')[0]} (installed)": f"{defaults['eps']:g}",
            "Keras 3 (documented; not installed)": f"{norms.KERAS_DEFAULT_EPS:g}",
        },
        {
            "setting": "variance that normalises the batch",
            f"PyTorch {torch.__version__.split('+')[0]} (installed)": "unbiased (÷ (m−1))" if normalised_unbiased else "biased (÷ m)",
            "Keras 3 (documented; not installed)": "biased (÷ m)",
        },
        {
            "setting": "variance fed to the running estimate",
            f"PyTorch {torch.__version__.split('+')[0]} (installed)": "unbiased (÷ (m−1))" if unbiased else "biased (÷ m)",
            "Keras 3 (documented; not installed)": "biased (÷ m)",
        },
        {
            "setting": "“per feature” in BatchNorm2d",
            f"PyTorch {torch.__version__.split('+')[0]} (installed)": "per channel, over batch and all spatial positions" if over_spatial else "per channel and position",
            "Keras 3 (documented; not installed)": "per channel (axis=-1), over batch and spatial positions",
        },
        {
            "setting": f"affine (default {defaults['affine']})",
            f"PyTorch {torch.__version__.split('+')[0]} (installed)": "False: no γ, β parameters" if no_affine.weight is None else "False still has γ, β",
            "Keras 3 (documented; not installed)": "scale=True, center=True",
        },
        {
            "setting": f"track_running_stats (default {defaults['track_running_stats']})",
            f"PyTorch {torch.__version__.split('+')[0]} (installed)": "False: no running buffers, eval mode uses batch statistics" if no_tracking.running_mean is None else "False still keeps buffers",
            "Keras 3 (documented; not installed)": "always tracks moving mean and variance",
        },
    ]


def analyse(x: torch.Tensor, bias: torch.Tensor, config: NormalizationMathConfig) -> dict:
    """Eq. (1)-(4), running statistics and the backward pass on batch ``x`` (batch, width),
    by bnviz.norms and by torch.nn.BatchNorm1d + autograd, float64."""
    width = x.shape[1]
    shown = list(config.neurons)
    gamma = torch.full((width,), config.gamma, dtype=torch.float64)
    beta = torch.full((width,), config.beta, dtype=torch.float64)
    steps = norms.batch_norm_steps(x, gamma, beta, config.eps)

    running_mean, running_var = torch.zeros(width, dtype=torch.float64), torch.ones(width, dtype=torch.float64)
    norms.update_running_stats(running_mean, running_var, steps, config.momentum, num_batches_tracked=1)

    # the loss L = 1/2 sum (y - t)^2 with seeded random targets t
    targets = torch.randn(x.shape, generator=torch.Generator().manual_seed(LOSS_TARGET_SEED), dtype=torch.float64)
    grad_y = steps.y - targets
    grad_x, grad_gamma, grad_beta = norms.batch_norm_backward(steps, grad_y)

    reference = nn.BatchNorm1d(width, eps=config.eps, momentum=config.momentum, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(gamma)
        reference.bias.copy_(beta)
    x_leaf = x.clone().requires_grad_(True)
    try:
        y_torch = reference(x_leaf)
    except ValueError as exc:  # recent torch refuses eps = 0 in training mode
        torch_refusal, checks, grad_x_autograd = str(exc), {}, torch.full_like(x, math.nan)
    else:
        torch_refusal = None
        loss = 0.5 * ((y_torch - targets) ** 2).sum()
        loss.backward()
        grad_x_autograd = x_leaf.grad
        checks = {
            "forward y": max_difference(steps.y, y_torch),
            "running mean": max_difference(running_mean, reference.running_mean),
            "running variance": max_difference(running_var, reference.running_var),
            "dL/dx": max_difference(grad_x, x_leaf.grad),
            "dL/dγ": max_difference(grad_gamma, reference.weight.grad),
            "dL/dβ": max_difference(grad_beta, reference.bias.grad),
        }

    without_bias = norms.batch_norm_steps(x - bias, gamma, beta, config.eps)
    regimes, bounds = nonlinearity_regimes(steps.y)

    def pick(t):
        return t.detach()[..., shown].cpu().numpy()

    return dict(
        neurons=np.asarray(shown),
        x=pick(x),
        centred=pick(x - steps.mean),
        x_hat=pick(steps.x_hat),
        y=pick(steps.y),
        mean=pick(steps.mean),
        var=pick(steps.var),
        unbiased_var=pick(steps.unbiased_var),
        inv_std=pick(steps.inv_std),
        all_mean=steps.mean.numpy(),
        all_var=steps.var.numpy(),
        all_x_hat_mean=steps.x_hat.mean(0).numpy(),
        all_x_hat_var=steps.x_hat.var(0, unbiased=False).numpy(),
        all_y=steps.y.detach().numpy(),
        all_y_mean=steps.y.mean(0).numpy(),
        all_y_std=steps.y.std(0, unbiased=False).numpy(),
        running_mean=pick(running_mean),
        running_var=pick(running_var),
        momentum_factor=1.0 if config.momentum is None else config.momentum,
        bias=pick(bias),
        bias_x_hat_difference=max_difference(steps.x_hat, without_bias.x_hat),
        bias_mean_shift=pick(steps.mean - without_bias.mean),
        grad_x=pick(grad_x),
        grad_x_autograd=pick(grad_x_autograd),
        grad_gamma=pick(grad_gamma),
        grad_beta=pick(grad_beta),
        grad_sum=float(grad_x.sum(0).abs().max()),
        loss=float(0.5 * ((steps.y - targets) ** 2).sum()),
        checks=checks,
        torch_refusal=torch_refusal,
        regimes=regimes,
        regime_bounds=bounds,
        eps_cases=eps_cases(x[:, shown[0]], config.eps),
    )


def run(config: NormalizationMathConfig, progress: ProgressFn | None = None) -> NormalizationMathResult:
    started = time.perf_counter()
    if config.source == "mnist":
        x, bias, test_acc = mnist_batch(config, progress)
        trained = f"after {config.train_steps} Adam steps (batch 60)" if config.train_steps else "untrained"
        description = (
            f"pre-activations (sigmoid inputs) of hidden layer {config.layer} of the paper's 784-100-100-100-10 sigmoid MLP "
            f"without BN, {trained}, on {config.batch_size} training images (batch {config.batch_seed})"
        )
    else:
        x, bias = synthetic_batch(config)
        test_acc = None
        skew = f", skew {config.skew:g}" if config.skew else ""
        outliers = f", {100 * config.outliers:g}% outliers at ±{OUTLIER_DISTANCE:g} spreads" if config.outliers else ""
        constant = f"; neuron {config.first_neuron} constant" if config.constant_neuron else ""
        description = f"a synthetic batch of {config.batch_size} × {SYNTHETIC_WIDTH} values, mean {config.mean:g}, spread {config.spread:g}{skew}{outliers}{constant}"
    if progress is not None:
        progress(0.95, "stepping through eq. (1)-(4)", None)
    parts = analyse(x, bias, config)
    return NormalizationMathResult(
        config=config,
        description=description,
        conventions=framework_conventions(),
        model_test_acc=test_acc,
        seconds=time.perf_counter() - started,
        **parts,
    )


def summarize(result: NormalizationMathResult) -> dict:
    return {
        "batch": result.description,
        "mean (1)": result.mean.round(4).tolist(),
        "variance (2)": result.var.round(4).tolist(),
        "bnviz vs torch, max |difference|": result.checks,
        "sum of dL/dx over the batch (max over neurons)": result.grad_sum,
    }


EXPERIMENT = Experiment(
    name="normalization_math",
    title="Normalization math: eq. (1)-(4), gamma/beta and the backward pass on a live batch",
    summary="BN's batch mean, variance, normalisation and scale/shift stepped through on MNIST activations or a synthetic batch, checked against torch.",
    config_type=NormalizationMathConfig,
    run=run,
    order=20,
    presets={
        "Saturated sigmoid (γ = 4)": NormalizationMathConfig(gamma=4.0),
        "Constant neuron, eps = 0": NormalizationMathConfig(source="synthetic", constant_neuron=True, eps=0.0),
        "Batch of 2": NormalizationMathConfig(batch_size=2),
        "Skewed batch with outliers": NormalizationMathConfig(source="synthetic", skew=8.0, outliers=0.05),
    },
    summarize=summarize,
)
