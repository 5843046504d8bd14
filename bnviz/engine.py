"""The optional accelerator: many training steps of one MLP or CNN in one TorchScript call.

The trainer (:mod:`bnviz.train`) reads without this module. It asks two questions:

- :func:`can_run` ``(model, optimizer, batch_size) -> bool``: whether :func:`steps` covers
  this model and optimiser exactly;
- :func:`steps` ``(model, optimizer, x, y) -> (losses, correct)``: train on the batches
  ``x[s], y[s]`` in order (``x`` (S, B, 1, 28, 28), ``y`` (S, B)), updating the model's
  parameters, its BN statistics and the optimiser's state in place, as
  ``model(x)``, ``F.cross_entropy``, ``loss.backward()`` and ``optimizer.step()`` would;
  ``losses`` and ``correct`` (share of the batch classified right) have one entry per step
  taken. It stops after the first step whose loss is not finite, with that step's
  parameters not updated (its forward has updated BN's statistics, as the plain step's
  does): the trainer's divergence policy decides what happens next.

Why: for the paper's 784-100-100-100-10 network at batch 60 a step is about 26 MFLOP; the
matmuls take half of this step's time and a third of a straightforward PyTorch step's; the
rest is per-op overhead of modules, autograd, the optimiser and Python. One TorchScript
call per chunk of steps removes most of it, and TorchScript runs without holding Python's
GIL, so runs on worker threads really run side by side (``benchmarks/bench_training.py``).
The ops are the aten kernels autograd and the optimiser call (CPU fusion is off), so the
numbers are autograd's (``tests/test_engine.py``, ``tests/test_training_equivalence.py``).

Covered: ``arch`` "mlp" or "cnn"; no norm, BN, LayerNorm, GroupNorm, and for the MLP ghost
BN and Batch Renorm (:func:`_norm`), before or after a sigmoid/tanh/ReLU/identity; plain
SGD, SGD with momentum and Adam (:mod:`bnviz.optim`); every parameter trained; no
hooks on the model (the fused step cannot call them). Anything else trains on the plain
path. ``BNVIZ_ACCELERATOR=0`` switches this module off.

This is the one module of bnviz that uses private torch API (TorchScript's inlining pass,
``nn.Module``'s hook dictionaries, to see that there are none); torch.jit.script is
deprecated in favour of torch.compile, which costs ~15 s to compile these models (issue 11).
(Batch Renorm's ``last_r``/``last_d``, which only its module's own forward records, are
not kept.)
"""
from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from typing import List, NamedTuple, Tuple

import torch
from torch import nn

from . import optim
from .models import Net
from .renorm import BatchRenorm1d, GhostBatchNorm1d, ghost_batch_sizes, renorm_limits

_ACTIVATION_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "identity": 3}
_NORM_KINDS = {nn.BatchNorm1d: 0, nn.BatchNorm2d: 0, nn.LayerNorm: 1, nn.GroupNorm: 2, GhostBatchNorm1d: 3, BatchRenorm1d: 4}
_BATCH_NORMS = (0, 3, 4)  # kinds that need two or more examples per batch, as nn.BatchNorm1d does
_SGD, _MOMENTUM, _ADAM = 0, 1, 2
_MEAN, _IGNORE_INDEX = 1, -100  # F.cross_entropy's defaults: reduction="mean", ignore_index=-100


class Layers(NamedTuple):
    """The model's tensors, updated in place: weight and bias of each linear (or conv) layer
    and of the head; each norm's gamma, beta and (BN kinds) running statistics;
    ``pools[i]``: a 2x2 max-pool after CNN block i (empty for an MLP)."""

    weights: List[torch.Tensor]
    biases: List[torch.Tensor]
    gammas: List[torch.Tensor]
    betas: List[torch.Tensor]
    running_means: List[torch.Tensor]
    running_vars: List[torch.Tensor]
    counts: List[torch.Tensor]
    pools: List[bool]


class Settings(NamedTuple):
    """``activation``: a code of ``_ACTIVATION_CODES``; ``placement`` 0 no norm, 1 before the
    activation, 2 after; the norm's kind (``_NORM_KINDS``), its size (GroupNorm's groups, a
    ghost batch's examples), momentum (``cumulative``: PyTorch's ``momentum=None``) and eps."""

    activation: int
    placement: int
    norm_kind: int
    norm_size: int
    momentum: float
    cumulative: bool
    eps: float


