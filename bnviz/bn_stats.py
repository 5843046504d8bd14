"""Population statistics of BatchNorm layers: exact, recalibrated (precise BN), and the helpers.

A BN layer in evaluation mode normalises with fixed estimates of its input's
population mean and variance instead of the batch's. PyTorch estimates them
during training with an exponential moving average (``running_mean``,
``running_var``); Ioffe & Szegedy 2015, Algorithm 2, step 10, instead
recomputes them after training, with the weights frozen, over many training
mini-batches ``B`` of size ``m``::

    E[x]   = E_B[ mu_B ]                                 (mean of the batch means)
    Var[x] = m / (m - 1) * E_B[ sigma_B^2 ]              (unbiased: sigma_B^2 is the biased batch variance)

Wu & Johnson 2021 ("Rethinking 'Batch' in BatchNorm") call this *precise BN*.
:func:`recalibrate_batch_norm` does it for every BN layer of a model; the
distribution-shift page reuses it to adapt the statistics to shifted data.

For the first layer of an MLP, whose BN input is ``W x + b``, the exact
population statistics over a whole data set with the current weights follow in
closed form from the data's mean and covariance (:func:`linear_output_moments`),
cheap enough to compute at every training step.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from .errors import BnvizError
from .models import Net


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm1d/2d/3d of ``model`` with running statistics, in forward order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@dataclass
class PopulationEstimate:
    """One BN layer's recalibrated statistics, per channel (shape (C,)).

    ``values_per_channel`` is m: the values one batch mean pools (batch size x spatial positions).
    """

    mean: torch.Tensor
    var: torch.Tensor
    num_batches: int
    values_per_channel: int


@torch.no_grad()
def precise_batch_norm_statistics(
    model: nn.Module, x: torch.Tensor, batch_size: int = 60, num_batches: int = 100, seed: int = 0, pooled_variance: bool = False
) -> list[PopulationEstimate]:
    """Algorithm 2 (Ioffe & Szegedy 2015), step 10, for every BN layer of ``model``.

    Runs ``num_batches`` training-mode forward passes over random mini-batches
    of ``batch_size`` rows of ``x`` (drawn without replacement within a pass
    over ``x``, seeded), with the weights frozen, and averages each BN layer's
    batch means and biased batch variances::

        mean = (1/K) sum_k mu_k,     var = m/(m-1) * (1/K) sum_k sigma_k^2

    With ``pooled_variance`` (Wu & Johnson 2021, Sec. 3, PreciseBN), the variance
    is instead the exact (biased) variance of all K*m values the layer saw::

        var = (1/K) sum_k (sigma_k^2 + mu_k^2) - mean^2

    Each layer sees its input as the training network produces it: earlier
    BN layers normalise with their own batch statistics, as in training.
    The model is left exactly as it was (buffers and train/eval mode restored).

    Shapes: ``x`` (N, ...) any model input; returns one :class:`PopulationEstimate`
    per layer of :func:`batch_norm_layers`.
    """
    layers = batch_norm_layers(model)
    if not layers:
        raise BnvizError("This model has no BatchNorm layer to recalibrate.")
    if batch_size < 2:
        raise BnvizError("Recalibration needs batches of at least 2 examples: one value has no variance.")
    batch_size = min(batch_size, len(x))
    sums = [None] * len(layers)
    counts = [0] * len(layers)

    def hook(index):
        def record(module, inputs, output):
            values = inputs[0].detach().double()
            dims = (0,) + tuple(range(2, values.dim()))
            mean = values.mean(dim=dims)
            var = values.var(dim=dims, unbiased=False)
            counts[index] = values.numel() // values.shape[1]
            if sums[index] is None:
                sums[index] = [mean, var, mean**2]
            else:
                sums[index][0] += mean
                sums[index][1] += var
                sums[index][2] += mean**2

        return record

    saved_buffers = [(layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone()) for layer in layers]
    was_training = model.training
    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(len(x), generator=generator), 0
    try:
        model.train()
        for _ in range(num_batches):
            if position + batch_size > len(order):
                order, position = torch.randperm(len(x), generator=generator), 0
            model(x[order[position : position + batch_size].to(x.device)])
            position += batch_size
    finally:
        for handle in handles:
            handle.remove()
        for layer, (mean, var, tracked) in zip(layers, saved_buffers):
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            layer.num_batches_tracked.copy_(tracked)
        model.train(was_training)
    estimates = []
    for (sum_mean, sum_var, sum_mean_squared), m in zip(sums, counts):
        mean = sum_mean / num_batches
        if pooled_variance:
            var = (sum_var + sum_mean_squared) / num_batches - mean**2
        else:
            var = sum_var / num_batches * m / (m - 1)
        estimates.append(PopulationEstimate(mean=mean, var=var, num_batches=num_batches, values_per_channel=m))
    return estimates


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 60, num_batches: int = 100, seed: int = 0,
                           pooled_variance: bool = False) -> list[PopulationEstimate]:
    """Replace every BN layer's running statistics with :func:`precise_batch_norm_statistics`.

    In place: afterwards ``model.eval()`` normalises with the recalibrated
    statistics. Weights are not touched. Returns the estimates written.
    """
    estimates = precise_batch_norm_statistics(model, x, batch_size, num_batches, seed, pooled_variance)
    for layer, estimate in zip(batch_norm_layers(model), estimates):
        layer.running_mean.copy_(estimate.mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(estimate.var.to(layer.running_var.dtype))
    return estimates


@dataclass(frozen=True)
class DataMoments:
    """Mean (D,) and biased covariance (D, D) of flattened inputs, float64."""

    mean: torch.Tensor
    covariance: torch.Tensor
    count: int


def data_moments(x: torch.Tensor, chunk: int = 2_500) -> DataMoments:
    """Moments of ``x`` (N, ...) flattened to (N, D): ``mean = 1/N sum x``, ``cov = 1/N sum (x-mean)(x-mean)^T``.

    The products run in float32 on centred data (accurate to ~1e-6 relative for MNIST), summed
    and stored in float64. ``x`` is read ``chunk`` rows at a time (any indexable of tensors, e.g.
    MNIST's uint8-backed training images), so the whole set never exists in float64 at once;
    2,500 rows (a float32 chunk of 7.5 MB, its float64 sum 15 MB) keep the pass's peak near
    35 MB (10,000 rows held ~136 MB at once, measured on the 60,000 training images).
    """
    count = len(x)
    total = None
    for start in range(0, count, chunk):
        part = x[start : start + chunk].flatten(1).double().sum(dim=0)
        total = part if total is None else total + part
    mean = total / count
    covariance = None
    for start in range(0, count, chunk):
        centred = x[start : start + chunk].flatten(1)
        centred = centred - mean.to(centred.dtype)
        product = (centred.T @ centred).double()
        covariance = product if covariance is None else covariance + product
    return DataMoments(mean=mean, covariance=covariance / count, count=count)


@lru_cache(maxsize=2)
def training_set_moments(device: str = "cpu") -> DataMoments:
    """:func:`data_moments` of all 60,000 MNIST training images, once per process and device (~1 s)."""
    from .data import load_mnist

    return data_moments(load_mnist(device).train_x)


def linear_output_moments(weight: torch.Tensor, bias: torch.Tensor, moments: DataMoments) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact population mean and (biased) variance of ``z = W x + b`` over the data set of ``moments``.

    ``mean_k = w_k . E[x] + b_k``, ``var_k = w_k^T Cov[x] w_k``. Shapes: ``weight``
    (K, D), ``bias`` (K,); returns two (K,) float64 tensors.
    """
    w = weight.detach().double().to(moments.mean.device)
    mean = w @ moments.mean + bias.detach().double().to(moments.mean.device)
    var = ((w @ moments.covariance) * w).sum(dim=1)
    return mean, var


@torch.no_grad()
def forward_indexed_batches(model: nn.Module, x, index: torch.Tensor, train_mode: bool = True, images_per_call: int = 2_000) -> torch.Tensor:
    """:func:`forward_independent_batches` of ``x[index]`` for a (G, B) ``index`` into ``x``, a few
    batches per call (about ``images_per_call`` images): the gathered images and their
    activations are never all in memory at once (the whole test set as floats is 31 MB, before
    its activations). Each batch is still normalised on its own. (G, B, outputs)."""
    per_call = max(1, images_per_call // index.shape[1])
    return torch.cat([forward_independent_batches(model, x[rows], train_mode) for rows in index.split(per_call)])


@torch.no_grad()
def forward_independent_batches(model: nn.Module, batches: torch.Tensor, train_mode: bool = True) -> torch.Tensor:
    """``model`` applied to each of G batches separately, as G forward calls would, in one vectorised call.

    In train mode every BN layer normalises each batch with that batch's own
    statistics (and no running statistics are updated); in eval mode with the
    model's running estimates. Uses ``torch.func.vmap`` over a copy of the model
    whose BN layers keep no running statistics in train mode
    (``torch.func.replace_all_batch_norm_modules_``); the model is not changed.
    Equal to a loop of ``model(batches[g])`` up to float rounding (the tests check it).

    Shapes: ``batches`` (G, B, ...) -> (G, B, outputs). ``B >= 2`` in train mode.
    """
    import copy

    from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

    if train_mode and batches.shape[1] < 2:
        raise BnvizError("Train-mode BN needs at least 2 examples per batch: one value has no variance.")
    if isinstance(model, Net):  # a copy without the hooks recorders put on the model (they would observe the probe)
        with torch.device("meta"):
            probe = Net(model.cfg)
        probe.load_state_dict(model.state_dict(), assign=True)  # the model's tensors, only read
    else:
        probe = copy.deepcopy(model)
    if train_mode:
        replace_all_batch_norm_modules_(probe)
    probe.train(train_mode)
    state = dict(probe.named_parameters()) | dict(probe.named_buffers())
    return vmap(lambda batch: functional_call(probe, state, (batch,)))(batches)
