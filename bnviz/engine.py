"""A hand-written training step for bnviz's MLPs: the same numbers as autograd, less overhead.

For the paper's 784-100-100-100-10 network at batch 60, one training step is about
26 MFLOP: the matmuls take about half of the time of bnviz's step and a third of a
straightforward PyTorch step's; the rest is per-op overhead of modules, autograd's graph,
the optimiser and Python (measured in ``benchmarks/bench_training.py``).

Three paths, fastest first, all with the same numbers (``tests/test_engine.py``):

- **many steps in one call** (:meth:`MLPStep.fused_steps`): every step up to the next
  evaluation runs inside one TorchScript function that gathers its own batches, computes
  forward, loss, backward and the optimiser's update (SGD, SGD with momentum or Adam, op
  for op as ``torch.optim`` does, in its own state), and stops at a loss that is not finite;
- **one step per call** (:meth:`MLPStep.fused_step`): the same step, for runs whose
  recorders act between steps;
- **the Python step** (:meth:`MLPStep.forward` / :meth:`MLPStep.backward`): explicit
  tensor ops on the model's parameters, gradients written to ``param.grad`` (so recorders
  that read gradients, and every torch optimiser, work unchanged), forward hooks called
  as ``nn.Module`` calls them. Used for recorders that read gradients or hook a forward
  pass, frozen parameters, an optimiser setting the fused step does not cover, or
  ``BNVIZ_TORCHSCRIPT=0``.

BN's running statistics are exactly ``nn.BatchNorm1d``'s: the same
``torch.native_batch_norm`` kernel with the same momentum, the unbiased variance,
``num_batches_tracked``, and the cumulative average when ``momentum=None``.
:class:`StackedMLPStep` trains K seeds of one configuration as one batched model.

The engine covers ``arch="mlp"`` with no norm, BN, LayerNorm, GroupNorm, ghost BN or
Batch Renorm (:func:`_norm`), before or after the activation, sigmoid/tanh/ReLU/identity;
and the small CNN with no norm, BN, LayerNorm or GroupNorm through the fused calls only
(autograd where they decline). :func:`engine_for` decides. (Batch Renorm's
``last_r``/``last_d``, which only its module's own forward records, are not kept.)
Anything else (InstanceNorm, the RNN, noisy BN) trains through autograd in the same
trainer.
"""
from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from typing import List, Tuple

import torch
from torch import nn

from torch.optim.optimizer import _get_scalar_dtype

from .data import MNIST_PIXEL_MEAN, MNIST_PIXEL_STD
from .models import ACTIVATIONS, Net
from .renorm import BatchRenorm1d, GhostBatchNorm1d, ghost_batch_sizes, renorm_limits

# activation, in place -> its backward from the activation's *output*: autograd's own kernels
_ACTIVATION = {
    "sigmoid": torch.sigmoid_,
    "tanh": torch.tanh_,
    "relu": torch.relu_,
    "identity": lambda x: x,
}
_BACKWARD_FROM_OUTPUT = {
    "sigmoid": torch.ops.aten.sigmoid_backward,
    "tanh": torch.ops.aten.tanh_backward,
    "relu": lambda grad, a: torch.ops.aten.threshold_backward(grad, a, 0),
    "identity": lambda grad, a: grad,
}


_MEAN, _IGNORE_INDEX = 1, -100  # F.cross_entropy's defaults: reduction="mean", ignore_index=-100


def _unsupported_hooks(model: nn.Module) -> bool:
    """Hooks the step cannot honour: backward hooks, keyword hooks, global module hooks.
    (Plain forward hooks and pre-hooks, the kind recorders use, are called as
    ``nn.Module.__call__`` would call them.)"""
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks or module_globals._global_backward_hooks:
        return True
    return any(
        m._backward_hooks or m._backward_pre_hooks or m._forward_hooks_with_kwargs or m._forward_pre_hooks_with_kwargs or m._forward_hooks_always_called
        for m in model.modules()
    )


def _call(module: nn.Module, compute, x: torch.Tensor) -> torch.Tensor:
    """``compute(x)`` as ``module(x)`` would run it: forward pre-hooks first (they may replace
    the input), then forward hooks (observers: one that replaces the output would need
    autograd to differentiate through it, so it is an error here)."""
    if not (module._forward_pre_hooks or module._forward_hooks):
        return compute(x)
    for hook in list(module._forward_pre_hooks.values()):
        replaced = hook(module, (x,))
        if replaced is not None:
            x = replaced[0] if isinstance(replaced, tuple) else replaced
    out = compute(x)
    for hook in list(module._forward_hooks.values()):
        if hook(module, (x,), out) is not None:
            raise RuntimeError(f"a forward hook on {type(module).__name__} replaced its output: train this run with Run(..., use_engine=False)")
    return out


def _hooked(*modules: nn.Module) -> bool:
    """Any forward hook or pre-hook on these modules."""
    return any(m._forward_pre_hooks or m._forward_hooks for m in modules)


def engine_for(model: Net, batch_size: int) -> "MLPStep | None":
    """An :class:`MLPStep` for ``model`` if it covers it exactly, else None (use autograd)."""
    cfg = model.cfg
    norms = ("none", "batch", "layer", "group", "ghost_batch", "batch_renorm") if cfg.arch == "mlp" else ("none", "batch", "layer", "group")
    if cfg.arch not in ("mlp", "cnn") or cfg.norm not in norms or cfg.activation not in _ACTIVATION:
        return None
    if cfg.norm in ("batch", "ghost_batch", "batch_renorm") and (batch_size < 2 or cfg.bn_eps <= 0):
        return None  # nn.BatchNorm1d raises for these; autograd shows its message
    if _unsupported_hooks(model) or len({p.dtype for p in model.parameters()}) != 1:
        return None
    return MLPStep(model)


def _set_grad(param: nn.Parameter, grad: torch.Tensor) -> None:
    """A fresh gradient tensor each step, as ``zero_grad(set_to_none=True)`` + autograd give;
    none for a frozen parameter (``requires_grad=False``), which optimisers then skip."""
    param.grad = grad if param.requires_grad else None


