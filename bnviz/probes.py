"""Probes: recorders that take extra passes through the model without changing the run.

Two kinds. One-shot probes (:class:`SingleInputConsistency`, :class:`TrainEvalMismatch`,
:class:`BesselProbe`, at the end of this module) take a copy of the model at one evaluation.
Step probes re-run the current training batch between steps:
Santurkar et al. 2018 ("How Does Batch Normalization Help Optimization?",
arXiv 1805.11604) measure training with extra forward/backward passes on the
batch a step trains on: the gradient a layer would see after the layers below
it moved (their internal covariate shift, Definition 2.1) and how the loss and
its gradient change along the gradient direction (Sec. 3.1). Here each such
measurement is a recorder driven by the one trainer's hooks (``on_batch``,
``after_backward``, ``after_step``), every ``every`` steps.

A probe must not change the run it observes. Every probe pass goes through
:func:`probing`, which

* evaluates the model at *substitute* weights with ``torch.func.functional_call``
  (the model's own parameters and their ``.grad`` are never written),
* restores every buffer afterwards (BN's running mean/variance and
  ``num_batches_tracked``: in training mode a BN forward updates them),
* freezes :class:`~bnviz.models.CovariateNoise` (noisy BN): a probe reuses the
  noise of the step it probes and does not advance the noise stream,
* sets ``model.bnviz_probing`` so hook-based recorders can ignore probe passes.

The model stays in training mode, as the step saw it: BN normalises with the
batch's own statistics.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .models import CovariateNoise


@contextmanager
def probing(model: nn.Module):
    """Extra passes that leave no trace: buffers restored, noise frozen, hooks told."""
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    noise_layers = [m for m in model.modules() if isinstance(m, CovariateNoise)]
    for layer in noise_layers:
        layer.frozen = True
    model.bnviz_probing = True
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])
        for layer in noise_layers:
            layer.frozen = False
        model.bnviz_probing = False


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters by name, detached (reading them never records a graph)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def batch_loss(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model evaluated at ``params`` (call inside :func:`probing`)."""
    return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)


def loss_and_gradients(model, params, x, y, wrt: list[str]) -> tuple[float, list[torch.Tensor]]:
    """``L(params; x, y)`` and its gradient with respect to the parameters named in ``wrt``."""
    leaves = dict(params)
    for name in wrt:
        leaves[name] = params[name].detach().requires_grad_(True)
    loss = batch_loss(model, leaves, x, y)
    gradients = torch.autograd.grad(loss, [leaves[name] for name in wrt])
    return float(loss.detach()), [g.detach() for g in gradients]


def layer_of(name: str, num_blocks: int) -> int:
    """0-based layer of a parameter: ``blocks.i.*`` is layer i, the classifier head is the last."""
    return int(name.split(".")[1]) if name.startswith("blocks.") else num_blocks


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()  # float64: equal gradients give a cosine of 1 to ~1e-15
    denominator = (a.norm() * b.norm()).item()
    return (a * b).sum().item() / denominator if denominator > 0 else float("nan")


