"""Recorders: what a run observes at its steps and evaluations, without changing it. See
:mod:`bnviz.train` for the hooks and the rule that keeps them free. Probes that take a copy
of the model, or re-run a batch, are in :mod:`bnviz.probes`."""
from __future__ import annotations

import numpy as np
import torch

from .unit_stats import FLAT_SLOPE_FRACTION, activation_slope, column_quantiles, steepest_slope


class UnitPercentiles:
    """Percentiles of chosen units' nonlinearity *input* on the test subset at every evaluation.

    Ioffe & Szegedy 2015, Fig. 1(b, c): the 15th, 50th and 85th percentiles of
    one last-hidden-layer sigmoid input over training. Records
    ``{prefix}s`` with shape (evaluations, units, percentiles) and
    ``{prefix}_steps`` (by default ``unit_percentiles`` and
    ``unit_percentile_steps``; give one recorder per block its own prefix).
    """

    def __init__(self, block: int = -1, units: tuple[int, ...] = (0,), percentiles: tuple[float, ...] = (15, 50, 85), prefix: str = "unit_percentile"):
        self.block, self.units, self.percentiles, self.prefix = block, tuple(units), tuple(percentiles), prefix
        self.steps: list[int] = []
        self.values: list[np.ndarray] = []

    def on_eval(self, step, model, activations):
        selected = activations[self.block][:, list(self.units)]
        selected = selected.double().flatten(2).mean(dim=2) if selected.dim() > 2 else selected  # CNN: mean over positions
        # float64 percentiles of the float32 values (column_quantiles sorts them as float32: faster, the same numbers)
        q = torch.tensor([p / 100 for p in self.percentiles], dtype=torch.float64, device=selected.device)
        self.values.append(column_quantiles(selected, q).T.cpu().numpy())  # (units, percentiles)
        self.steps.append(step)

    def finish(self):
        return {f"{self.prefix}s": np.stack(self.values), f"{self.prefix}_steps": np.asarray(self.steps)}


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

    def watch_training(self, model):
        return [model.blocks[self.block].norm.register_forward_hook(self._hook)]

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


class ShadowRunningStats:
    """Running estimates of one BN layer's statistics with any momentum, re-derived per step.

    Follows PyTorch's update exactly (:func:`bnviz.norms.update_running_stats`):
    ``running = (1 - momentum) * running + momentum * batch`` with the batch's
    *unbiased* variance, starting from mean 0 and variance 1; ``momentum=None``
    is the cumulative average ``1 / num_batches_tracked``. It shadows the
    layer without changing it, so one run shows several conventions side by
    side. Records ``{prefix}_mean`` and ``{prefix}_var`` (steps, units), and
    ``{prefix}_final_mean`` / ``{prefix}_final_var`` (all channels, last step).
    """

    def __init__(self, block: int = 0, units: tuple[int, ...] = (0, 1, 2), momentum: float | None = None, prefix: str = "bn_cumulative"):
        self.block, self.units, self.momentum, self.prefix = block, list(units), momentum, prefix
        self.means: list[np.ndarray] = []
        self.vars: list[np.ndarray] = []
        self.running_mean = self.running_var = None
        self.num_batches_tracked = 0

    def watch_training(self, model):
        return [model.blocks[self.block].norm.register_forward_hook(self._hook)]

    def _hook(self, module, inputs, output):
        if not module.training:
            return
        from .norms import batch_norm_steps, update_running_stats

        steps = batch_norm_steps(inputs[0].detach().double())
        if self.running_mean is None:
            self.running_mean = torch.zeros_like(steps.mean)
            self.running_var = torch.ones_like(steps.var)
        self.num_batches_tracked += 1
        update_running_stats(self.running_mean, self.running_var, steps, self.momentum, self.num_batches_tracked)
        self.means.append(self.running_mean[self.units].cpu().numpy().copy())
        self.vars.append(self.running_var[self.units].cpu().numpy().copy())

    def finish(self):
        empty = np.empty((0, len(self.units)))
        return {
            f"{self.prefix}_mean": np.stack(self.means) if self.means else empty,
            f"{self.prefix}_var": np.stack(self.vars) if self.vars else empty,
            f"{self.prefix}_final_mean": self.running_mean.cpu().numpy() if self.running_mean is not None else np.empty(0),
            f"{self.prefix}_final_var": self.running_var.cpu().numpy() if self.running_var is not None else np.empty(0),
        }