class Update(NamedTuple):
    """The optimiser (``_SGD``, ``_MOMENTUM``, ``_ADAM``), its learning rate and
    hyper-parameters (momentum; or Adam's beta1, beta2, eps) and its state, one tensor per
    parameter in :func:`_ordered_parameters`' order: momentum buffers or Adam's first
    moments, Adam's second moments and step counts."""

    optimizer: int
    lr: float
    hyper: List[float]
    firsts: List[torch.Tensor]
    seconds: List[torch.Tensor]
    steps: List[torch.Tensor]


# ------------------------------------------------------------------ the two questions
def enabled() -> bool:
    return os.environ.get("BNVIZ_ACCELERATOR", os.environ.get("BNVIZ_TORCHSCRIPT", "1")) != "0"


def warm_up() -> bool:
    """Compile the accelerator now (once per process; ~0.1 s) and say whether it runs here.

    TorchScript reads the functions' source with ``ast.parse``, and CPython 3.11's parser is
    not safe in two threads at once (python/cpython#106905: "AST constructor recursion depth
    mismatch"; AppTest sessions compiling one page in 30 threads at once hit it): a first job
    compiling in its worker while Streamlit compiles a page for another session could make
    that page fail to load. The app calls this while its core loads, before any job runs."""
    return enabled() and _scripted(_fused_steps) is not None


def can_run(model: nn.Module, optimizer: optim.Optimizer, batch_size: int) -> bool:
    """Whether :func:`steps` trains ``model`` with ``optimizer`` on batches of ``batch_size``
    exactly as the plain step would."""
    if not enabled() or not isinstance(model, Net) or _scripted(_fused_steps) is None:
        return False
    cfg = model.cfg
    norms = ("none", "batch", "layer", "group", "ghost_batch", "batch_renorm") if cfg.arch == "mlp" else ("none", "batch", "layer", "group")
    if cfg.arch not in ("mlp", "cnn") or cfg.norm not in norms or cfg.activation not in _ACTIVATION_CODES:
        return False
    if cfg.norm in ("batch", "ghost_batch", "batch_renorm") and (batch_size < 2 or cfg.bn_eps <= 0):
        return False  # nn.BatchNorm1d raises for these: the plain step shows its message
    parameters = list(model.parameters())
    if _has_hooks(model) or len({p.dtype for p in parameters}) != 1 or not all(p.requires_grad for p in parameters):
        return False
    return _update(optimizer, _ordered_parameters(model), create_state=False) is not None


