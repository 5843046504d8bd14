"""Numbers about a layer's units that recorders and experiments share: per-unit quantiles,
activation slopes and where a unit is flat (saturated or inactive)."""
from __future__ import annotations

import numpy as np
import torch


def column_quantiles(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``torch.quantile(values.to(q.dtype), q, dim=0)`` for a 2-D ``values``, bit for bit
    (tested), about 5x faster on the CPU: the columns are sorted by numpy (torch's CPU sort of
    a (2000, 100) tensor takes ~12 ms, numpy's ~1.5 ms; sorted values are the same whatever the
    algorithm), then interpolated with torch.quantile's own ops ("linear"; a column with a NaN
    gives NaN) in ``q``'s dtype. Float32 values with float64 ``q`` are sorted as float32 (2.2x
    faster than as float64) and only the values picked are widened: the same order, the same
    numbers, since every float32 is exactly a float64."""
    if values.device.type != "cpu" or values.dim() != 2 or values.shape[0] == 0:
        return torch.quantile(values.to(q.dtype), q, dim=0)
    ordered = torch.from_numpy(np.sort(values.T.numpy(), axis=1))  # (columns, n), NaN last as in torch.sort
    last_index = ordered.shape[1] - 1
    ranks = (q * last_index).expand(ordered.shape[0], -1).clone()  # (columns, quantiles)
    ranks.masked_fill_(ordered.isnan().any(dim=1, keepdim=True), last_index)
    below = ranks.to(torch.long)
    weights = ranks - below
    above = ranks.ceil_().to(torch.long)
    return ordered.gather(1, below).to(q.dtype).lerp_(ordered.gather(1, above).to(q.dtype), weights).T


# A unit whose slope is under a tenth of its activation's steepest passes back less
# than a tenth of the gradient it could: "saturated" (sigmoid, tanh) or "inactive" (ReLU).
FLAT_SLOPE_FRACTION = 0.1


def activation_slope(act, x: torch.Tensor) -> torch.Tensor:
    """f'(x) elementwise for an elementwise activation module ``act``, by autograd."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(act(x).sum(), x)
    return slope


def steepest_slope(act) -> float:
    """max |f'(x)| over x in [-20, 20] (sigmoid 0.25, tanh and ReLU 1, GELU about 1.13)."""
    return activation_slope(act, torch.linspace(-20.0, 20.0, 40_001, dtype=torch.float64)).abs().max().item()


def is_flat(act, x: torch.Tensor) -> torch.Tensor:
    """Where ``|f'(x)| < FLAT_SLOPE_FRACTION * max |f'|``: saturated or inactive."""
    return activation_slope(act, x).abs() < FLAT_SLOPE_FRACTION * steepest_slope(act)
