"""Check the population statistics of a model's BatchNorm layers.

In eval mode a BN layer normalises with its *population* (running) statistics::

    y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta

so a unit whose input was (nearly) constant in training, ``running_var`` ~ 0,
multiplies any new deviation by up to ``1 / sqrt(eps)`` (316x at PyTorch's
eps 1e-5). In train mode the same layer uses the batch's own mean and biased
variance, and updates the running buffers with ``momentum`` (PyTorch: weight
of the new batch; running_var gets the *unbiased* batch variance).

These functions are the checks the distribution-shift page runs, written to
be copied into your own project (plain PyTorch only). The repair, re-estimating
the statistics (precise BN / AdaBN), is :func:`bnviz.bn_stats.recalibrate_batch_norm`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .bn_stats import batch_norm_layers


@torch.no_grad()
def check_running_stats(model: nn.Module) -> list[dict]:
    """One row per BN layer: are the running statistics finite, how small is the smallest
    running variance, and how much can a unit amplify a deviation in eval mode?

    ``amplification`` = 1 / sqrt(running_var + eps) (the factor applied to
    ``x - running_mean`` before gamma). Units with ``running_var < eps`` are
    the ones amplified close to the ceiling 1 / sqrt(eps).
    """
    rows = []
    for index, bn in enumerate(batch_norm_layers(model)):
        mean, var = bn.running_mean.float(), bn.running_var.float()
        finite = torch.isfinite(mean) & torch.isfinite(var)
        safe_var = torch.where(finite, var, torch.full_like(var, float("inf")))
        rows.append({
            "layer": index + 1,
            "units": int(var.numel()),
            "nonfinite_units": int((~finite).sum()),
            "min_running_var": float(safe_var.min()) if finite.any() else float("nan"),
            "units_var_below_eps": int((finite & (var < bn.eps)).sum()),
            "max_amplification": float((1.0 / torch.sqrt(safe_var.min() + bn.eps))) if finite.any() else float("nan"),
            "eps": float(bn.eps),
        })
    return rows


@torch.no_grad()
def norm_outputs(model: nn.Module, x: torch.Tensor, train_mode: bool = False, batch_size: int = 60, dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each norm layer's output and the logits for inputs ``x``, as float32 tensors.

    ``train_mode=True`` normalises every batch of ``batch_size`` with its own
    statistics (what the model saw in training); it runs on a copy, so the
    running statistics of ``model`` are left untouched. In eval mode the
    output does not depend on batching, so all of ``x`` goes in one pass. ``dtype`` runs the
    whole forward in that precision (float16 overflows above 65,504).
    Returns ``(outputs, logits)``; ``outputs[i]`` has shape (N, units, ...).
    """
    probe = copy.deepcopy(model).to(dtype).train(train_mode)
    norms = [m for m in probe.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))]
    captured: list[list[torch.Tensor]] = [[] for _ in norms]
    hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: captured[k].append(out.float())) for k, m in enumerate(norms)]
    try:
        size = batch_size if train_mode else len(x)
        logits = torch.cat([probe(x[start : start + size].to(dtype)).float() for start in range(0, len(x), size)])
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.cat(parts) for parts in captured], logits