class _EveryKSteps:
    """Keeps the batch of every ``every``-th step for a probe to re-run."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError("probe every at least 1 step")
        self.every = every
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def probes(self, step: int) -> bool:
        return step % self.every == 0

    def on_batch(self, step, x, y):
        self.batch = (x, y) if self.probes(step) else None


class InternalCovariateShift(_EveryKSteps):
    """Internal covariate shift from the optimisation view (Santurkar et al. 2018, Definition 2.1).

    For layer i at step t, on the step's batch (x_t, y_t) and, for noisy BN, the step's noise::

        G  = grad_{W_i} L(W_1^t,     ..., W_{i-1}^t,     W_i^t, ..., W_k^t; x_t, y_t)
        G' = grad_{W_i} L(W_1^{t+1}, ..., W_{i-1}^{t+1}, W_i^t, ..., W_k^t; x_t, y_t)

    G' is the gradient layer i would get had the layers below it already
    taken this step's update. ICS = ||G - G'||_2, and cos(G, G').
    W_i is block i's linear weight (the classifier head's for the last
    layer); "the layers below" are all parameters of the lower blocks
    (weights, biases, BN's gamma and beta). The first block has nothing below
    it (its ICS is 0 by definition) and is not recorded.

    Records ``ics_l2``, ``ics_cosine`` and ``ics_grad_norm`` (||G||), each
    (probes, layers); ``ics_layer`` (1-based layer numbers: 2 .. hidden + 1)
    and ``ics_step``.
    """

    def __init__(self, every: int = 10):
        super().__init__(every)
        self.before: dict[str, torch.Tensor] | None = None
        self.rows: dict[str, list[list[float]]] = {"ics_l2": [], "ics_cosine": [], "ics_grad_norm": []}
        self.steps: list[int] = []

    def attach(self, model):
        self.num_blocks = len(model.blocks)
        self.layers = [f"blocks.{i}.linear.weight" for i in range(1, self.num_blocks)] + ["head.weight"]

    def after_backward(self, step, model):
        self.before = {name: p.clone() for name, p in parameters(model).items()} if self.batch is not None else None

    def after_step(self, step, model):
        if self.before is None or self.batch is None:
            return
        x, y = self.batch
        after = parameters(model)
        l2, cosine, norm = [], [], []
        with probing(model):
            unshifted = loss_and_gradients(model, self.before, x, y, self.layers)[1]
            for name, g in zip(self.layers, unshifted):
                layer = layer_of(name, self.num_blocks)
                shifted = {k: (after[k] if layer_of(k, self.num_blocks) < layer else v) for k, v in self.before.items()}
                (g_shifted,) = loss_and_gradients(model, shifted, x, y, [name])[1]
                l2.append((g - g_shifted).norm().item())
                cosine.append(_cosine(g, g_shifted))
                norm.append(g.norm().item())
        self.rows["ics_l2"].append(l2)
        self.rows["ics_cosine"].append(cosine)
        self.rows["ics_grad_norm"].append(norm)
        self.steps.append(step)
        self.before = None

    def finish(self):
        layers = len(self.layers) if hasattr(self, "layers") else 0
        out = {k: np.asarray(v, dtype=float).reshape(-1, layers) for k, v in self.rows.items()}
        out["ics_layer"] = np.arange(2, layers + 2)
        out["ics_step"] = np.asarray(self.steps, dtype=np.int64)
        return out


class LossLandscape(_EveryKSteps):
    """Smoothness of the loss along the gradient (Santurkar et al. 2018, Sec. 3.1, Fig. 4).

    At a probe step, with all parameters w and the step's gradient g = grad L(w)
    (the trainer's own, on the step's batch), for each eta in
    ``multipliers * lr``::

        loss            L(w - eta g)
        gradient change ||grad L(w - eta g) - grad L(w)||_2
        beta            max over eta of ||grad L(w - eta g) - grad L(w)|| / ||eta g||

    beta is their "effective beta-smoothness": the largest gradient change per
    unit of distance moved. Records ``landscape_loss`` and
    ``landscape_grad_change`` (probes, etas), ``landscape_beta`` (probes,),
    ``landscape_eta`` (etas,) and ``landscape_step``. A non-finite loss at a
    large eta is recorded as NaN (a result, not an error).
    """

    def __init__(self, lr: float, every: int = 10, multipliers: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)):
        super().__init__(every)
        self.etas = [lr * m for m in multipliers]
        self.losses: list[list[float]] = []
        self.changes: list[list[float]] = []
        self.betas: list[float] = []
        self.steps: list[int] = []

    def after_backward(self, step, model):
        if self.batch is None:
            return
        x, y = self.batch
        w = parameters(model)
        g = {name: (p.grad.detach() if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}
        names = list(w)
        g_norm = math.sqrt(sum(v.pow(2).sum().item() for v in g.values()))
        losses, changes, ratios = [], [], []
        with probing(model):
            for eta in self.etas:
                moved = {name: w[name] - eta * g[name] for name in names}
                loss, gradients = loss_and_gradients(model, moved, x, y, names)
                change = math.sqrt(sum((gm - g[name]).pow(2).sum().item() for name, gm in zip(names, gradients)))
                finite = math.isfinite(loss) and math.isfinite(change)
                losses.append(loss if finite else float("nan"))
                changes.append(change if finite else float("nan"))
                ratios.append(change / (eta * g_norm) if finite and g_norm > 0 else float("nan"))
        self.losses.append(losses)
        self.changes.append(changes)
        self.betas.append(float(np.nanmax(ratios)) if np.isfinite(ratios).any() else float("nan"))
        self.steps.append(step)

    def finish(self):
        etas = len(self.etas)
        return {
            "landscape_loss": np.asarray(self.losses, dtype=float).reshape(-1, etas),
            "landscape_grad_change": np.asarray(self.changes, dtype=float).reshape(-1, etas),
            "landscape_beta": np.asarray(self.betas, dtype=float),
            "landscape_eta": np.asarray(self.etas, dtype=float),
            "landscape_step": np.asarray(self.steps, dtype=np.int64),
        }


# (label, scale of block 1's weight and bias, added to block 1's bias)
LOWER_LAYER_CHANGES = (("W₁ × 0.25", 0.25, 0.0), ("W₁ × 0.5", 0.5, 0.0), ("W₁ × 2", 2.0, 0.0), ("W₁ × 4", 4.0, 0.0), ("b₁ − 1", 1.0, -1.0), ("b₁ + 1", 1.0, 1.0))


class LowerLayerChange(_EveryKSteps):
    """Hypothesis (2), the layers' interdependency: does a change below reach the layers above?

    At a probe step, on the step's batch in training mode (BN normalises with
    the batch's statistics), the first block's linear layer is changed as in
    :data:`LOWER_LAYER_CHANGES` (weight and bias scaled by c, or bias shifted
    by d) and the last hidden block's output h and the loss are compared::

        relative change = ||h' - h||_F / ||h||_F,     loss change = L' - L

    With BN right after that linear layer, BN((c W) x + c b) = BN(W x + b)
    (c > 0) and BN(W x + b + d) = BN(W x + b): the normalised output, so all
    above, is unchanged up to eps. gamma and beta alone set each unit's mean
    and scale. Records ``lower_change_rel`` and ``lower_change_loss`` (probes,
    changes), ``lower_change_step``.
    """

    def __init__(self, every: int = 10, changes=LOWER_LAYER_CHANGES):
        super().__init__(every)
        self.changes = tuple(changes)
        self.relative: list[list[float]] = []
        self.loss_change: list[list[float]] = []
        self.steps: list[int] = []

    def after_step(self, step, model):
        if self.batch is None:
            return
        x, y = self.batch
        w = parameters(model)
        captured: list[torch.Tensor] = []
        handle = model.blocks[-1].register_forward_hook(lambda _m, _i, output: captured.append(output.detach()))
        try:
            with probing(model), torch.no_grad():
                base_loss = batch_loss(model, w, x, y).item()
                base = captured[-1]
                relative, loss_change = [], []
                for _label, scale, shift in self.changes:
                    changed = dict(w)
                    changed["blocks.0.linear.weight"] = w["blocks.0.linear.weight"] * scale
                    changed["blocks.0.linear.bias"] = w["blocks.0.linear.bias"] * scale + shift
                    loss = batch_loss(model, changed, x, y).item()
                    relative.append(((captured[-1] - base).norm() / base.norm()).item())
                    loss_change.append(loss - base_loss)
        finally:
            handle.remove()
        self.relative.append(relative)
        self.loss_change.append(loss_change)
        self.steps.append(step)

    def finish(self):
        n = len(self.changes)
        return {
            "lower_change_rel": np.asarray(self.relative, dtype=float).reshape(-1, n),
            "lower_change_loss": np.asarray(self.loss_change, dtype=float).reshape(-1, n),
            "lower_change_step": np.asarray(self.steps, dtype=np.int64),
        }


# ------------------------------------------------------------------ one-shot probes
# At one evaluation, a copy of the model (``copy.deepcopy``) answers a question the run
# itself cannot: the run goes on untouched.
class SingleInputConsistency:
    """One probe input through the model in each mode: does its output depend on the mode or on its batch-mates?

    At the evaluation of step ``at_step`` (None: every evaluation; ``finish``
    keeps the last), on a copy of the model, because a train-mode forward
    moves BN's running averages::

        eval_alone     eval mode, the probe alone (a batch of 1)
        eval_batch     eval mode, the probe first in a batch with ``mates_a``
        train_batch_a  train mode (batch statistics), the probe with ``mates_a``
        train_batch_b  train mode, the probe with other batch-mates ``mates_b``
        train_alone    train mode, the probe alone: NaN when torch refuses
                       (BN with one value per channel has no variance)

    and the accuracy on ``check_x``/``check_y`` in eval mode and in train mode
    with batches of ``len(mates_a) + 1`` (what the batch statistics give).
    Records ``mode_logits`` (5, classes) in the order of ``MODES``,
    ``train_alone_error`` (torch's message, "" when it ran) and
    ``mode_accuracy`` [eval mode, train mode].
    """

    MODES = ("eval_alone", "eval_batch", "train_batch_a", "train_batch_b", "train_alone")

    def __init__(self, probe: torch.Tensor, mates_a: torch.Tensor, mates_b: torch.Tensor, check_x: torch.Tensor, check_y: torch.Tensor, at_step: int | None = None):
        self.probe, self.mates_a, self.mates_b = probe, mates_a, mates_b
        self.at_step = at_step
        self.check_x, self.check_y = check_x, check_y
        self.logits: np.ndarray | None = None
        self.error = ""
        self.accuracy = np.full(2, np.nan)

    @torch.no_grad()
    def after_eval(self, step, model):
        if self.at_step is not None and step != self.at_step:
            return
        probe_model = copy.deepcopy(model)
        probe_model.eval()
        outputs = [probe_model(self.probe)[0], probe_model(torch.cat([self.probe, self.mates_a]))[0]]
        eval_correct = (probe_model(self.check_x).argmax(dim=1) == self.check_y).sum().item()
        probe_model.train()
        outputs += [probe_model(torch.cat([self.probe, self.mates_a]))[0], probe_model(torch.cat([self.probe, self.mates_b]))[0]]
        self.error = ""
        try:
            outputs.append(probe_model(self.probe)[0])
        except ValueError as exc:  # torch: "Expected more than 1 value per channel when training"
            self.error = str(exc)
            outputs.append(torch.full_like(outputs[0], float("nan")))
        size = len(self.mates_a) + 1
        train_correct = sum((probe_model(self.check_x[i : i + size]).argmax(dim=1) == self.check_y[i : i + size]).sum().item() for i in range(0, len(self.check_y) - size + 1, size))
        checked = (len(self.check_y) // size) * size
        self.accuracy = np.array([eval_correct / len(self.check_y), train_correct / max(checked, 1)])
        self.logits = torch.stack(outputs).double().cpu().numpy()

    def finish(self):
        return {"mode_logits": self.logits, "train_alone_error": np.asarray(self.error), "mode_accuracy": self.accuracy}


def _freeze_running_statistics(model) -> None:
    """Momentum 0 on every BN-like layer: train-mode passes leave its running averages as they are."""
    for module in model.modules():
        if hasattr(module, "running_mean") and hasattr(module, "momentum"):
            module.momentum = 0.0


class TrainEvalMismatch:
    """Test digits through the trained model in train mode (batch statistics) and in eval mode.

    At the evaluation of step ``at_step``, on a copy of the model whose
    running averages are frozen (momentum 0, so the probe's train-mode passes
    do not move them), ``check_x`` goes through in batches of ``batch_size``
    (the training batch size; a last partial batch is dropped) in train mode,
    and whole in eval mode. Records ``mismatch`` = [eval accuracy, train-mode
    accuracy, share of digits whose predicted class differs between the modes,
    mean |logit difference|]. Norms without batch statistics give 0 difference.
    """

    NAMES = ("eval accuracy", "train-mode accuracy", "prediction changes", "mean |logit change|")

    def __init__(self, check_x: torch.Tensor, check_y: torch.Tensor, batch_size: int, at_step: int):
        self.check_x, self.check_y, self.batch_size, self.at_step = check_x, check_y, batch_size, at_step
        self.values = np.full(len(self.NAMES), np.nan)

    @torch.no_grad()
    def after_eval(self, step, model):
        if step != self.at_step:
            return
        probe_model = copy.deepcopy(model)
        _freeze_running_statistics(probe_model)
        count = (len(self.check_y) // self.batch_size) * self.batch_size
        x, y = self.check_x[:count], self.check_y[:count]
        probe_model.eval()
        eval_logits = probe_model(x)
        probe_model.train()
        train_logits = torch.cat([probe_model(x[i : i + self.batch_size]) for i in range(0, count, self.batch_size)])
        eval_pred, train_pred = eval_logits.argmax(dim=1), train_logits.argmax(dim=1)
        self.values = np.array([
            (eval_pred == y).float().mean().item(),
            (train_pred == y).float().mean().item(),
            (eval_pred != train_pred).float().mean().item(),
            (eval_logits - train_logits).abs().mean().item(),
        ])

    def finish(self):
        return {"mismatch": self.values}


class BesselProbe:
    """How eval mode rescales a deep BN chain when the running statistics are one batch's own.

    At the evaluation of step ``at_step``, on a copy of the model, for each
    batch of ``m`` examples in ``batches``: every BN layer gets momentum 1,
    one train-mode pass stores that batch's mean and *unbiased* variance
    (torch's convention) as the running statistics, then the same batch goes
    through in eval mode. Per BN layer l (in forward order) records
    ``bessel_ratio`` (batches, layers) = ||y_eval - mean|| / ||y_train - mean||,
    each output centred over the batch, and ``bessel_mean_gap`` (batches,
    layers) = max |batch mean of y_eval - batch mean of y_train|.
    """

    def __init__(self, batches: list[torch.Tensor], at_step: int):
        self.batches, self.at_step = batches, at_step
        self.ratio = self.mean_gap = np.empty((0, 0))

    @torch.no_grad()
    def after_eval(self, step, model):
        if step != self.at_step:
            return
        probe_model = copy.deepcopy(model).double()  # float64: eval mode at m = 2 amplifies rounding errors layer by layer
        layers = [m for m in probe_model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for layer in layers:
            layer.momentum = 1.0
        outputs: list[torch.Tensor] = []
        handles = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().double())) for layer in layers]
        ratios, gaps = [], []
        try:
            for x in self.batches:
                outputs.clear()
                probe_model.train()
                probe_model(x.double())
                train_out = list(outputs)
                outputs.clear()
                probe_model.eval()
                probe_model(x.double())
                ratio_row, gap_row = [], []
                for train_y, eval_y in zip(train_out, outputs):
                    train_mean, eval_mean = train_y.mean(dim=0), eval_y.mean(dim=0)
                    ratio_row.append(((eval_y - eval_mean).norm() / (train_y - train_mean).norm()).item())
                    gap_row.append((eval_mean - train_mean).abs().max().item())
                ratios.append(ratio_row)
                gaps.append(gap_row)
        finally:
            for handle in handles:
                handle.remove()
        self.ratio, self.mean_gap = np.asarray(ratios), np.asarray(gaps)

    def finish(self):
        return {"bessel_ratio": self.ratio, "bessel_mean_gap": self.mean_gap}