class FirstLayerPopulationStats:
    """Per step, the exact population mean/variance of the first BN layer's input over a data set.

    In an MLP with BN before the activation, block 0's BN input is ``z = W x + b``,
    so with the weights of this step's forward pass (read in ``after_backward``,
    before the update) the statistics over the *whole* data set follow from its
    mean and covariance (:func:`bnviz.bn_stats.linear_output_moments`), no pass
    over the data needed. Variance is the population (biased) one. Records
    ``bn_population_mean`` / ``bn_population_var`` (steps, units) and
    ``bn_population_final_mean`` / ``_final_var`` (all channels, last step).
    """

    def __init__(self, moments, units: tuple[int, ...] = (0, 1, 2)):
        self.moments, self.units = moments, list(units)
        self.means: list[np.ndarray] = []
        self.vars: list[np.ndarray] = []
        self.last_weight = self.last_bias = None

    def attach(self, model):
        block = model.blocks[0]
        if model.cfg.arch != "mlp" or not block.norm_first:
            raise ValueError("FirstLayerPopulationStats needs an MLP with the norm before the activation.")
        self.linear = block.linear

    def after_backward(self, step, model):
        from .bn_stats import linear_output_moments

        weight, bias = self.linear.weight.detach(), self.linear.bias.detach()
        mean, var = linear_output_moments(weight[self.units], bias[self.units], self.moments)
        self.means.append(mean.cpu().numpy())
        self.vars.append(var.cpu().numpy())
        self.last_weight, self.last_bias = weight.clone(), bias.clone()

    def finish(self):
        from .bn_stats import linear_output_moments

        empty = np.empty((0, len(self.units)))
        out = {"bn_population_mean": np.stack(self.means) if self.means else empty, "bn_population_var": np.stack(self.vars) if self.vars else empty}
        if self.last_weight is not None:
            mean, var = linear_output_moments(self.last_weight, self.last_bias, self.moments)
            out["bn_population_final_mean"], out["bn_population_final_var"] = mean.cpu().numpy(), var.cpu().numpy()
        return out


class ActivationDrift:
    """How far each hidden layer's input distribution moves from one training step to the next.

    At every training step, on the training batch, block i's nonlinearity
    input has per-unit batch mean mu_j(t) and (biased) variance var_j(t)
    (a CNN's channel pools its positions). Records, from the second step on,
    the averages over units of ``|mu_j(t) - mu_j(t-1)|`` and
    ``|var_j(t) - var_j(t-1)|`` as ``drift_mean`` and ``drift_var`` (steps,
    layers), the mean and standard deviation of unit ``unit`` of block
    ``block`` as ``drift_unit_mean`` / ``drift_unit_std`` (steps,), and
    ``drift_step``. This is the distribution "covariate shift" refers to;
    noisy BN (Santurkar et al. 2018, Fig. 2) makes it deliberately unstable.
    Passes made by probes (``model.bnviz_probing``) are ignored.
    """

    def __init__(self, block: int = -1, unit: int = 0):
        self.block, self.unit = block, unit
        self.current: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.previous: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rows: dict[str, list] = {"drift_mean": [], "drift_var": [], "drift_unit_mean": [], "drift_unit_std": []}
        self.steps: list[int] = []

    def attach(self, model):
        self.model = model
        self.num_blocks = len(model.blocks)
        self.block_index = self.block % self.num_blocks

    def watch_training(self, model):
        return [block.act.register_forward_pre_hook(lambda module, inputs, i=index: self._hook(module, inputs[0], i)) for index, block in enumerate(model.blocks)]

    def _hook(self, module, x, index):
        if not module.training or getattr(self.model, "bnviz_probing", False):
            return
        x = x.detach()
        dims = (0,) + tuple(range(2, x.dim()))
        self.current[index] = (x.mean(dim=dims), x.var(dim=dims, unbiased=False))

    def after_step(self, step, model):
        if self.previous:
            self.rows["drift_mean"].append([(self.current[i][0] - self.previous[i][0]).abs().mean().item() for i in range(self.num_blocks)])
            self.rows["drift_var"].append([(self.current[i][1] - self.previous[i][1]).abs().mean().item() for i in range(self.num_blocks)])
            mean, var = self.current[self.block_index]
            self.rows["drift_unit_mean"].append(mean[self.unit].item())
            self.rows["drift_unit_std"].append(var[self.unit].sqrt().item())
            self.steps.append(step)
        self.previous, self.current = self.current, {}

    def finish(self):
        out = {k: np.asarray(v, dtype=float) for k, v in self.rows.items()}
        for key in ("drift_mean", "drift_var"):
            out[key] = out[key].reshape(-1, getattr(self, "num_blocks", 0))
        out["drift_step"] = np.asarray(self.steps, dtype=np.int64)
        return out

