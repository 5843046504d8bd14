"""Batch, layer, group and instance normalisation written out step by step.

Each function follows the article's equations, keeps every intermediate so a
page can show it, and is checked against ``torch.nn`` in the tests (forward,
backward and running statistics, float64, to 1e-6).

Batch normalisation of a mini-batch ``x`` with ``m`` values per feature::

    (1) mu      = 1/m * sum_i x_i                      batch mean
    (2) sigma^2 = 1/m * sum_i (x_i - mu)^2             biased batch variance
    (3) x_hat   = (x_i - mu) / sqrt(sigma^2 + eps)     normalised
    (4) y       = gamma * x_hat + beta                 scale and shift

PyTorch convention (``torch.nn.BatchNorm1d``): normalise with the *biased*
variance (2), but update the running variance with the *unbiased* one,
``sigma^2 * m / (m - 1)``; ``running = (1 - momentum) * running + momentum *
batch`` with momentum 0.1, or the cumulative average when momentum is None.
Keras writes the same update as ``running = momentum * running + (1 -
momentum) * batch`` with momentum 0.99, so Keras 0.99 == PyTorch 0.01.
Default eps: 1e-5 in PyTorch, 1e-3 in Keras.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PYTORCH_DEFAULT_MOMENTUM = 0.1
KERAS_DEFAULT_MOMENTUM = 0.99
PYTORCH_DEFAULT_EPS = 1e-5
KERAS_DEFAULT_EPS = 1e-3


def keras_to_pytorch_momentum(keras_momentum: float) -> float:
    """Keras weights the old value by ``momentum``; PyTorch weights the new batch."""
    return 1.0 - keras_momentum


def _stat_dims(x: torch.Tensor) -> tuple[int, ...]:
    """BN pools over the batch and every spatial position: all dims but 1 (channels)."""
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


@dataclass
class BatchNormSteps:
    """Every intermediate of one BN forward pass (per-feature tensors have shape (C,))."""

    x: torch.Tensor
    mean: torch.Tensor  # eq. (1)
    var: torch.Tensor  # eq. (2), biased
    inv_std: torch.Tensor  # 1 / sqrt(var + eps): the amplification factor
    x_hat: torch.Tensor  # eq. (3)
    y: torch.Tensor  # eq. (4)
    gamma: torch.Tensor
    eps: float

    @property
    def count(self) -> int:
        """m: how many values share one mean (batch x spatial positions)."""
        return self.x.numel() // self.x.shape[1]

    @property
    def unbiased_var(self) -> torch.Tensor:
        m = self.count
        return self.var * m / (m - 1) if m > 1 else torch.full_like(self.var, float("nan"))


def batch_norm_steps(
    x: torch.Tensor, gamma: torch.Tensor | None = None, beta: torch.Tensor | None = None, eps: float = PYTORCH_DEFAULT_EPS
) -> BatchNormSteps:
    """Training-mode BN, eq. (1)-(4), on ``x`` of shape (N, C) or (N, C, *spatial)."""
    dims = _stat_dims(x)
    mean = x.mean(dim=dims)
    centred = x - _per_channel(mean, x)
    var = (centred * centred).mean(dim=dims)
    inv_std = 1.0 / torch.sqrt(var + eps)
    x_hat = centred * _per_channel(inv_std, x)
    channels = x.shape[1]
    gamma = torch.ones(channels, dtype=x.dtype, device=x.device) if gamma is None else gamma
    beta = torch.zeros(channels, dtype=x.dtype, device=x.device) if beta is None else beta
    y = x_hat * _per_channel(gamma, x) + _per_channel(beta, x)
    return BatchNormSteps(x=x, mean=mean, var=var, inv_std=inv_std, x_hat=x_hat, y=y, gamma=gamma, eps=eps)


def batch_norm_backward(steps: BatchNormSteps, grad_y: torch.Tensor):
    """Gradients of a loss through training-mode BN, by the chain rule written out.

    With ``g = dL/dx_hat = grad_y * gamma`` and m values per feature::

        dL/dx     = inv_std / m * (m * g - sum(g) - x_hat * sum(g * x_hat))
        dL/dgamma = sum(grad_y * x_hat),   dL/dbeta = sum(grad_y)

    The mean subtraction makes ``dL/dx`` sum to zero over each feature's
    values. Returns ``(grad_x, grad_gamma, grad_beta)``.
    """
    x, x_hat = steps.x, steps.x_hat
    dims = _stat_dims(x)
    m = steps.count
    grad_x_hat = grad_y * _per_channel(steps.gamma, x)
    sum_g = grad_x_hat.sum(dim=dims)
    sum_g_xhat = (grad_x_hat * x_hat).sum(dim=dims)
    grad_x = _per_channel(steps.inv_std / m, x) * (
        m * grad_x_hat - _per_channel(sum_g, x) - x_hat * _per_channel(sum_g_xhat, x)
    )
    return grad_x, (grad_y * x_hat).sum(dim=dims), grad_y.sum(dim=dims)


def update_running_stats(
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    steps: BatchNormSteps,
    momentum: float | None,
    num_batches_tracked: int,
) -> None:
    """PyTorch's running-statistics update, in place.

    ``momentum=None`` gives the cumulative moving average: the factor is
    ``1 / num_batches_tracked`` (counted after this batch).
    """
    factor = 1.0 / num_batches_tracked if momentum is None else momentum
    with torch.no_grad():
        running_mean.mul_(1 - factor).add_(factor * steps.mean)
        running_var.mul_(1 - factor).add_(factor * steps.unbiased_var)


def batch_norm_eval(x, running_mean, running_var, gamma=None, beta=None, eps=PYTORCH_DEFAULT_EPS):
    """Eval-mode BN: eq. (3)-(4) with the population estimates instead of the batch's."""
    inv_std = 1.0 / torch.sqrt(running_var + eps)
    y = (x - _per_channel(running_mean, x)) * _per_channel(inv_std, x)
    if gamma is not None:
        y = y * _per_channel(gamma, x)
    if beta is not None:
        y = y + _per_channel(beta, x)
    return y


