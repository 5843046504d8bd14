"""Two later fixes for small batches, as ``torch.nn.BatchNorm`` subclasses: Batch Renorm and ghost BN.

**Batch Renormalization** (Ioffe 2017, arXiv 1702.03275, Algorithm 1). In
training mode, per feature, with the moving averages mu, sigma *before* this
batch's update::

    mu_B    = 1/m sum_i x_i,        sigma_B = sqrt(eps + 1/m sum_i (x_i - mu_B)^2)
    r       = stop_gradient(clip(sigma_B / sigma, 1/r_max, r_max))
    d       = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))
    x_hat_i = (x_i - mu_B) / sigma_B * r + d,        y_i = gamma * x_hat_i + beta

Unclipped, ``x_hat`` is exactly ``(x - mu) / sigma``: the training output is
the inference output, yet the gradient still flows through mu_B and sigma_B.
With ``r_max = 1, d_max = 0`` it is plain BN. Inference: ``y = gamma (x - mu) /
sigma + beta``, as BN's eval mode.

Moving averages are updated exactly as ``torch.nn.BatchNorm1d`` does (momentum
0.1 on the batch mean and on the *unbiased* batch variance) and ``sigma =
sqrt(running_var + eps)``; the paper's Algorithm 1 instead averages sigma_B
itself. Warm-up (the paper's Sec. 4.1, Inception v3, 160k steps): plain BN for
the first 5,000 steps, then the limits relaxed to reach d_max = 5 at 25k steps
and r_max = 3 at 40k; :func:`renorm_limits` scales that to any warm-up length
(linear relaxation: the paper says only "gradually"). The module counts its
own training forward passes in ``num_batches_tracked``, as torch's BN does.

**Ghost batch normalization** (Hoffer, Hubara & Soudry 2017, arXiv 1705.08741,
Algorithm 1): a batch of B examples is split into virtual ("ghost") batches of
``v`` and each is normalised with its own statistics. The running averages are
updated once per ghost batch, one momentum step for each in turn, as in their
Algorithm 1 (which weights the k ghost batches' statistics by (1 - eta)^i eta):
exactly torch's BN applied to each chunk in turn. So each update sees a batch
of v, the size whose statistics training normalised with, and the estimates
are those of BN trained at batch v (torch's unbiased variance, where their
algorithm averages sigma). Eval mode is plain BN's.

Shape: (N, C) for the 1d classes, (N, C, H, W) for the 2d ones.
"""
from __future__ import annotations

import torch
from torch import nn

# Ioffe 2017, Sec. 4.1 (Inception v3 on ImageNet, trained for 160k steps in Sec. 4.2):
# plain BN for 5k steps; d_max reaches its final value at 25k steps, r_max at 40k.
PAPER_WARMUP_STEPS = 5_000
PAPER_D_MAX_REACHED = 25_000
PAPER_R_MAX_REACHED = 40_000
PAPER_TRAINING_STEPS = 160_000
PAPER_R_MAX = 3.0
PAPER_D_MAX = 5.0


def renorm_limits(step: int, r_max: float, d_max: float, warmup_steps: int) -> tuple[float, float]:
    """The clipping limits ``(r_max_t, d_max_t)`` in force at training step ``step`` (0-based).

    The paper's schedule scaled so that its 5,000 warm-up steps become
    ``warmup_steps`` (W): plain BN (1, 0) for steps 0 .. W-1, then d_max
    rises linearly to its final value at 5W (paper: 25k) and r_max to its
    final value at 8W (paper: 40k). ``warmup_steps = 0``: the final limits
    from the first step.
    """
    if warmup_steps <= 0:
        return float(r_max), float(d_max)
    if step < warmup_steps:
        return 1.0, 0.0
    scale = warmup_steps / PAPER_WARMUP_STEPS
    d_progress = min(1.0, (step - warmup_steps) / ((PAPER_D_MAX_REACHED - PAPER_WARMUP_STEPS) * scale))
    r_progress = min(1.0, (step - warmup_steps) / ((PAPER_R_MAX_REACHED - PAPER_WARMUP_STEPS) * scale))
    return 1.0 + (r_max - 1.0) * r_progress, d_max * d_progress


def _stat_dims(x: torch.Tensor) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