@torch.no_grad()
def debug_checks(model: nn.Module, x: torch.Tensor, batch_size: int = 60) -> dict[str, list[dict]]:
    """The three checks to run when a BN model misbehaves in eval mode on data ``x``.

    1. are the running statistics finite, and how small is the smallest running variance?
    2. per norm layer, the largest |output| in train mode (batch statistics) vs
       eval mode (population statistics) on the same inputs, and how many are not finite;
    3. the units responsible: per unit, running variance, amplification
       1/sqrt(running_var + eps) and its largest |output| in eval mode.
    """
    train_outputs, _ = norm_outputs(model, x, train_mode=True, batch_size=batch_size)
    eval_outputs, _ = norm_outputs(model, x, train_mode=False, batch_size=batch_size)
    layers, units = [], []
    bns = batch_norm_layers(model)
    for index, (train_out, eval_out) in enumerate(zip(train_outputs, eval_outputs)):
        for mode, out in (("train mode (batch statistics)", train_out), ("eval mode (population statistics)", eval_out)):
            finite = torch.isfinite(out)
            magnitude = out.abs()[finite].double()
            quantiles = torch.quantile(magnitude[torch.randperm(len(magnitude), generator=torch.Generator().manual_seed(0))[:100_000]], torch.tensor([0.5, 0.99], dtype=torch.float64)) if len(magnitude) else torch.full((2,), float("nan"))
            layers.append({"layer": index + 1, "mode": mode, "median_abs": float(quantiles[0]), "p99_abs": float(quantiles[1]),
                           "max_abs": float(magnitude.max()) if len(magnitude) else float("nan"), "nonfinite": int((~finite).sum())})
        if index < len(bns):
            bn = bns[index]
            per_unit_eval = eval_out.transpose(0, 1).flatten(1).abs().nan_to_num(nan=float("inf")).amax(dim=1)
            per_unit_train = train_out.transpose(0, 1).flatten(1).abs().nan_to_num(nan=float("inf")).amax(dim=1)
            for unit in range(bn.num_features):
                var = float(bn.running_var[unit])
                units.append({"layer": index + 1, "unit": unit, "running_mean": float(bn.running_mean[unit]), "running_var": var,
                              "amplification": float(1.0 / (var + bn.eps) ** 0.5) if var == var else float("nan"),
                              "max_abs_eval": float(per_unit_eval[unit]), "max_abs_train": float(per_unit_train[unit])})
    return {"running_stats": check_running_stats(model), "layers": layers, "units": units}


@torch.no_grad()
def largest_value(model: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[float, str, torch.Tensor]:
    """The largest finite |value| any layer (linear, norm, activation) outputs in an eval-mode
    forward of ``x`` in ``dtype``, the layer's name (where float16, max 65,504, overflows first), and the logits (float32)."""
    probe = copy.deepcopy(model).to(dtype).eval()
    best = [0.0, ""]

    def record(name):
        def hook(_module, _inputs, out):
            finite = out[torch.isfinite(out)]
            if finite.numel() and finite.abs().max().item() > best[0]:
                best[0], best[1] = finite.abs().max().item(), name
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in probe.named_modules() if not list(m.children())]
    try:
        logits = probe(x.to(dtype)).float()
    finally:
        for hook in hooks:
            hook.remove()
    return best[0], best[1], logits


def first_nonfinite(model: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> dict:
    """Where an eval-mode forward of ``x`` in ``dtype`` first holds ±inf and first holds NaN.

    Leaf modules (linear, norm, activation) in the order the forward runs them;
    returns ``{"inf_layer", "inf_count", "nan_layer", "nan_count", "layers_between"}``:
    the first layer whose output holds an infinite value and how many, the same
    for NaN, and how many layers after the first inf the first NaN appears (None
    where there is none). A float16 overflow turns a value into ±inf; a later
    sum of +inf and -inf terms (or inf · 0) is where NaN first appears.
    """
    probe = copy.deepcopy(model).to(dtype).eval()
    order: list[tuple[str, int, int]] = []

    def record(name):
        def hook(_module, _inputs, out):
            order.append((name, int(torch.isinf(out).sum()), int(torch.isnan(out).sum())))
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in probe.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            probe(x.to(dtype))
    finally:
        for hook in hooks:
            hook.remove()
    first_inf = next((i for i, (_n, inf, _nan) in enumerate(order) if inf), None)
    first_nan = next((i for i, (_n, _inf, nan) in enumerate(order) if nan), None)
    return {
        "inf_layer": order[first_inf][0] if first_inf is not None else None,
        "inf_count": order[first_inf][1] if first_inf is not None else 0,
        "nan_layer": order[first_nan][0] if first_nan is not None else None,
        "nan_count": order[first_nan][2] if first_nan is not None else 0,
        "layers_between": first_nan - first_inf if first_inf is not None and first_nan is not None else None,
    }