# ------------------------------------------------------------------ the fused step
# For the common case (no hooks, every parameter trained, SGD/momentum/Adam) the whole step, forward,
# loss, backward and update, is one TorchScript function: one call from Python instead of
# about forty, and TorchScript runs without holding Python's GIL, so runs on worker threads
# really run side by side (measured in benchmarks/bench_training.py). The ops are the same
# aten kernels as MLPStep's (CPU fusion is off by default), so the numbers are the same.
# torch.jit.script is deprecated in favour of torch.compile, which costs ~15 s to compile
# these models (issue 11); if scripting is unavailable, MLPStep's Python path runs instead.
_ACTIVATION_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "identity": 3}
_PLACEMENT_CODES = {"none": 0, "before": 1, "after": 2}


def _activate(x: torch.Tensor, activation: int) -> torch.Tensor:
    if activation == 0:
        return torch.sigmoid_(x)
    if activation == 1:
        return torch.tanh_(x)
    if activation == 2:
        return torch.relu_(x)
    return x


def _activation_backward(grad: torch.Tensor, a: torch.Tensor, activation: int) -> torch.Tensor:
    if activation == 0:
        return torch.ops.aten.sigmoid_backward(grad, a)
    if activation == 1:
        return torch.ops.aten.tanh_backward(grad, a)
    if activation == 2:
        return torch.ops.aten.threshold_backward(grad, a, 0)
    return grad


def _running_average_factor(count: torch.Tensor, momentum: float, cumulative: bool) -> float:
    """nn.BatchNorm's weight of this batch in the running averages: ``num_batches_tracked``
    counts the batch; ``momentum=None`` (cumulative) gives 1 / that count. ``count`` is one
    layer's counter, or the (K,) counters of K stacked models (all equal)."""
    count.add_(1)
    if cumulative:
        return 1.0 / float(count.view(-1)[0].item())
    return momentum


_SGD, _MOMENTUM, _ADAM = 0, 1, 2
_NORM_KINDS = {nn.BatchNorm1d: 0, nn.BatchNorm2d: 0, nn.LayerNorm: 1, nn.GroupNorm: 2, GhostBatchNorm1d: 3, BatchRenorm1d: 4}


