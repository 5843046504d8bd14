"""Recorders: what a run observes, without changing it. See :mod:`bnviz.train`."""
from __future__ import annotations

import numpy as np
import torch


class UnitPercentiles:
    """Percentiles of chosen units' nonlinearity *input* on the test subset at every evaluation.

    Ioffe & Szegedy 2015, Fig. 1(b, c): the 15th, 50th and 85th percentiles of
    one last-hidden-layer sigmoid input over training. Records
    ``unit_percentiles`` with shape (evaluations, units, percentiles) and
    ``unit_percentile_steps``.
    """

    def __init__(self, block: int = -1, units: tuple[int, ...] = (0,), percentiles: tuple[float, ...] = (15, 50, 85)):
        self.block, self.units, self.percentiles = block, tuple(units), tuple(percentiles)
        self.steps: list[int] = []
        self.values: list[np.ndarray] = []

    def on_eval(self, step, model, activations):
        selected = activations[self.block][:, list(self.units)].double()
        selected = selected.flatten(2).mean(dim=2) if selected.dim() > 2 else selected  # CNN: mean over positions
        q = torch.tensor([p / 100 for p in self.percentiles], dtype=selected.dtype, device=selected.device)
        self.values.append(torch.quantile(selected, q, dim=0).T.cpu().numpy())  # (units, percentiles)
        self.steps.append(step)

    def finish(self):
        return {"unit_percentiles": np.stack(self.values), "unit_percentile_steps": np.asarray(self.steps)}


class BatchNormStats:
    """Per training step, one BN layer's batch mean/variance and its running estimates.

    Batch variance is recorded biased (what normalises the batch); the running
    variance is torch's buffer (updated with the unbiased batch variance).
    Records ``bn_batch_mean``, ``bn_batch_var``, ``bn_running_mean``,
    ``bn_running_var``, each (steps, units), and ``bn_step``.
    """

    def __init__(self, block: int = 0, units: tuple[int, ...] = (0, 1, 2)):
        self.block, self.units = block, list(units)
        self.rows: dict[str, list[np.ndarray]] = {k: [] for k in ("bn_batch_mean", "bn_batch_var", "bn_running_mean", "bn_running_var")}
        self.steps: list[int] = []

    def attach(self, model):
        self.norm = model.blocks[self.block].norm
        self.norm.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if not module.training:
            return
        x = inputs[0].detach()
        dims = (0,) + tuple(range(2, x.dim()))
        self.rows["bn_batch_mean"].append(x.mean(dim=dims)[self.units].cpu().numpy())
        self.rows["bn_batch_var"].append(x.var(dim=dims, unbiased=False)[self.units].cpu().numpy())
        # the forward has already updated the buffers for this batch
        self.rows["bn_running_mean"].append(module.running_mean[self.units].cpu().numpy().copy())
        self.rows["bn_running_var"].append(module.running_var[self.units].cpu().numpy().copy())

    def after_step(self, step, model):
        self.steps.append(step)

    def finish(self):
        out = {k: np.stack(v) if v else np.empty((0, len(self.units))) for k, v in self.rows.items()}
        out["bn_step"] = np.asarray(self.steps)
        return out


class GradientNorms:
    """L2 norm of each hidden layer's weight gradient every ``every`` steps.

    Records ``grad_norm`` (records, layers) and ``grad_norm_step``.
    """

    def __init__(self, every: int = 10):
        self.every = every
        self.steps: list[int] = []
        self.values: list[list[float]] = []

    def after_backward(self, step, model):
        if step % self.every:
            return
        self.steps.append(step)
        self.values.append([block.linear.weight.grad.norm().item() for block in model.blocks])

    def finish(self):
        return {"grad_norm": np.asarray(self.values), "grad_norm_step": np.asarray(self.steps)}
