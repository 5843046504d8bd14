"""K models of one configuration (different seeds: weights, batches) trained as one, by torch.func.

``torch.func.stack_module_state`` stacks the K models' parameters and buffers into (K, ...)
tensors; ``torch.func.vmap`` over ``functional_call`` runs :class:`bnviz.models.Net`'s own
forward on all K at once, so each op runs once for the K models instead of K times; autograd
and plain SGD (:mod:`bnviz.optim`) then work on the stacked tensors. BN's running statistics are
stacked buffers too: inside ``vmap`` each model's BN updates its own slice in place, with
its own batch's statistics, as it would alone. Each model's numbers are what it computes
alone, up to float rounding (a batched matmul kernel sums in another order);
``tests/test_engine.py`` holds them to the plain loop in float64.

The K ``nn.Module`` objects stay the runs' own models (for evaluation, recorders and the
result): :meth:`StackedModels.write_back` copies model k's slice into it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from . import optim
from .models import Net

# Norm layers whose training forward vmap batches over models as it is (torch's kernels
# have batching rules); bnviz's own ghost BN, Batch Renorm and noise layers are left out.
STACKABLE_NORMS = ("none", "batch", "layer", "group")


def can_stack(model: nn.Module) -> bool:
    """Whether :class:`StackedModels` covers ``model``'s architecture and norm. (BN's
    cumulative average, ``momentum=None``, reads its batch count with ``.item()``, which
    vmap cannot batch.)"""
    if not isinstance(model, Net) or model.cfg.arch not in ("mlp", "cnn") or model.cfg.norm not in STACKABLE_NORMS:
        return False
    return model.cfg.norm != "batch" or model.cfg.bn_momentum is not None


class StackedModels:
    """``step(x, y, training)``: one plain-SGD step of K models of one configuration on their
    own batches, x (K, B, ...), y (K, B)."""

    def __init__(self, models: list[Net], lr: float):
        self.models = models
        params, buffers = stack_module_state(models)  # copies: (K, ...) leaves that require grad
        self.params, self.buffers = params, buffers
        with torch.device("meta"):  # the architecture only: the tensors come from the stack
            self.template = Net(models[0].cfg)
        self.optimizer = optim.SGD(list(params.values()), lr=lr)
        self._losses = vmap(self._loss, randomness="error")

    def _loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One model's loss and share classified right (vmap adds the K dimension)."""
        logits = functional_call(self.template, (params, buffers), (x,))
        return nn.functional.cross_entropy(logits, y), (logits.argmax(dim=1) == y).float().mean()

    def step(self, x: torch.Tensor, y: torch.Tensor, training: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward and SGD for all K at once: ``(losses (K,), correct (K,))``.
        Model k's weights are updated only where ``training[k]`` and its loss is finite (its
        gradient is set to zero otherwise: ``p -= lr * 0`` leaves it as it is)."""
        self.template.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses, correct = self._losses(self.params, self.buffers, x, y)
        keep = training & torch.isfinite(losses)
        # d (sum of the K losses) / d model k's weights = d loss_k / d model k's weights
        losses.sum().backward()
        if not bool(keep.all()):
            with torch.no_grad():
                for param in self.params.values():
                    param.grad.masked_fill_(~keep.view(-1, *[1] * (param.dim() - 1)), 0.0)
        self.optimizer.step()
        return losses.detach(), correct

    @torch.no_grad()
    def write_back(self, index: int) -> None:
        """Model ``index``'s slice of the stack into its own module (weights and BN buffers)."""
        model = self.models[index]
        for name, tensor in model.named_parameters():
            tensor.copy_(self.params[name][index])
        for name, tensor in model.named_buffers():
            tensor.copy_(self.buffers[name][index])