class NonlinearityInputs:
    """What each hidden layer's nonlinearity receives, and what the layer passes on.

    At every evaluation (eval mode, the test subset), with x the input of block
    i's activation f (a CNN's channel is a unit; its positions count as examples):

    - ``act_input_mean`` / ``act_input_std``: mean and standard deviation of x
      over examples and units;
    - ``flat_fraction``: the share of (example, unit) pairs where
      ``|f'(x)| < FLAT_SLOPE_FRACTION * max |f'|`` (a saturated sigmoid or tanh,
      a ReLU at x <= 0);
    - ``dead_fraction``: the share of units that are flat on every example;
    - ``output_mean``: mean of the block's output, what the next layer receives
      (``f(BN(z))`` with BN before, ``BN(f(z))`` with BN after);

    each (evaluations, layers), with ``nonlinearity_step``. At the last
    evaluation, ``act_input_hist`` (layers, bins): the share of x in each bin of
    ``act_input_hist_edges`` (values beyond the edges are counted in the end bins).
    """

    def __init__(self, hist_range: float = 8.0, bins: int = 64):
        self.edges = np.linspace(-hist_range, hist_range, bins + 1)
        self.rows: dict[str, list[list[float]]] = {k: [] for k in ("act_input_mean", "act_input_std", "flat_fraction", "dead_fraction", "output_mean")}
        self.steps: list[int] = []
        self.outputs: dict[int, list[torch.Tensor]] = {}
        self.last_inputs: list[torch.Tensor] = []

    def attach(self, model):
        self.blocks = list(model.blocks)
        self.max_slope = [steepest_slope(block.act) for block in self.blocks]

    def watch_evaluation(self, model):
        """Hooks for the evaluation passes only (the trainer removes them after each): nothing
        watches the training steps, so they may run in the accelerator."""
        return [block.register_forward_hook(lambda module, inputs, output, i=index: self._keep_output(module, output, i))
                for index, block in enumerate(self.blocks)]

    def _keep_output(self, module, output, index):
        if not module.training:  # evaluation passes only
            self.outputs.setdefault(index, []).append(output.detach())

    def on_eval(self, step, model, activations):
        stats = {k: [] for k in self.rows}
        for index, x in enumerate(activations):
            x = x.detach()
            flat = activation_slope(self.blocks[index].act, x).abs() < FLAT_SLOPE_FRACTION * self.max_slope[index]
            per_unit = flat.transpose(0, 1).flatten(1)  # (units, examples x positions)
            output = torch.cat(self.outputs.get(index, [x.new_zeros(1)]))
            stats["act_input_mean"].append(x.mean().item())
            stats["act_input_std"].append(x.std().item())
            stats["flat_fraction"].append(flat.float().mean().item())
            stats["dead_fraction"].append(per_unit.all(dim=1).float().mean().item())
            stats["output_mean"].append(output.mean().item())
        for key, values in stats.items():
            self.rows[key].append(values)
        self.last_inputs = [x.detach() for x in activations]  # histogrammed once, in finish
        self.steps.append(step)
        self.outputs = {}

    def finish(self):
        layers = len(getattr(self, "blocks", []))
        out = {k: np.asarray(v, dtype=float).reshape(-1, layers) for k, v in self.rows.items()}
        out["nonlinearity_step"] = np.asarray(self.steps, dtype=np.int64)
        low, high = float(self.edges[0]), float(self.edges[-1])
        histogram = []
        for x in self.last_inputs:
            values = x[~torch.isnan(x)].float().clamp(low, high).cpu()  # a NaN has no bin
            counts = torch.histc(values, bins=len(self.edges) - 1, min=low, max=high)
            histogram.append((counts / max(x.numel(), 1)).numpy())
        out["act_input_hist"] = np.stack(histogram) if histogram else np.empty((0, len(self.edges) - 1))
        out["act_input_hist_edges"] = self.edges
        self.outputs, self.last_inputs = {}, []
        return out