def _norm(v: torch.Tensor, i: int, kind: int, size: int, gammas: List[torch.Tensor], betas: List[torch.Tensor], running_means: List[torch.Tensor],
          running_vars: List[torch.Tensor], counts: List[torch.Tensor], momentum: float, cumulative: bool, eps: float,
          r_limit: float, d_limit: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Norm layer i in training mode, ``(out, mean, invstd)``, by the kernels the modules call:
    ``nn.BatchNorm1d`` (kind 0, over the batch, updating the running statistics),
    ``nn.LayerNorm`` (1, over each example's features), ``nn.GroupNorm`` (2, over each
    example's ``size`` groups of features), bnviz's ``GhostBatchNorm1d`` (3, BN on each
    ghost batch of ``size`` examples in turn; mean and invstd stacked per ghost batch) and
    ``BatchRenorm1d`` (4, with the clipping limits in force, ``r_limit``, ``d_limit``; its
    ops as the module's forward; "mean" holds the batch mean, r and d stacked)."""
    if kind == 0:
        factor = _running_average_factor(counts[i], momentum, cumulative)
        return torch.native_batch_norm(v, gammas[i], betas[i], running_means[i], running_vars[i], True, factor, eps)
    if kind == 1:
        return torch.native_layer_norm(v, [v.shape[1]], gammas[i], betas[i], eps)
    if kind == 2:
        return torch.native_group_norm(v, gammas[i], betas[i], v.shape[0], v.shape[1], v[0, 0].numel(), size, eps)
    if kind == 4:
        batch_var, batch_mean = torch.var_mean(v, [0], correction=0)
        batch_std = torch.sqrt(batch_var + eps)
        running_std = torch.sqrt(running_vars[i] + eps)
        r = (batch_std / running_std).clamp(1.0 / r_limit, r_limit)
        d = ((batch_mean - running_means[i]) / running_std).clamp(-d_limit, d_limit)
        scale = r / batch_std
        shift = d - batch_mean * scale
        scale, shift = scale * gammas[i], shift * gammas[i] + betas[i]
        factor = _running_average_factor(counts[i], momentum, cumulative)
        count = v.shape[0]
        running_means[i].mul_(1 - factor).add_(factor * batch_mean)
        running_vars[i].mul_(1 - factor).add_(factor * batch_var * count / (count - 1))
        return v * scale + shift, torch.stack([batch_mean, r, d]), batch_std.reciprocal()
    outs: List[torch.Tensor] = []
    means: List[torch.Tensor] = []
    invstds: List[torch.Tensor] = []
    for part in v.split(ghost_batch_sizes(v.shape[0], size)):
        factor = _running_average_factor(counts[i], momentum, cumulative)
        out, mean, invstd = torch.native_batch_norm(part, gammas[i], betas[i], running_means[i], running_vars[i], True, factor, eps)
        outs.append(out)
        means.append(mean)
        invstds.append(invstd)
    return torch.cat(outs), torch.stack(means), torch.stack(invstds)


def _norm_backward(grad: torch.Tensor, v: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, i: int, kind: int, size: int, gammas: List[torch.Tensor],
                   betas: List[torch.Tensor], running_means: List[torch.Tensor], running_vars: List[torch.Tensor], eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d input, d gamma, d beta)`` of :func:`_norm`, by autograd's own backward kernels."""
    if kind == 0:
        return torch.ops.aten.native_batch_norm_backward(grad, v, gammas[i], running_means[i], running_vars[i], mean, invstd, True, eps, [True, True, True])
    if kind == 1:
        return torch.ops.aten.native_layer_norm_backward(grad, v, [v.shape[1]], mean, invstd, gammas[i], betas[i], [True, True, True])
    if kind == 2:
        return torch.ops.aten.native_group_norm_backward(grad, v, mean, invstd, gammas[i], v.shape[0], v.shape[1], v[0, 0].numel(), size, [True, True, True])
    if kind == 4:  # r and d are constants (stop_gradient): BN's backward with weight gamma * r; d gamma = r * (BN's) + d * d beta
        r, d = mean[1], mean[2]
        grad_in, gamma_grad, beta_grad = torch.ops.aten.native_batch_norm_backward(
            grad, v, gammas[i] * r, running_means[i], running_vars[i], mean[0], invstd, True, eps, [True, True, True])
        return grad_in, gamma_grad * r + beta_grad * d, beta_grad
    sizes = ghost_batch_sizes(v.shape[0], size)
    grad_parts, v_parts = grad.split(sizes), v.split(sizes)
    grads_in: List[torch.Tensor] = []
    gamma_grad, beta_grad = torch.zeros_like(gammas[i]), torch.zeros_like(betas[i])
    for c in range(len(sizes)):
        grad_in, gamma_part, beta_part = torch.ops.aten.native_batch_norm_backward(
            grad_parts[c], v_parts[c], gammas[i], running_means[i], running_vars[i], mean[c], invstd[c], True, eps, [True, True, True])
        grads_in.append(grad_in)
        gamma_grad, beta_grad = gamma_grad + gamma_part, beta_grad + beta_part
    return torch.cat(grads_in), gamma_grad, beta_grad


def _norm_settings(norm: nn.Module) -> tuple[int, int, float, bool, float]:
    """``(kind, size, momentum, cumulative, eps)`` of a norm module for :func:`_norm`."""
    momentum = getattr(norm, "momentum", 0.0)
    size = norm.num_groups if isinstance(norm, nn.GroupNorm) else getattr(norm, "virtual_batch_size", 1)
    return _NORM_KINDS[type(norm)], int(size), 0.0 if momentum is None else float(momentum), momentum is None, float(norm.eps)


def _norm_buffers(norm: nn.Module) -> tuple[list, list, list]:
    """A norm module's running statistics as :func:`_norm`'s lists (none for LN, GN)."""
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return [norm.running_mean], [norm.running_var], [norm.num_batches_tracked]
    return [], [], []


def _apply_updates(params: List[torch.Tensor], grads: List[torch.Tensor], optimizer: int, lr: float, first: bool, hyper: List[float],
                   firsts: List[torch.Tensor], seconds: List[torch.Tensor], steps: List[torch.Tensor]) -> None:
    """Every parameter's update, as torch.optim computes it on the CPU (its single-tensor
    code, each op here its ``_foreach`` form: one call for all parameters, the same kernel
    per tensor; defaults: no weight decay, dampening, Nesterov or AMSGrad): plain SGD; SGD
    with momentum ``hyper[0]`` (buffers ``firsts``, a copy of the gradients at the
    ``first`` step); Adam with betas ``hyper[0:2]`` and eps ``hyper[2]`` (moments
    ``firsts``, ``seconds``, step counts ``steps``, all equal: every parameter is updated)."""
    if optimizer == 0:
        torch._foreach_add_(params, grads, alpha=-lr)
    elif optimizer == 1:
        if first:
            torch._foreach_copy_(firsts, grads)
        else:
            torch._foreach_mul_(firsts, hyper[0])
            torch._foreach_add_(firsts, grads, alpha=1)
        torch._foreach_add_(params, firsts, alpha=-lr)
    else:
        beta1, beta2, eps = hyper[0], hyper[1], hyper[2]
        torch._foreach_add_(steps, 1)
        torch._foreach_lerp_(firsts, grads, 1 - beta1)
        torch._foreach_mul_(seconds, beta2)
        torch._foreach_addcmul_(seconds, grads, grads, 1 - beta2)
        step = float(steps[0])
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        denom = torch._foreach_sqrt(seconds)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, firsts, denom, -step_size)


def _fused_step(
    x: torch.Tensor, y: torch.Tensor, weights: List[torch.Tensor], biases: List[torch.Tensor],
    gammas: List[torch.Tensor], betas: List[torch.Tensor], running_means: List[torch.Tensor], running_vars: List[torch.Tensor],
    counts: List[torch.Tensor], pools: List[bool], activation: int, placement: int, norm_kind: int, norm_size: int, momentum: float, cumulative: bool, eps: float,
    r_limit: float, d_limit: float,
    optimizer: int, lr: float, first: bool, hyper: List[float], firsts: List[torch.Tensor], seconds: List[torch.Tensor], steps: List[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One training step of an MLP, or of the CNN (``pools`` non-empty: each hidden layer a
    3x3 convolution, padding 1, then a 2x2 max-pool where ``pools[i]``), in place on its
    tensors and the optimiser's state (see
    :func:`_apply_updates`; parameter k is weight i at 2i, bias i at 2i+1, then the norm's gamma j
    at 2L+2j and beta j at 2L+2j+1; the norms are those
    :func:`_norm`): ``(loss, share of the batch classified right)``. No update when the
    loss is not finite."""
    conv = len(pools) > 0
    h = x.flatten(1) if not conv else (x.unsqueeze(1) if x.dim() == 3 else x)  # uint8 batches come as (B, 28, 28)
    inputs: List[torch.Tensor] = []
    pool_inputs: List[torch.Tensor] = []
    pool_indices: List[torch.Tensor] = []
    acts: List[torch.Tensor] = []
    bn_inputs: List[torch.Tensor] = []
    means: List[torch.Tensor] = []
    invstds: List[torch.Tensor] = []
    layers = len(weights)
    for i in range(layers - 1):
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
                n, mean, invstd = _norm(z, i, norm_kind, norm_size, gammas, betas, running_means, running_vars, counts, momentum, cumulative, eps, r_limit, d_limit)
                bn_inputs.append(z)
                a = _activate(n, activation)
                h = a
            else:
                a = _activate(z, activation)
                h, mean, invstd = _norm(a, i, norm_kind, norm_size, gammas, betas, running_means, running_vars, counts, momentum, cumulative, eps, r_limit, d_limit)
                bn_inputs.append(a)
            means.append(mean)
            invstds.append(invstd)
        acts.append(a)
        if conv and pools[i]:
            pool_inputs.append(h)
            h, index = torch.ops.aten.max_pool2d_with_indices(h, [2, 2], [2, 2], [0, 0], [1, 1], False)
            pool_indices.append(index)
        else:
            pool_inputs.append(h)
            pool_indices.append(h)  # unused
    head_shape = h.shape
    h = h.flatten(1)
    inputs.append(h)
    logits = torch.addmm(biases[layers - 1], h, weights[layers - 1].t())
    log_probs = torch.log_softmax(logits, 1)
    loss, total_weight = torch.ops.aten.nll_loss_forward(log_probs, y, None, 1, -100)
    correct = (logits.argmax(1) == y).float().mean()
    if not math.isfinite(float(loss)):
        return loss, correct
    grad = torch.ops.aten.nll_loss_backward(torch.ones([], dtype=log_probs.dtype, device=log_probs.device), log_probs, y, None, 1, -100, total_weight)
    grad = torch.ops.aten._log_softmax_backward_data(grad, log_probs, 1, log_probs.dtype)
    params: List[torch.Tensor] = []
    grads: List[torch.Tensor] = []
    order: List[int] = []  # each parameter's k, for the optimiser's state
    for i in range(layers - 1, -1, -1):
        params += [weights[i], biases[i]]
        order += [2 * i, 2 * i + 1]
        if conv and i < layers - 1:
            grad_input, weight_grad, bias_grad = torch.ops.aten.convolution_backward(
                grad, inputs[i], weights[i], [weights[i].shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [i > 0, True, True])
            grads += [weight_grad, bias_grad]
        else:
            grads += [grad.t().mm(inputs[i]), grad.sum(0)]
            grad_input = grad
            if i > 0:
                grad_input = grad.mm(weights[i])
                if conv:
                    grad_input = grad_input.view(head_shape)
        if i > 0:
            j = i - 1
            grad = grad_input
            if conv and pools[j]:
                grad = torch.ops.aten.max_pool2d_with_indices_backward(grad, pool_inputs[j], [2, 2], [2, 2], [0, 0], [1, 1], False, pool_indices[j])
            if placement == 0:
                grad = _activation_backward(grad, acts[j], activation)
            else:
                if placement == 1:
                    grad = _activation_backward(grad, acts[j], activation)
                grad, gamma_grad, beta_grad = _norm_backward(grad, bn_inputs[j], means[j], invstds[j], j, norm_kind, norm_size, gammas, betas, running_means, running_vars, eps)
                if placement == 2:
                    grad = _activation_backward(grad, acts[j], activation)
                params += [gammas[j], betas[j]]
                grads += [gamma_grad, beta_grad]
                order += [2 * layers + 2 * j, 2 * layers + 2 * j + 1]
    _apply_updates(params, grads, optimizer, lr, first, hyper, [firsts[k] for k in order] if len(firsts) > 0 else firsts,
                   [seconds[k] for k in order] if len(seconds) > 0 else seconds, [steps[k] for k in order] if len(steps) > 0 else steps)
    return loss, correct


def _stacked_batch_norm(v: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                        factor: float, eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # all K models' units side by side: (K, B, W) -> (B, K*W); BN's statistics are per unit
    count, batch, width = v.shape[0], v.shape[1], v.shape[2]
    flat = v.transpose(0, 1).reshape(batch, count * width)
    out, mean, invstd = torch.native_batch_norm(flat, gamma.view(-1), beta.view(-1), running_mean.view(-1), running_var.view(-1), True, factor, eps)
    return out.view(batch, count, width).transpose(0, 1), flat, mean, invstd


def _stacked_batch_norm_backward(grad: torch.Tensor, flat: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, gamma: torch.Tensor,
                                 running_mean: torch.Tensor, running_var: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    count, batch, width = grad.shape[0], grad.shape[1], grad.shape[2]
    grad_flat = grad.transpose(0, 1).reshape(batch, count * width)
    grad_in, gamma_grad, beta_grad = torch.ops.aten.native_batch_norm_backward(
        grad_flat, flat, gamma.view(-1), running_mean.view(-1), running_var.view(-1), mean, invstd, True, eps, [True, True, True])
    return grad_in.view(batch, count, width).transpose(0, 1), gamma_grad.view(count, width), beta_grad.view(count, width)


def _stacked_update(param: torch.Tensor, grad: torch.Tensor, keep: torch.Tensor, all_kept: bool, lr: float) -> None:
    """``param[k] -= lr * grad[k]`` for the models with ``keep[k]``; the others stay as they are."""
    if not all_kept:
        shape = [keep.shape[0]] + [1] * (grad.dim() - 1)
        grad = grad.masked_fill(keep.logical_not().view(shape), 0.0)
    param.sub_(grad, alpha=lr)


def _fused_stacked_sgd_step(
    x: torch.Tensor, y: torch.Tensor, weights: List[torch.Tensor], biases: List[torch.Tensor],
    gammas: List[torch.Tensor], betas: List[torch.Tensor], running_means: List[torch.Tensor], running_vars: List[torch.Tensor],
    counts: List[torch.Tensor], training: torch.Tensor, activation: int, placement: int, lr: float, momentum: float, cumulative: bool, eps: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of K stacked MLPs (:class:`StackedMLPStep`'s tensors, in place):
    ``(every model's loss (K,), share of its batch classified right (K,))``. Only the
    models with ``training[k]`` and a finite loss are updated."""
    count, batch = y.shape[0], y.shape[1]
    h = x.reshape(count, batch, -1)
    inputs: List[torch.Tensor] = []
    acts: List[torch.Tensor] = []
    flats: List[torch.Tensor] = []
    means: List[torch.Tensor] = []
    invstds: List[torch.Tensor] = []
    layers = len(weights)
    for i in range(layers - 1):
        inputs.append(h)
        z = torch.baddbmm(biases[i].unsqueeze(1), h, weights[i])
        if placement == 0:
            a = _activate(z, activation)
            h = a
        else:
            factor = _running_average_factor(counts[i], momentum, cumulative)
            if placement == 1:
                n, flat, mean, invstd = _stacked_batch_norm(z, gammas[i], betas[i], running_means[i], running_vars[i], factor, eps)
                a = _activate(n, activation)
                h = a
            else:
                a = _activate(z, activation)
                h, flat, mean, invstd = _stacked_batch_norm(a, gammas[i], betas[i], running_means[i], running_vars[i], factor, eps)
            flats.append(flat)
            means.append(mean)
            invstds.append(invstd)
        acts.append(a)
    inputs.append(h)
    logits = torch.baddbmm(biases[layers - 1].unsqueeze(1), h, weights[layers - 1])
    log_probs = torch.log_softmax(logits, 2)
    losses = -log_probs.gather(2, y.unsqueeze(2)).squeeze(2).mean(1)
    correct = (logits.argmax(2) == y).float().mean(1)
    keep = training.logical_and(torch.isfinite(losses))
    all_kept = bool(keep.all())
    if not bool(keep.any()):
        return losses, correct
    grad = log_probs.exp()
    grad.scatter_add_(2, y.unsqueeze(2), torch.full([count, batch, 1], -1.0, dtype=grad.dtype, device=grad.device))
    grad.div_(batch)
    for i in range(layers - 1, -1, -1):
        weight_grad = torch.bmm(inputs[i].transpose(1, 2), grad)
        bias_grad = grad.sum(1)
        if i > 0:
            j = i - 1
            grad = torch.bmm(grad, weights[i].transpose(1, 2))
            if placement == 0:
                grad = _activation_backward(grad, acts[j], activation)
            elif placement == 1:
                grad = _activation_backward(grad, acts[j], activation)
                grad, gamma_grad, beta_grad = _stacked_batch_norm_backward(grad, flats[j], means[j], invstds[j], gammas[j], running_means[j], running_vars[j], eps)
                _stacked_update(gammas[j], gamma_grad, keep, all_kept, lr)
                _stacked_update(betas[j], beta_grad, keep, all_kept, lr)
            else:
                grad, gamma_grad, beta_grad = _stacked_batch_norm_backward(grad, flats[j], means[j], invstds[j], gammas[j], running_means[j], running_vars[j], eps)
                _stacked_update(gammas[j], gamma_grad, keep, all_kept, lr)
                _stacked_update(betas[j], beta_grad, keep, all_kept, lr)
                grad = _activation_backward(grad, acts[j], activation)
        _stacked_update(weights[i], weight_grad, keep, all_kept, lr)
        _stacked_update(biases[i], bias_grad, keep, all_kept, lr)
    return losses, correct


# ------------------------------------------------------------------ many steps in one call
# A chunk of steps (up to the next evaluation) runs as one TorchScript call: batches are gathered
# from the training images inside it, so Python runs once per chunk instead of once per step
# (about 0.1 ms of a 0.7 ms step), and worker threads hold the GIL only between chunks.
# The steps are the single-step functions above, so the numbers are the same.


def _gather(images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, standardise: bool,
            pixel_mean: float, pixel_std: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch: the rows of a float image tensor, or of uint8 pixels standardised with
    ``bnviz.data._standardise``'s ops (the same numbers)."""
    x = images.index_select(0, rows)
    if standardise:
        x = x.to(torch.float32).div_(255.0).sub_(pixel_mean).div_(pixel_std)
    return x, labels.index_select(0, rows)


def _fused_steps(
    images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, standardise: bool, pixel_mean: float, pixel_std: float,
    weights: List[torch.Tensor], biases: List[torch.Tensor],
    gammas: List[torch.Tensor], betas: List[torch.Tensor], running_means: List[torch.Tensor], running_vars: List[torch.Tensor],
    counts: List[torch.Tensor], pools: List[bool], activation: int, placement: int, norm_kind: int, norm_size: int, momentum: float, cumulative: bool, eps: float,
    limits: torch.Tensor,
    optimizer: int, lr: float, first: bool, hyper: List[float], firsts: List[torch.Tensor], seconds: List[torch.Tensor], steps: List[torch.Tensor],
    losses: torch.Tensor, correct: torch.Tensor, stop: bool, rollback: bool,
) -> int:
    """``rows.shape[0]`` steps of :func:`_fused_step`, step s on the batch ``rows[s]``;
    each step's loss and share classified right go to ``losses[s]``, ``correct[s]``; Batch
    Renorm's clipping limits at step s are ``limits[s]`` (empty for other norms).
    A step whose loss is not finite updates no parameter; then, as the trainer's
    ``on_nonfinite_loss`` says, the call ``stop``s there, or goes on, after restoring BN's
    running statistics as they were before the step (``rollback``) or not ("skip").
    Returns the number of steps taken."""
    count = rows.shape[0]
    buffers = running_means + running_vars + counts
    for s in range(count):
        x, y = _gather(images, labels, rows[s], standardise, pixel_mean, pixel_std)
        saved: List[torch.Tensor] = []
        if rollback:
            saved = [buffer.clone() for buffer in buffers]
        r_limit, d_limit = 1.0, 0.0
        if limits.shape[0] > 0:
            r_limit, d_limit = float(limits[s, 0]), float(limits[s, 1])
        loss, right = _fused_step(x, y, weights, biases, gammas, betas, running_means, running_vars, counts, pools, activation, placement, norm_kind,
                                  norm_size, momentum, cumulative, eps, r_limit, d_limit, optimizer, lr, first and s == 0, hyper, firsts, seconds, steps)
        losses[s] = loss
        correct[s] = right
        if not math.isfinite(float(loss)):
            if stop:
                return s + 1
            for buffer, before in zip(buffers, saved):
                buffer.copy_(before)
    return count


def _fused_stacked_sgd_steps(
    images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, standardise: bool, pixel_mean: float, pixel_std: float,
    weights: List[torch.Tensor], biases: List[torch.Tensor],
    gammas: List[torch.Tensor], betas: List[torch.Tensor], running_means: List[torch.Tensor], running_vars: List[torch.Tensor],
    counts: List[torch.Tensor], training: torch.Tensor, activation: int, placement: int, lr: float, momentum: float, cumulative: bool, eps: float,
    losses: torch.Tensor, correct: torch.Tensor,
) -> int:
    """The stacked :func:`_fused_steps` (plain SGD): ``rows`` is (steps, K, B), ``losses`` and
    ``correct`` (steps, K). Stops after the first step at which a model with ``training[k]``
    has a loss that is not finite (the caller then stops that model)."""
    steps, count, batch = rows.shape[0], rows.shape[1], rows.shape[2]
    for s in range(steps):
        x, y = _gather(images, labels, rows[s].reshape(-1), standardise, pixel_mean, pixel_std)
        step_losses, right = _fused_stacked_sgd_step(x.view(count, batch, -1), y.view(count, batch), weights, biases, gammas, betas,
                                                     running_means, running_vars, counts, training, activation, placement, lr, momentum, cumulative, eps)
        losses[s] = step_losses
        correct[s] = right
        if bool(torch.isfinite(step_losses).logical_or(training.logical_not()).logical_not().any()):
            return s + 1
    return steps


_SCRIPTING = threading.Lock()  # worker threads may ask at once: compile once, and warnings.catch_warnings is not thread-safe


def _scripted(function):
    """``function`` compiled by TorchScript (once per process), or None where that is
    unavailable or switched off (``BNVIZ_TORCHSCRIPT=0``)."""
    with _SCRIPTING:
        return _compile(function)


@functools.lru_cache(maxsize=None)
def _compile(function):
    if os.environ.get("BNVIZ_TORCHSCRIPT", "1") == "0" or not hasattr(torch, "jit"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated": see above
            scripted = torch.jit.script(function)
    except Exception:  # noqa: BLE001 - any scripting failure means: use the Python path
        return None
    try:  # helper calls inlined: the same ops without a call frame each (about 4 % of a step, measured)
        torch._C._jit_pass_inline(scripted.graph)
    except Exception:  # noqa: BLE001 - a private pass: without it the same graph runs, a little slower
        pass
    return scripted


def _as_written(scripted):
    """Calls of ``scripted`` that run its graph as written. The executor's optimisation passes
    rewrite it into ops that round differently (1 ulp), and then a run taking the Python step
    (a probe reading gradients) would drift from one taking the fused step; same speed
    (measured). The switch is per thread in torch, so every call sets it; bnviz runs no other
    TorchScript."""
    if scripted is None:
        return None

    def call(*args):
        torch._C._set_graph_executor_optimize(False)
        return scripted(*args)

    return call


def scripted_step():
    return _as_written(_scripted(_fused_step))


def scripted_stacked_step():
    return _as_written(_scripted(_fused_stacked_sgd_step))


def scripted_steps():
    return _as_written(_scripted(_fused_steps))


def scripted_stacked_steps():
    return _as_written(_scripted(_fused_stacked_sgd_steps))


class MLPStep:
    """``forward(x, y) -> (loss, logits)`` then ``backward()``: one training step's gradients.

    The model's parameters are used in place (nothing is copied), so evaluation,
    recorders and probes see the model as it trains.
    """

    def __init__(self, model: Net):
        self.model = model
        # the CNN has the fused calls only; where they decline (a hook, a gradient to read) it trains through autograd
        self.has_python_step = model.cfg.arch == "mlp"
        self.norm_first = model.cfg.placement == "before"
        self.activation_backward = _BACKWARD_FROM_OUTPUT[model.cfg.activation]
        self.activation = _ACTIVATION[model.cfg.activation]  # in place: its input is not needed again
        self.activation_copy = ACTIVATIONS[model.cfg.activation]()
        self.linears = [block.linear for block in model.blocks] + [model.head]
        self.norms = [block.norm if type(block.norm) in _NORM_KINDS else None for block in model.blocks]
        self._renorm = next((n for n in self.norms if isinstance(n, BatchRenorm1d)), None)  # its step count sets the clipping limits
        self._saved: tuple = ()
        self.parameters = list(model.parameters())
        self.modules = list(model.modules())
        self._fused_arguments = None

    def _batch_norm(self, norm: nn.Module, x: torch.Tensor):
        # the norm module's forward in training mode (BN updates its running statistics): the fused step's function
        kind, size, momentum, cumulative, eps = _norm_settings(norm)
        limits = norm.current_limits() if isinstance(norm, BatchRenorm1d) else (1.0, 0.0)
        out, mean, invstd = _norm(x, 0, kind, size, [norm.weight], [norm.bias], *_norm_buffers(norm), momentum, cumulative, eps, *limits)
        return out, (x, mean, invstd)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._saved_blocks, self._head_input = [], None
        if _hooked(*self.modules):  # recorders watching: call their hooks as the modules would
            logits = _call(self.model, self._logits, x)
        else:
            logits = self._plain_logits(x)
        # cross-entropy as F.cross_entropy computes it: log-softmax, then the mean NLL
        log_probs = torch.log_softmax(logits, dim=1)
        loss, total_weight = torch.ops.aten.nll_loss_forward(log_probs, y, None, _MEAN, _IGNORE_INDEX)
        self._saved = (self._saved_blocks, self._head_input, log_probs, total_weight, y)
        return loss, logits

    def _plain_logits(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for linear, norm in zip(self.linears[:-1], self.norms):
            block_input = h
            z = torch.addmm(linear.bias, h, linear.weight.t())
            bn = None
            if norm is None:
                h = a = self.activation(z)
            elif self.norm_first:
                n, bn = self._batch_norm(norm, z)
                h = a = self.activation(n)
            else:
                a = self.activation(z)
                h, bn = self._batch_norm(norm, a)
            self._saved_blocks.append((block_input, bn, a))
        return self._head(h)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for index, block in enumerate(self.model.blocks):
            h = _call(block, lambda v, i=index: self._block(i, v), h)
        head = self.linears[-1]
        return _call(head, self._head, h)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        self._head_input = h
        head = self.linears[-1]
        return torch.addmm(head.bias, h, head.weight.t())

    def _block(self, index: int, h: torch.Tensor) -> torch.Tensor:
        block, linear, norm = self.model.blocks[index], self.linears[index], self.norms[index]
        # in place only when no hook could be holding on to the activation's input
        activation = self.activation_copy if _hooked(block, block.linear, block.norm, block.act) else self.activation
        kept = {"input": h, "bn": None}

        def linear_forward(v: torch.Tensor) -> torch.Tensor:
            kept["input"] = v
            return torch.addmm(linear.bias, v, linear.weight.t())

        def batch_norm(v: torch.Tensor) -> torch.Tensor:
            out, kept["bn"] = self._batch_norm(norm, v)
            return out

        def act(v: torch.Tensor) -> torch.Tensor:
            kept["a"] = activation(v)
            return kept["a"]

        z = _call(linear, linear_forward, h)
        if norm is None:
            out = _call(block.act, act, _call(block.norm, lambda v: v, z))  # block.norm is nn.Identity
        elif self.norm_first:
            out = _call(block.act, act, _call(norm, batch_norm, z))
        else:
            out = _call(norm, batch_norm, _call(block.act, act, z))
        self._saved_blocks.append((kept["input"], kept["bn"], kept["a"]))
        return out

    def _batch_norm_backward(self, norm: nn.Module, grad: torch.Tensor, bn_saved) -> torch.Tensor:
        x, mean, invstd = bn_saved
        kind, size, _, _, eps = _norm_settings(norm)
        running_means, running_vars, _ = _norm_buffers(norm)
        grad_in, grad_weight, grad_bias = _norm_backward(grad, x, mean, invstd, 0, kind, size, [norm.weight], [norm.bias], running_means, running_vars, eps)
        _set_grad(norm.weight, grad_weight)
        _set_grad(norm.bias, grad_bias)
        return grad_in

    @torch.no_grad()
    def backward(self) -> None:
        """d loss / d every parameter, written into ``param.grad``."""
        saved, h, log_probs, total_weight, y = self._saved
        # d loss / d logits = (softmax - one_hot) / B, through autograd's own two kernels
        grad = torch.ops.aten.nll_loss_backward(torch.ones((), dtype=log_probs.dtype, device=log_probs.device), log_probs, y, None, _MEAN, _IGNORE_INDEX, total_weight)
        grad = torch.ops.aten._log_softmax_backward_data(grad, log_probs, 1, log_probs.dtype)
        head = self.linears[-1]
        _set_grad(head.weight, grad.t().mm(h))
        _set_grad(head.bias, grad.sum(0))
        grad = grad.mm(head.weight)
        for index in range(len(saved) - 1, -1, -1):
            block_input, bn, a = saved[index]
            norm, linear = self.norms[index], self.linears[index]
            if norm is None:
                grad = self.activation_backward(grad, a)
            elif self.norm_first:
                grad = self._batch_norm_backward(norm, self.activation_backward(grad, a), bn)
            else:
                grad = self.activation_backward(self._batch_norm_backward(norm, grad, bn), a)
            _set_grad(linear.weight, grad.t().mm(block_input))
            _set_grad(linear.bias, grad.sum(0))
            if index > 0:  # the first layer needs no gradient for the images
                grad = grad.mm(linear.weight)
        self._saved = ()

    def fused_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer):
        """Forward, backward and ``optimizer``'s update in one TorchScript call: ``(loss, share
        classified right)``, or None when this step needs the Python path (a hook to call, a
        frozen parameter, an optimiser setting :func:`_update` does not cover, no TorchScript).
        Parameters are not updated when the loss is not finite."""
        step = scripted_step()
        arguments = self._fused_arguments_for(optimizer)
        if step is None or arguments is None:
            return None
        tensors, settings, update = arguments
        with torch.no_grad():
            return step(x, y, *tensors, *settings, *self._renorm_limits(1)[0], *update)

    def fused_steps(self, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, standardise: bool,
                    optimizer: torch.optim.Optimizer, losses: torch.Tensor, correct: torch.Tensor, on_nonfinite_loss: str = "stop") -> int | None:
        """``len(rows)`` fused steps in one TorchScript call (see :func:`_fused_steps`; the
        policy is the trainer's ``on_nonfinite_loss``): the number of steps taken, or None
        where the Python path is needed."""
        steps = scripted_steps()
        arguments = self._fused_arguments_for(optimizer)
        if steps is None or arguments is None:
            return None
        tensors, settings, update = arguments
        renorm = self._renorm_limits(len(rows))
        limits = torch.tensor(renorm if self._renorm is not None else [], dtype=torch.float64).reshape(-1, 2)
        with torch.no_grad():
            return steps(images, labels, rows, standardise, MNIST_PIXEL_MEAN, MNIST_PIXEL_STD, *tensors, *settings, limits, *update, losses, correct,
                         on_nonfinite_loss == "stop", on_nonfinite_loss == "rollback")

    def _renorm_limits(self, steps: int) -> list[tuple[float, float]]:
        """Batch Renorm's clipping limits ``(r_max, d_max)`` for the next ``steps`` steps, as
        its module computes them from its step count (every layer's count is the same);
        ``(1, 0)`` where there is no Batch Renorm (unused)."""
        if self._renorm is None:
            return [(1.0, 0.0)] * steps
        done = int(self._renorm.num_batches_tracked)
        return [renorm_limits(done + s, self._renorm.r_max, self._renorm.d_max, self._renorm.warmup_steps) for s in range(steps)]

    def fusable(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether the fused calls can take the next step (else they return None)."""
        return scripted_step() is not None and scripted_steps() is not None and self._fused_arguments_for(optimizer, dry_run=True) is not None

    def _fused_arguments_for(self, optimizer: torch.optim.Optimizer, dry_run: bool = False):
        """The fused functions' arguments after the batch: the model's own tensors (updated in
        place), its settings, and the optimiser's settings and state (created as torch.optim
        creates it, so either path can take the next step). None when the Python path is needed."""
        if _hooked(*self.modules) or not all(p.requires_grad for p in self.parameters):
            return None
        if self._fused_arguments is None:
            norms = [n for n in self.norms if n is not None]
            buffers = [_norm_buffers(n) for n in norms]
            tensors = ([l.weight for l in self.linears], [l.bias for l in self.linears], [n.weight for n in norms], [n.bias for n in norms],
                       *([b for layer in buffers for b in layer[k]] for k in range(3)),
                       [block.pool is not None for block in self.model.blocks] if self.model.cfg.arch == "cnn" else [])
            settings = (_ACTIVATION_CODES[self.model.cfg.activation], 0 if not norms else 1 if self.norm_first else 2,
                        *(_norm_settings(norms[0]) if norms else (0, 1, 0.0, False, 0.0)))
            # _fused_step's parameter order: weight, bias of each linear layer, then gamma, beta of each BN
            ordered = [p for l in self.linears for p in (l.weight, l.bias)] + [p for n in norms for p in (n.weight, n.bias)]
            self._fused_arguments = (tensors, settings, ordered)
        tensors, settings, ordered = self._fused_arguments
        update = _optimizer_arguments(optimizer, ordered, dry_run)
        return None if update is None else (tensors, settings, update)

    @torch.no_grad()
    def sgd_step(self, lr: float) -> None:
        """Plain SGD, ``p -= lr * p.grad``: what ``torch.optim.SGD(momentum=0).step()`` computes,
        in one call instead of its per-step bookkeeping."""
        trained = [p for p in self.parameters if p.grad is not None]  # frozen ones have none, as with autograd
        torch._foreach_add_(trained, [p.grad for p in trained], alpha=-lr)


class StackedMLPStep:
    """K models of one configuration (different seeds, batches and weights) trained as one.

    Every per-model matmul becomes one batched matmul over K, and BN runs once over the
    (B, K x width) matrix of all models' units: per-unit statistics, so each model's
    numbers are what it would compute alone (to float rounding: another matmul kernel).
    Each model's parameters and BN buffers become views into the stacked tensors, so each
    model still *is* its own ``nn.Module`` for evaluation and recorders.

    For plain-SGD runs with no recorder hooks; :func:`bnviz.train.stack_groups` decides.
    """

    def __init__(self, models: list[Net]):
        self.models = models
        self.count = len(models)
        first = models[0]
        self.norm_first = first.cfg.placement == "before"
        self.activation_code = _ACTIVATION_CODES[first.cfg.activation]
        with torch.no_grad():
            # weights as (K, in, out) so that h (K, B, in) @ W -> (K, B, out); model k's weight is W[k].T
            self.weights = [self._stack([m.blocks[i].linear.weight for m in models] if i < len(first.blocks) else [m.head.weight for m in models], transpose=True) for i in range(len(first.blocks) + 1)]
            self.biases = [self._stack([m.blocks[i].linear.bias for m in models] if i < len(first.blocks) else [m.head.bias for m in models]) for i in range(len(first.blocks) + 1)]
            self.has_norm = first.cfg.norm == "batch"
            if self.has_norm:
                norms = [[m.blocks[i].norm for m in models] for i in range(len(first.blocks))]
                self.gammas = [self._stack([n.weight for n in layer]) for layer in norms]
                self.betas = [self._stack([n.bias for n in layer]) for layer in norms]
                self.running_means = [self._stack_buffers(layer, "running_mean") for layer in norms]
                self.running_vars = [self._stack_buffers(layer, "running_var") for layer in norms]
                self.counts = [self._stack_buffers(layer, "num_batches_tracked") for layer in norms]
                self.momentum, self.eps = norms[0][0].momentum, norms[0][0].eps

    @staticmethod
    def _stack(params: list[nn.Parameter], transpose: bool = False) -> torch.Tensor:
        """One (K, ...) tensor holding every model's copy of a parameter; each model's
        parameter becomes a view into it (``param.data`` swap: same Parameter object)."""
        stacked = torch.stack([p.detach().t() if transpose else p.detach() for p in params]).contiguous()
        for index, param in enumerate(params):
            param.data = stacked[index].t() if transpose else stacked[index]
        return stacked

    @staticmethod
    def _stack_buffers(norms: list[nn.BatchNorm1d], name: str) -> torch.Tensor:
        stacked = torch.stack([getattr(n, name) for n in norms]).contiguous()
        for index, norm in enumerate(norms):
            norm._buffers[name] = stacked[index]
        return stacked

    def fused_sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, training: torch.Tensor):
        """The whole step in one call: ``(losses (K,), share classified right (K,))``, updating
        only the models with ``training[k]`` and a finite loss. TorchScript where it is
        available, else the same function run by Python."""
        step = scripted_stacked_step() or _fused_stacked_sgd_step
        with torch.no_grad():
            return step(x, y, *self._model_arguments(training, lr))

    def fused_sgd_steps(self, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, standardise: bool,
                        lr: float, training: torch.Tensor, losses: torch.Tensor, correct: torch.Tensor) -> int:
        """Many steps in one call, ``rows`` (steps, K, B): see :func:`_fused_stacked_sgd_steps`."""
        steps = scripted_stacked_steps() or _fused_stacked_sgd_steps
        with torch.no_grad():
            return steps(images, labels, rows, standardise, MNIST_PIXEL_MEAN, MNIST_PIXEL_STD, *self._model_arguments(training, lr), losses, correct)

    def _model_arguments(self, training: torch.Tensor, lr: float):
        norm = (self.gammas, self.betas, self.running_means, self.running_vars, self.counts) if self.has_norm else ([], [], [], [], [])
        placement = 0 if not self.has_norm else 1 if self.norm_first else 2
        momentum = self.momentum if self.has_norm else 0.0
        return (self.weights, self.biases, *norm, training, self.activation_code, placement, float(lr),
                0.0 if momentum is None else float(momentum), momentum is None, float(self.eps) if self.has_norm else 0.0)


def _optimizer_arguments(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], dry_run: bool = False):
    """``(code, lr, first, hyper, firsts, seconds, steps)`` for :func:`_update`, reading and
    creating ``optimizer``'s state for ``params`` as torch.optim does; None for an optimiser
    or a setting it does not cover (the Python path then calls ``optimizer.step()``)."""
    if len(optimizer.param_groups) != 1 or {id(p) for p in optimizer.param_groups[0]["params"]} != {id(p) for p in params}:
        return None
    group = optimizer.param_groups[0]
    if isinstance(group["lr"], torch.Tensor) or group.get("weight_decay", 0) != 0 or group.get("maximize") or group.get("differentiable") or group.get("fused"):
        return None
    state = optimizer.state
    if type(optimizer) is torch.optim.SGD:
        if group["dampening"] != 0 or group["nesterov"]:
            return None
        if group["momentum"] == 0:
            return _SGD, float(group["lr"]), False, [], [], [], []
        first = any("momentum_buffer" not in state[p] or state[p]["momentum_buffer"] is None for p in params)
        if first and not dry_run:  # torch.optim.SGD's buffer starts as a copy of the first gradient: _update copies into it
            for p in params:
                state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        buffers = [] if dry_run else [state[p]["momentum_buffer"] for p in params]
        return _MOMENTUM, float(group["lr"]), first, [float(group["momentum"])], buffers, [], []
    if type(optimizer) is torch.optim.Adam:
        if group["amsgrad"] or group.get("capturable") or group.get("decoupled_weight_decay") or isinstance(group["betas"][0], torch.Tensor):
            return None
        if not dry_run:
            for p in params:
                if len(state[p]) == 0:  # as Adam._init_group creates it
                    state[p]["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                    state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        firsts, seconds, steps = ([], [], []) if dry_run else ([state[p][name] for p in params] for name in ("exp_avg", "exp_avg_sq", "step"))
        return _ADAM, float(group["lr"]), False, [float(beta1), float(beta2), float(group["eps"])], firsts, seconds, steps
    return None


def stack_key(model: Net, batch_size: int):
    """Models with equal keys can train as one :class:`StackedMLPStep` (None: not stackable)."""
    cfg = model.cfg
    if cfg.arch != "mlp" or cfg.norm not in ("none", "batch") or engine_for(model, batch_size) is None or _hooked(*model.modules()):
        return None
    return (cfg, batch_size, next(model.parameters()).dtype, next(model.parameters()).device)