class StepwiseBatchNorm(nn.Module):
    """A drop-in ``BatchNorm1d/2d`` built on :func:`batch_norm_steps`.

    Same parameters, buffers and defaults as torch's (affine, running stats,
    momentum 0.1 or None, eps 1e-5). Shape: (N, C) or (N, C, *spatial).
    Keeps the last forward's steps in ``last_steps`` for inspection.
    """

    def __init__(self, num_features: int, eps: float = PYTORCH_DEFAULT_EPS, momentum: float | None = PYTORCH_DEFAULT_MOMENTUM):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.last_steps: BatchNormSteps | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return batch_norm_eval(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        if x.numel() // x.shape[1] < 2:
            # the same message torch gives: one value per channel has no variance
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        steps = batch_norm_steps(x, self.weight, self.bias, self.eps)
        self.num_batches_tracked += 1
        update_running_stats(self.running_mean, self.running_var, steps, self.momentum, int(self.num_batches_tracked))
        self.last_steps = steps
        return steps.y


# --------------------------------------------------------- the other norms
def layer_norm(x: torch.Tensor, gamma=None, beta=None, eps: float = PYTORCH_DEFAULT_EPS) -> torch.Tensor:
    """LayerNorm: each example normalised over all its features (every dim but 0).

    Matches ``torch.nn.LayerNorm(x.shape[1:])``; gamma/beta have shape x.shape[1:].
    Same computation in train and eval mode: no running statistics.
    """
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    y = (x - mean) / torch.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def rms_norm(x: torch.Tensor, gamma=None, eps: float = PYTORCH_DEFAULT_EPS) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019): each example divided by the root mean square of its features,
    ``y = x / sqrt(mean(x^2) + eps) * gamma`` over every dim but 0. No mean is subtracted, so unlike
    LayerNorm it is not invariant to adding the same constant to every feature of an example.

    Matches ``torch.nn.RMSNorm(x.shape[1:], eps=eps)`` when its weight is ``gamma`` broadcast over
    the spatial positions; ``gamma`` has shape (C,) (one gain per feature or channel). No beta.
    """
    dims = tuple(range(1, x.dim()))
    y = x / torch.sqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps)
    return y * _per_channel(gamma, x) if gamma is not None else y


class RMSNorm(nn.Module):
    """:func:`rms_norm` as a layer: ``weight`` (C,) starts at 1, for (N, C) and (N, C, H, W) inputs.
    Same computation in train and eval mode: no running statistics. ``bias`` is None (RMSNorm has no
    beta; kept so code that reads ``norm.bias`` sees there is none)."""

    def __init__(self, num_features: int, eps: float = PYTORCH_DEFAULT_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def group_norm(x: torch.Tensor, num_groups: int, gamma=None, beta=None, eps: float = PYTORCH_DEFAULT_EPS) -> torch.Tensor:
    """GroupNorm: each example's channels split into groups, each group normalised
    over its channels and spatial positions. ``num_groups=1`` is LayerNorm over
    (C, H, W); ``num_groups=C`` is InstanceNorm. Matches ``torch.nn.GroupNorm``.
    """
    n, c = x.shape[:2]
    if c % num_groups:
        raise ValueError(f"{c} channels cannot be split into {num_groups} groups")
    grouped = x.reshape(n, num_groups, -1)
    mean = grouped.mean(dim=2, keepdim=True)
    var = grouped.var(dim=2, keepdim=True, unbiased=False)
    y = ((grouped - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    if gamma is not None:
        y = y * _per_channel(gamma, x)
    if beta is not None:
        y = y + _per_channel(beta, x)
    return y


def instance_norm(x: torch.Tensor, eps: float = PYTORCH_DEFAULT_EPS) -> torch.Tensor:
    """InstanceNorm: each example's each channel over its spatial positions."""
    return group_norm(x, num_groups=x.shape[1], eps=eps)
