"""A hand-written training step for bnviz's MLPs: the same numbers as autograd, less overhead.

For the paper's 784-100-100-100-10 network at batch 60, one training step is about
26 MFLOP: the matmuls take about a third of the time of a straightforward PyTorch
step, the rest is per-op overhead of modules, autograd's graph and the optimiser
(measured in ``benchmarks/bench_training.py``). :class:`MLPStep` computes the forward
pass, the loss and the backward pass with explicit tensor operations on the model's own
parameters, writes the gradients into ``param.grad`` (so recorders that read gradients,
and every torch optimiser, work unchanged) and leaves BN's running statistics exactly as
``nn.BatchNorm1d`` would: the same ``torch.native_batch_norm`` kernel with the same
momentum, the unbiased variance, ``num_batches_tracked``, and the cumulative average
when ``momentum=None``.

It covers ``arch="mlp"`` with norm "none" or "batch", BN before or after the
activation, sigmoid/tanh/ReLU/identity. Anything else, or a model with forward hooks
(recorders that watch a forward pass), trains through autograd: :func:`engine_for`
decides, and ``tests/test_engine.py`` holds both paths to the same losses, gradients,
weights and running statistics.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import Net

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


def _has_hooks(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def engine_for(model: Net, batch_size: int) -> "MLPStep | None":
    """An :class:`MLPStep` for ``model`` if it covers it exactly, else None (use autograd)."""
    cfg = model.cfg
    if cfg.arch != "mlp" or cfg.norm not in ("none", "batch") or cfg.activation not in _ACTIVATION:
        return None
    if cfg.norm == "batch" and (batch_size < 2 or cfg.bn_eps <= 0):
        return None  # nn.BatchNorm1d raises for these; autograd shows its message
    if _has_hooks(model) or len({p.dtype for p in model.parameters()}) != 1:
        return None
    return MLPStep(model)


class MLPStep:
    """``forward(x, y) -> (loss, logits)`` then ``backward()``: one training step's gradients.

    The model's parameters are used in place (nothing is copied), so evaluation,
    recorders and probes see the model as it trains.
    """

    def __init__(self, model: Net):
        self.model = model
        self.norm_first = model.cfg.placement == "before"
        self.activation_backward = _BACKWARD_FROM_OUTPUT[model.cfg.activation]
        self.activation = _ACTIVATION[model.cfg.activation]  # in place: its input is not needed again
        self.linears = [block.linear for block in model.blocks] + [model.head]
        self.norms = [block.norm if isinstance(block.norm, nn.BatchNorm1d) else None for block in model.blocks]
        for module in self.linears + [n for n in self.norms if n is not None]:
            for param in module.parameters():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
        self._saved: tuple = ()
        self.parameters = list(model.parameters())
        self._rows = torch.empty(0, dtype=torch.long)

    def _batch_norm(self, norm: nn.BatchNorm1d, x: torch.Tensor):
        # nn.BatchNorm1d.forward in training mode, step for step
        norm.num_batches_tracked.add_(1)
        momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        out, mean, invstd = torch.native_batch_norm(x, norm.weight, norm.bias, norm.running_mean, norm.running_var, True, momentum, norm.eps)
        return out, (x, mean, invstd)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor):
        h = x.flatten(1)
        saved = []  # per block: (block input, bn saved or None, activation output, block output)
        for linear, norm in zip(self.linears[:-1], self.norms):
            z = torch.addmm(linear.bias, h, linear.weight.t())
            bn = None
            if norm is None:
                a = self.activation(z)
                out = a
            elif self.norm_first:
                n, bn = self._batch_norm(norm, z)
                a = self.activation(n)
                out = a
            else:
                a = self.activation(z)
                out, bn = self._batch_norm(norm, a)
            saved.append((h, bn, a))
            h = out
        head = self.linears[-1]
        logits = torch.addmm(head.bias, h, head.weight.t())
        log_probs = torch.log_softmax(logits, dim=1)
        if len(self._rows) != len(y) or self._rows.device != y.device:
            self._rows = torch.arange(len(y), device=y.device)
        rows = self._rows
        loss = -log_probs[rows, y].mean()
        self._saved = (saved, h, log_probs, rows, y)
        return loss, logits

    def _batch_norm_backward(self, norm: nn.BatchNorm1d, grad: torch.Tensor, bn_saved) -> torch.Tensor:
        x, mean, invstd = bn_saved
        grad_in, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, x, norm.weight, norm.running_mean, norm.running_var, mean, invstd, True, norm.eps, [True, True, True]
        )
        norm.weight.grad, norm.bias.grad = grad_weight, grad_bias
        return grad_in

    @torch.no_grad()
    def backward(self) -> None:
        """d loss / d every parameter, written into ``param.grad``."""
        saved, h, log_probs, rows, y = self._saved
        grad = log_probs.exp()  # d mean-cross-entropy / d logits = (softmax - one_hot) / B
        grad[rows, y] -= 1
        grad.div_(len(y))
        head = self.linears[-1]
        torch.mm(grad.t(), h, out=head.weight.grad)
        torch.sum(grad, 0, out=head.bias.grad)
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
            torch.mm(grad.t(), block_input, out=linear.weight.grad)
            torch.sum(grad, 0, out=linear.bias.grad)
            if index > 0:  # the first layer needs no gradient for the images
                grad = grad.mm(linear.weight)
        self._saved = ()

    @torch.no_grad()
    def sgd_step(self, lr: float) -> None:
        """Plain SGD, ``p -= lr * p.grad``: what ``torch.optim.SGD(momentum=0).step()`` computes,
        in one call instead of its per-step bookkeeping."""
        torch._foreach_add_(self.parameters, [p.grad for p in self.parameters], alpha=-lr)