class _BatchRenorm:
    """Algorithm 1 of Ioffe 2017 in training mode; BN's eval mode (see the module docstring)."""

    def configure_renorm(self, r_max: float, d_max: float, warmup_steps: int) -> None:
        self.r_max, self.d_max, self.warmup_steps = float(r_max), float(d_max), int(warmup_steps)
        self.last_r = self.last_d = None  # the last training forward's r and d, per channel

    def current_limits(self) -> tuple[float, float]:
        return renorm_limits(int(self.num_batches_tracked), self.r_max, self.d_max, self.warmup_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        dims = _stat_dims(x)
        count = x.numel() // x.shape[1]
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        batch_var, batch_mean = torch.var_mean(x, dim=dims, correction=0)  # biased, as BN normalises
        batch_std = torch.sqrt(batch_var + self.eps)
        r_max, d_max = self.current_limits()
        with torch.no_grad():  # stop_gradient(r), stop_gradient(d)
            running_std = torch.sqrt(self.running_var + self.eps)
            r = (batch_std / running_std).clamp(1.0 / r_max, r_max)
            d = ((batch_mean - self.running_mean) / running_std).clamp(-d_max, d_max)
        # x_hat = (x - mu_B) / sigma_B * r + d, folded per channel into x * scale + shift (two passes over x)
        scale = r / batch_std
        shift = d - batch_mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        with torch.no_grad():  # moving averages as torch's BN: unbiased variance, momentum or cumulative
            self.num_batches_tracked += 1
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - factor).add_(factor * batch_mean)
            self.running_var.mul_(1 - factor).add_(factor * batch_var * count / (count - 1))
        self.last_r, self.last_d = r, d
        return x * _per_channel(scale, x) + _per_channel(shift, x)


class BatchRenorm1d(_BatchRenorm, nn.BatchNorm1d):
    """Batch Renorm on (N, C). Same parameters and buffers as ``nn.BatchNorm1d``."""

    def __init__(self, num_features: int, r_max: float = PAPER_R_MAX, d_max: float = PAPER_D_MAX, warmup_steps: int = PAPER_WARMUP_STEPS, **kwargs):
        super().__init__(num_features, **kwargs)
        self.configure_renorm(r_max, d_max, warmup_steps)


class BatchRenorm2d(_BatchRenorm, nn.BatchNorm2d):
    """Batch Renorm on (N, C, H, W)."""

    def __init__(self, num_features: int, r_max: float = PAPER_R_MAX, d_max: float = PAPER_D_MAX, warmup_steps: int = PAPER_WARMUP_STEPS, **kwargs):
        super().__init__(num_features, **kwargs)
        self.configure_renorm(r_max, d_max, warmup_steps)


def ghost_batch_sizes(batch_size: int, virtual_batch_size: int) -> list[int]:
    """How a batch is split into ghost batches: chunks of ``v``, the remainder last.

    A remainder of one example has no variance, so it joins the previous
    chunk (B = 9, v = 4: [4, 5]). B <= v: one chunk, plain BN.
    """
    if batch_size <= virtual_batch_size:
        return [batch_size]
    sizes = [virtual_batch_size] * (batch_size // virtual_batch_size)
    remainder = batch_size % virtual_batch_size
    if remainder == 1:
        sizes[-1] += 1
    elif remainder:
        sizes.append(remainder)
    return sizes


class _GhostBatchNorm:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] <= self.virtual_batch_size:
            return super().forward(x)
        parts = []
        for chunk in x.split(ghost_batch_sizes(x.shape[0], self.virtual_batch_size)):
            parts.append(super().forward(chunk))  # BN on the chunk: its statistics, one running update
        return torch.cat(parts)


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    """Ghost BN on (N, C): BN per virtual batch of ``virtual_batch_size`` examples."""

    def __init__(self, num_features: int, virtual_batch_size: int = 16, **kwargs):
        super().__init__(num_features, **kwargs)
        self.virtual_batch_size = int(virtual_batch_size)


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    """Ghost BN on (N, C, H, W)."""

    def __init__(self, num_features: int, virtual_batch_size: int = 16, **kwargs):
        super().__init__(num_features, **kwargs)
        self.virtual_batch_size = int(virtual_batch_size)
