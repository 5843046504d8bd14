"""Plain SGD, SGD with momentum and Adam, written out as torch.optim computes them.

Why not ``torch.optim`` itself: building any torch.optim optimizer imports
``torch._dynamo`` (``Optimizer.add_param_group`` is wrapped by ``torch._disable_dynamo``,
which imports the compiler on its first call), whether or not anything is compiled.
With CPU-only torch that is 71 MiB of resident memory (the hosted tier's budget for the
whole app is 600 MiB) and 1.5 s on a fresh server's first computation, for a compiler
bnviz never uses.

The arithmetic is torch.optim's single-tensor code (its default for CPU tensors), op for
op and with the same state (``momentum_buffer``; ``step``, ``exp_avg``, ``exp_avg_sq``),
so a run trains bit for bit as with torch.optim: ``tests/test_optim.py`` holds both to
``torch.equal`` for many steps. Only the settings bnviz uses exist: no weight decay,
dampening, Nesterov, AMSGrad or parameter groups.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import torch


class Optimizer:
    """One group of parameters (``param_groups[0]``: the parameters and the settings) and a
    state per parameter, as torch.optim keeps them."""

    def __init__(self, params: Iterable[torch.Tensor], **settings):
        params = list(params)
        if not params:
            raise ValueError("an optimizer needs at least one parameter")
        self.param_groups = [{"params": params, **settings}]
        self.state: defaultdict[torch.Tensor, dict] = defaultdict(dict)

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    def _with_grads(self) -> list[torch.Tensor]:
        return [p for p in self.params if p.grad is not None]


class SGD(Optimizer):
    """``w <- w - lr * g``; with ``momentum`` m: ``b <- m * b + g`` (b starts as a copy of
    the first gradient), ``w <- w - lr * b`` (PyTorch's form; Keras folds lr into b)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0):
        if lr < 0 or momentum < 0:
            raise ValueError("lr and momentum must be non-negative")
        super().__init__(params, lr=lr, momentum=momentum)

    @torch.no_grad()
    def step(self) -> None:
        lr, momentum = self.param_groups[0]["lr"], self.param_groups[0]["momentum"]
        for p in self._with_grads():
            grad = p.grad
            if momentum != 0:
                state = self.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = grad.detach().clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(grad, alpha=1)
                grad = state["momentum_buffer"]
            p.add_(grad, alpha=-lr)


class Adam(Optimizer):
    """Kingma & Ba's Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8 added to the
    bias-corrected root of the second moment)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("lr and eps must be non-negative and both betas in [0, 1)")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps)

    def init_state(self, p: torch.Tensor) -> dict:
        """``p``'s state, made as torch.optim makes it before the first step: no steps yet
        (a tensor, float64 only under a float64 default dtype) and both moments zero."""
        state = self.state[p]
        if not state:
            step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            state["step"] = torch.tensor(0.0, dtype=step_dtype)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for p in self._with_grads():
            state = self.init_state(p)
            grad, exp_avg, exp_avg_sq, step_t = p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"]
            step_t += 1
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = step_t.item()
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)