def steps(model: Net, optimizer: optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Train on ``x[s], y[s]`` for each s in order (see the module's docstring); only after
    :func:`can_run` said yes. Returns ``(losses, correct)``, one entry per step taken."""
    layers, settings, renorm = _layers(model)
    params = _ordered_parameters(model)
    # SGD's momentum buffer starts as a copy of the first gradient (bnviz.optim, as torch.optim)
    first = any(optimizer.state[p].get("momentum_buffer") is None for p in params)
    update = _update(optimizer, params, create_state=True)
    count = x.shape[0]
    limits = torch.tensor([renorm_limits(int(renorm.num_batches_tracked) + s, renorm.r_max, renorm.d_max, renorm.warmup_steps) for s in range(count)]
                          if renorm is not None else [], dtype=torch.float64).reshape(-1, 2)
    losses = torch.empty(count, dtype=layers.weights[0].dtype, device=x.device)
    correct = torch.empty(count, dtype=torch.float32, device=x.device)
    # The executor's optimisation passes rewrite the graph into ops that round differently
    # (1 ulp): a run on the plain path would then drift from one on this one. Same speed
    # (measured). optimized_execution restores the previous (per-thread) setting after.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        taken = _scripted(_fused_steps)(x, y, layers, settings, update, first, limits, losses, correct)
    return losses[:taken], correct[:taken]


# ------------------------------------------------------------------ the model's and the optimiser's tensors
def _has_hooks(model: nn.Module) -> bool:
    """Any hook on the model or a global one: the fused step could not call it."""
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks or module_globals._global_backward_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in model.modules())


def _norms(model: Net) -> list[nn.Module]:
    return [block.norm for block in model.blocks if type(block.norm) in _NORM_KINDS]


def _ordered_parameters(model: Net) -> list[nn.Parameter]:
    """The fused step's parameter order: weight, bias of each layer and the head, then gamma,
    beta of each norm."""
    linears = [block.linear for block in model.blocks] + [model.head]
    return [p for layer in linears for p in (layer.weight, layer.bias)] + [p for norm in _norms(model) for p in (norm.weight, norm.bias)]


def _layers(model: Net) -> tuple[Layers, Settings, BatchRenorm1d | None]:
    cfg, norms = model.cfg, _norms(model)
    linears = [block.linear for block in model.blocks] + [model.head]
    batch_norms = [n for n in norms if isinstance(n, nn.modules.batchnorm._BatchNorm)]
    layers = Layers([l.weight for l in linears], [l.bias for l in linears], [n.weight for n in norms], [n.bias for n in norms],
                    [n.running_mean for n in batch_norms], [n.running_var for n in batch_norms], [n.num_batches_tracked for n in batch_norms],
                    [block.pool is not None for block in model.blocks] if cfg.arch == "cnn" else [])
    if norms:
        norm = norms[0]
        momentum = getattr(norm, "momentum", 0.0)
        size = norm.num_groups if isinstance(norm, nn.GroupNorm) else getattr(norm, "virtual_batch_size", 1)
        settings = Settings(_ACTIVATION_CODES[cfg.activation], 1 if cfg.placement == "before" else 2, _NORM_KINDS[type(norm)], int(size),
                            0.0 if momentum is None else float(momentum), momentum is None, float(norm.eps))
    else:
        settings = Settings(_ACTIVATION_CODES[cfg.activation], 0, 0, 1, 0.0, False, 0.0)
    renorm = next((n for n in norms if isinstance(n, BatchRenorm1d)), None)  # its step count sets the clipping limits
    return layers, settings, renorm


def _update(optimizer: optim.Optimizer, params: list[nn.Parameter], create_state: bool) -> Update | None:
    """``optimizer``'s settings and state for :func:`_apply_updates` (state created as
    :mod:`bnviz.optim` creates it, so either path can take the next step); None for an
    optimiser this module does not cover."""
    if not isinstance(optimizer, (optim.SGD, optim.Adam)) or {id(p) for p in optimizer.params} != {id(p) for p in params}:
        return None
    group, state = optimizer.param_groups[0], optimizer.state
    if isinstance(optimizer, optim.SGD):
        if group["momentum"] == 0:
            return Update(_SGD, float(group["lr"]), [], [], [], [])
        if create_state:
            for p in params:
                if state[p].get("momentum_buffer") is None:  # the first step copies its gradient into it
                    state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        buffers = [state[p]["momentum_buffer"] for p in params] if create_state else []
        return Update(_MOMENTUM, float(group["lr"]), [float(group["momentum"])], buffers, [], [])
    if create_state:
        for p in params:
            optimizer.init_state(p)
    beta1, beta2 = group["betas"]
    firsts, seconds, counts = ([state[p][name] for p in params] for name in ("exp_avg", "exp_avg_sq", "step")) if create_state else ([], [], [])
    return Update(_ADAM, float(group["lr"]), [float(beta1), float(beta2), float(group["eps"])], firsts, seconds, counts)


# ------------------------------------------------------------------ the step, in TorchScript
def _activate(x: torch.Tensor, activation: int) -> torch.Tensor:
    """In place: the activation's input is not needed again (its backward reads the output)."""
    if activation == 0:
        return torch.sigmoid_(x)
    if activation == 1:
        return torch.tanh_(x)
    if activation == 2:
        return torch.relu_(x)
    return x


def _activation_backward(grad: torch.Tensor, a: torch.Tensor, activation: int) -> torch.Tensor:
    """d activation from its output ``a``, by autograd's own kernels."""
    if activation == 0:
        return torch.ops.aten.sigmoid_backward(grad, a)
    if activation == 1:
        return torch.ops.aten.tanh_backward(grad, a)
    if activation == 2:
        return torch.ops.aten.threshold_backward(grad, a, 0)
    return grad


def _running_average_factor(count: torch.Tensor, momentum: float, cumulative: bool) -> float:
    """nn.BatchNorm's weight of this batch in the running averages: ``num_batches_tracked``
    counts the batch; ``momentum=None`` (cumulative) gives 1 / that count."""
    count.add_(1)
    if cumulative:
        return 1.0 / float(count.item())
    return momentum


def _norm(v: torch.Tensor, i: int, layers: Layers, settings: Settings, r_limit: float, d_limit: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Norm layer i in training mode, ``(out, mean, invstd)``, by the kernels the modules call:
    ``nn.BatchNorm1d/2d`` (kind 0, over the batch, updating the running statistics),
    ``nn.LayerNorm`` (1, over each example's features), ``nn.GroupNorm`` (2, over each
    example's ``norm_size`` groups), bnviz's ``GhostBatchNorm1d`` (3, BN on each ghost batch
    of ``norm_size`` examples in turn; mean and invstd stacked per ghost batch) and
    ``BatchRenorm1d`` (4, with the clipping limits in force; its ops as the module's forward;
    "mean" holds the batch mean, r and d stacked)."""
    kind, size, eps = settings.norm_kind, settings.norm_size, settings.eps
    gamma, beta = layers.gammas[i], layers.betas[i]
    if kind == 1:
        return torch.native_layer_norm(v, [v.shape[1]], gamma, beta, eps)
    if kind == 2:
        return torch.native_group_norm(v, gamma, beta, v.shape[0], v.shape[1], v[0, 0].numel(), size, eps)
    running_mean, running_var, count = layers.running_means[i], layers.running_vars[i], layers.counts[i]
    if kind == 0:
        factor = _running_average_factor(count, settings.momentum, settings.cumulative)
        return torch.native_batch_norm(v, gamma, beta, running_mean, running_var, True, factor, eps)
    if kind == 4:
        batch_var, batch_mean = torch.var_mean(v, [0], correction=0)
        batch_std = torch.sqrt(batch_var + eps)
        running_std = torch.sqrt(running_var + eps)
        r = (batch_std / running_std).clamp(1.0 / r_limit, r_limit)
        d = ((batch_mean - running_mean) / running_std).clamp(-d_limit, d_limit)
        scale = r / batch_std
        shift = d - batch_mean * scale
        scale, shift = scale * gamma, shift * gamma + beta
        factor = _running_average_factor(count, settings.momentum, settings.cumulative)
        examples = v.shape[0]
        running_mean.mul_(1 - factor).add_(factor * batch_mean)
        running_var.mul_(1 - factor).add_(factor * batch_var * examples / (examples - 1))
        return v * scale + shift, torch.stack([batch_mean, r, d]), batch_std.reciprocal()
    outs: List[torch.Tensor] = []
    means: List[torch.Tensor] = []
    invstds: List[torch.Tensor] = []
    for part in v.split(ghost_batch_sizes(v.shape[0], size)):
        factor = _running_average_factor(count, settings.momentum, settings.cumulative)
        out, mean, invstd = torch.native_batch_norm(part, gamma, beta, running_mean, running_var, True, factor, eps)
        outs.append(out)
        means.append(mean)
        invstds.append(invstd)
    return torch.cat(outs), torch.stack(means), torch.stack(invstds)


def _norm_backward(grad: torch.Tensor, v: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, i: int, layers: Layers,
                   settings: Settings) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d input, d gamma, d beta)`` of :func:`_norm`, by autograd's own backward kernels."""
    kind, size, eps = settings.norm_kind, settings.norm_size, settings.eps
    gamma, beta = layers.gammas[i], layers.betas[i]
    if kind == 1:
        return torch.ops.aten.native_layer_norm_backward(grad, v, [v.shape[1]], mean, invstd, gamma, beta, [True, True, True])
    if kind == 2:
        return torch.ops.aten.native_group_norm_backward(grad, v, mean, invstd, gamma, v.shape[0], v.shape[1], v[0, 0].numel(), size, [True, True, True])
    running_mean, running_var = layers.running_means[i], layers.running_vars[i]
    if kind == 0:
        return torch.ops.aten.native_batch_norm_backward(grad, v, gamma, running_mean, running_var, mean, invstd, True, eps, [True, True, True])
    if kind == 4:  # r and d are constants (stop_gradient): BN's backward with weight gamma * r; d gamma = r * (BN's) + d * d beta
        r, d = mean[1], mean[2]
        grad_in, gamma_grad, beta_grad = torch.ops.aten.native_batch_norm_backward(
            grad, v, gamma * r, running_mean, running_var, mean[0], invstd, True, eps, [True, True, True])
        return grad_in, gamma_grad * r + beta_grad * d, beta_grad
    # ghost batches last to first, summing d gamma and d beta in the order autograd does
    sizes = ghost_batch_sizes(v.shape[0], size)
    grad_parts, v_parts = grad.split(sizes), v.split(sizes)
    grads_in: List[torch.Tensor] = []
    gamma_grad, beta_grad = torch.zeros_like(gamma), torch.zeros_like(beta)
    for c in range(len(sizes) - 1, -1, -1):
        grad_in, gamma_part, beta_part = torch.ops.aten.native_batch_norm_backward(
            grad_parts[c], v_parts[c], gamma, running_mean, running_var, mean[c], invstd[c], True, eps, [True, True, True])
        grads_in.insert(0, grad_in)
        gamma_grad, beta_grad = gamma_grad + gamma_part, beta_grad + beta_part
    return torch.cat(grads_in), gamma_grad, beta_grad


def _apply_updates(params: List[torch.Tensor], grads: List[torch.Tensor], update: Update, order: List[int], first: bool) -> None:
    """Every parameter's update, as :mod:`bnviz.optim` (torch.optim's single-tensor code)
    computes it, each op here its ``_foreach`` form (one call for all parameters, the same
    kernel per tensor): plain SGD; SGD with momentum (buffers a copy of the gradients at the
    ``first`` step); Adam (every parameter's step count is the same). ``order[k]``: the index in ``update``'s state of
    ``params[k]``."""
    lr = update.lr
    if update.optimizer == 0:
        torch._foreach_add_(params, grads, alpha=-lr)
        return
    firsts = [update.firsts[k] for k in order]
    if update.optimizer == 1:
        if first:
            torch._foreach_copy_(firsts, grads)
        else:
            torch._foreach_mul_(firsts, update.hyper[0])
            torch._foreach_add_(firsts, grads, alpha=1)
        torch._foreach_add_(params, firsts, alpha=-lr)
        return
    seconds, counts = [update.seconds[k] for k in order], [update.steps[k] for k in order]
    beta1, beta2, eps = update.hyper[0], update.hyper[1], update.hyper[2]
    torch._foreach_add_(counts, 1)
    torch._foreach_lerp_(firsts, grads, 1 - beta1)
    torch._foreach_mul_(seconds, beta2)
    torch._foreach_addcmul_(seconds, grads, grads, 1 - beta2)
    step = float(counts[0])
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    denom = torch._foreach_sqrt(seconds)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, firsts, denom, -step_size)


def _fused_step(x: torch.Tensor, y: torch.Tensor, layers: Layers, settings: Settings, update: Update, first: bool,
                r_limit: float, d_limit: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """One training step of an MLP, or of the CNN (``layers.pools`` non-empty: each hidden
    layer a 3x3 convolution, padding 1, then a 2x2 max-pool where ``pools[i]``), in place:
    ``(loss, share of the batch classified right)``. No update when the loss is not finite."""
    conv = len(layers.pools) > 0
    weights, biases, placement, activation = layers.weights, layers.biases, settings.placement, settings.activation
    h = x.flatten(1) if not conv else x
    inputs: List[torch.Tensor] = []
    pool_inputs: List[torch.Tensor] = []
    pool_indices: List[torch.Tensor] = []
    acts: List[torch.Tensor] = []
    norm_inputs: List[torch.Tensor] = []
    means: List[torch.Tensor] = []
    invstds: List[torch.Tensor] = []
    depth = len(weights)
    for i in range(depth - 1):
        inputs.append(h)
        if conv:
            z = torch.ops.aten.convolution(h, weights[i], biases[i], [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        else:
            z = torch.addmm(biases[i], h, weights[i].t())
        if placement == 0:
            a = _activate(z, activation)
            h = a
        else:
            if placement == 1:
                n, mean, invstd = _norm(z, i, layers, settings, r_limit, d_limit)
                norm_inputs.append(z)
                a = _activate(n, activation)
                h = a
            else:
                a = _activate(z, activation)
                h, mean, invstd = _norm(a, i, layers, settings, r_limit, d_limit)
                norm_inputs.append(a)
            means.append(mean)
            invstds.append(invstd)
        acts.append(a)
        pool_inputs.append(h)
        if conv and layers.pools[i]:
            h, index = torch.ops.aten.max_pool2d_with_indices(h, [2, 2], [2, 2], [0, 0], [1, 1], False)
            pool_indices.append(index)
        else:
            pool_indices.append(h)  # unused
    head_shape = h.shape
    h = h.flatten(1)
    inputs.append(h)
    logits = torch.addmm(biases[depth - 1], h, weights[depth - 1].t())
    # F.cross_entropy: log-softmax, then the mean negative log-likelihood
    log_probs = torch.log_softmax(logits, 1)
    loss, total_weight = torch.ops.aten.nll_loss_forward(log_probs, y, None, 1, -100)
    correct = (logits.argmax(1) == y).float().mean()
    if not math.isfinite(float(loss)):
        return loss, correct
    grad = torch.ops.aten.nll_loss_backward(torch.ones([], dtype=log_probs.dtype, device=log_probs.device), log_probs, y, None, 1, -100, total_weight)
    grad = torch.ops.aten._log_softmax_backward_data(grad, log_probs, 1, log_probs.dtype)
    params: List[torch.Tensor] = []
    grads: List[torch.Tensor] = []
    order: List[int] = []  # each parameter's place in _ordered_parameters, for the optimiser's state
    for i in range(depth - 1, -1, -1):
        params += [weights[i], biases[i]]
        order += [2 * i, 2 * i + 1]
        if conv and i < depth - 1:
            grad_input, weight_grad, bias_grad = torch.ops.aten.convolution_backward(
                grad, inputs[i], weights[i], [weights[i].shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [i > 0, True, True])
            grads += [weight_grad, bias_grad]
        else:
            grads += [grad.t().mm(inputs[i]), grad.sum(0)]
            grad_input = grad
            if i > 0:  # the first layer needs no gradient for the images
                grad_input = grad.mm(weights[i])
                if conv:
                    grad_input = grad_input.view(head_shape)
        if i > 0:
            j = i - 1
            grad = grad_input
            if conv and layers.pools[j]:
                grad = torch.ops.aten.max_pool2d_with_indices_backward(grad, pool_inputs[j], [2, 2], [2, 2], [0, 0], [1, 1], False, pool_indices[j])
            if placement != 2:
                grad = _activation_backward(grad, acts[j], activation)
            if placement != 0:
                grad, gamma_grad, beta_grad = _norm_backward(grad, norm_inputs[j], means[j], invstds[j], j, layers, settings)
                params += [layers.gammas[j], layers.betas[j]]
                grads += [gamma_grad, beta_grad]
                order += [2 * depth + 2 * j, 2 * depth + 2 * j + 1]
            if placement == 2:
                grad = _activation_backward(grad, acts[j], activation)
    _apply_updates(params, grads, update, order, first)
    return loss, correct


def _fused_steps(x: torch.Tensor, y: torch.Tensor, layers: Layers, settings: Settings, update: Update, first: bool,
                 limits: torch.Tensor, losses: torch.Tensor, correct: torch.Tensor) -> int:
    """``x.shape[0]`` steps of :func:`_fused_step`, step s on ``x[s], y[s]``, its loss and
    share classified right into ``losses[s]``, ``correct[s]``; Batch Renorm's clipping limits
    at step s are ``limits[s]`` (empty for other norms). Stops after the first step whose loss
    is not finite. Returns the number of steps taken."""
    for s in range(x.shape[0]):
        r_limit, d_limit = 1.0, 0.0
        if limits.shape[0] > 0:
            r_limit, d_limit = float(limits[s, 0]), float(limits[s, 1])
        loss, right = _fused_step(x[s], y[s], layers, settings, update, first and s == 0, r_limit, d_limit)
        losses[s] = loss
        correct[s] = right
        if not math.isfinite(float(loss)):
            return s + 1
    return x.shape[0]


_SCRIPTING = threading.Lock()  # worker threads may ask at once: compile once, and warnings.catch_warnings is not thread-safe


def _scripted(function):
    """``function`` compiled by TorchScript (once per process), or None where that fails."""
    with _SCRIPTING:
        return _compile(function)


@functools.lru_cache(maxsize=None)
def _compile(function):
    if not hasattr(torch, "jit"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated": see the module's docstring
            scripted = torch.jit.script(function)
    except Exception:  # noqa: BLE001 - any scripting failure means: train on the plain path
        return None
    try:  # helper calls inlined: the same ops without a call frame each (about 4 % of a step, measured)
        torch._C._jit_pass_inline(scripted.graph)
    except Exception:  # noqa: BLE001 - a private pass: without it the same graph runs, a little slower
        pass
    return scripted
