"""Adapting BN statistics with few target samples: AdaBN vs Schneider et al.'s prior.

A BN model trained on clean digits (the distribution-shift page's model,
:mod:`bnviz.experiments.distribution_shift`) is evaluated on shifted digits
with BN statistics re-estimated from only ``n`` unlabeled shifted images:

* **plain evaluation**: the source running statistics, unchanged;
* **AdaBN** (Li et al. 2016, arXiv 1603.04779): every BN layer's statistics
  replaced by the target statistics of the ``n`` images;
* **source + target mix** (Schneider et al. 2020, arXiv 2006.16971, Eq. 2),
  with prior strength ``N`` (a number of pseudo-examples)::

      mean = N/(N+n) * source_mean + n/(N+n) * target_mean
      var  = N/(N+n) * source_var  + n/(N+n) * target_var

  The variances are mixed directly (not the second moments, as Schneider
  et al. do). ``source_var`` is PyTorch's ``running_var`` (an EMA of unbiased
  batch variances); ``target_var`` is the *biased* variance of the n values,
  the one train-mode BN divides by. With n = 1 it is exactly 0: AdaBN then
  divides every deviation by sqrt(eps) (316x at eps 1e-5), while the prior
  keeps N/(N+1) of the source variance. ``N = 0`` is AdaBN; ``N -> inf`` is
  plain evaluation.

The statistics are computed layer by layer in one forward pass over the ``n``
images (:func:`adapt_statistics`): each BN layer's target statistics are
those of its input as the *adapted* earlier layers produce it. Accuracy is
then measured on the shifted test images (eval mode), a set disjoint from
the adaptation pool (test images 5,000 onwards, shifted the same way).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..budget import check_view_cost, training_cost
from ..bn_stats import batch_norm_layers
from ..config import Config, check
from ..data import load_mnist, shift_images
from ..train import ProgressFn, Run, TrainResult, evaluate, pick_device, train_together
from . import Experiment
from .distribution_shift import BN_LABEL, SHIFT_OPTIONS, ShiftConfig, shifted_test_set, training_data

SAMPLE_SIZES = tuple(2**k for k in range(11))  # 1, 2, 4, ..., 1,024 target examples
POOL_START = 5000  # adaptation images come from test images 5,000..9,999, scored images from the first ones
POOL_SIZE = 5000
PLAIN, ADABN, MIXED, FULL = "plain evaluation (source statistics)", "AdaBN on n examples", "source + target mix", "AdaBN on all target images"


@dataclass(frozen=True)
class FewSampleConfig(Config):
    """The distribution-shift page's model and shift (``model``), then the adaptation sweep.

    ``prior_strength`` is Schneider et al.'s N; ``draws``: random sets of n
    adaptation images per n (the band). The model's own ``corrupted_examples``
    and ``precision`` must be the clean float32 ones: this experiment is about
    statistics that do not fit, not broken ones.
    """

    model: ShiftConfig = ShiftConfig()
    sample_sizes: tuple[int, ...] = SAMPLE_SIZES
    prior_strength: int = 16
    draws: int = 5
    seed: int = 0

    def __post_init__(self):
        check(self.model.shift != "digits", "Held-out digits have no accuracy to adapt: choose another shift.")
        check(self.model.corrupted_examples == 0 and self.model.precision == "float32", "Adaptation is measured on a clean float32 model.")
        check(self.sample_sizes and all(1 <= n <= POOL_SIZE for n in self.sample_sizes), f"Target sample sizes must be between 1 and {POOL_SIZE:,}.")
        check(0 <= self.prior_strength <= 100_000, "Prior strength N must be between 0 and 100,000.")
        check(1 <= self.draws <= 20, "Draws per sample size: 1 to 20.")
        check_view_cost(self, "fewer steps, hidden layers or units")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost([(self.model.model("batch"), self.model.train_config())])  # one BN model is trained


@dataclass
class FewSampleResult:
    """``accuracy[method]``: (S, D) over sample sizes S and draws D, for AdaBN and the mix.
    ``plain_accuracy`` / ``full_accuracy``: the two reference lines (one number each).
    ``zero_var_fraction``: (S,) fraction of first-layer BN units whose target variance is exactly 0,
    mean over draws (all of them at n = 1; dead ReLUs at any n, since this BN sits after the ReLU).
    """

    config: FewSampleConfig
    run: TrainResult
    sample_sizes: np.ndarray
    accuracy: dict
    plain_accuracy: float
    full_accuracy: float
    clean_accuracy: float
    zero_var_fraction: np.ndarray
    nonfinite_outputs: dict  # method -> (S, D) test images with a NaN/inf logit

    def mean(self, method: str) -> np.ndarray:
        return self.accuracy[method].mean(axis=1)

    def records(self) -> list[dict]:
        rows = []
        for method, values in self.accuracy.items():
            for s, n in enumerate(self.sample_sizes):
                for d in range(values.shape[1]):
                    rows.append({"method": method, "n": int(n), "draw": d, "accuracy": float(values[s, d])})
        return rows


def mix_statistics(source_mean: torch.Tensor, source_var: torch.Tensor, target_mean: torch.Tensor, target_var: torch.Tensor,
                   target_count: int, prior_strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Schneider et al. 2020, Eq. 2: ``w = N/(N+n)``; ``mean = w*source + (1-w)*target``, same for the variances.

    Shapes: four (C,) tensors -> two (C,) tensors. ``prior_strength`` = 0 gives the target statistics.
    """
    weight = prior_strength / (prior_strength + target_count)
    return weight * source_mean + (1 - weight) * target_mean, weight * source_var + (1 - weight) * target_var


@torch.no_grad()
def adapt_statistics(model: nn.Module, x: torch.Tensor, prior_strength: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Write each BN layer's mixed statistics into its running buffers, in place, from the n images ``x``.

    One eval-mode forward pass over ``x`` (n, ...): just before each BN layer
    runs, a hook takes its input's per-channel mean and *biased* variance
    (over the n examples and any spatial positions), mixes them with the layer's
    current running statistics (:func:`mix_statistics`) and writes the mix into
    ``running_mean`` / ``running_var``; the layer then normalises with it, so the
    next layer sees the adapted network's values. ``prior_strength`` 0 is AdaBN
    (n = 1 gives variance 0: allowed, unlike torch's train mode). Returns the
    (target mean, target variance) each layer saw, float64.
    """
    layers = batch_norm_layers(model)
    targets = []

    def hook(layer, inputs):
        values = inputs[0].double()
        dims = (0,) + tuple(range(2, values.dim()))
        mean, var = values.mean(dim=dims), values.var(dim=dims, unbiased=False)
        targets.append((mean, var))
        count = values.numel() // values.shape[1]
        mixed_mean, mixed_var = mix_statistics(layer.running_mean.double(), layer.running_var.double(), mean, var, count, prior_strength)
        layer.running_mean.copy_(mixed_mean)
        layer.running_var.copy_(mixed_var)

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return targets


def adapted_accuracy(model: nn.Module, adapt_x: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, prior_strength: float) -> tuple[float, int, float]:
    """(accuracy, non-finite outputs, fraction of first-layer target variances that are 0) of a copy adapted on ``adapt_x``."""
    adapted = copy.deepcopy(model)
    targets = adapt_statistics(adapted, adapt_x, prior_strength)
    adapted.eval()
    with torch.no_grad():
        logits = adapted(test_x)
    finite = torch.isfinite(logits).all(dim=1)
    accuracy = ((logits.argmax(dim=1) == test_y) & finite).float().mean().item()
    return accuracy, int((~finite).sum()), float((targets[0][1] == 0).double().mean())


def adaptation_pool(config: ShiftConfig, data) -> torch.Tensor:
    """Unlabeled shifted images for adaptation: test images 5,000..9,999, disjoint from the scored ones."""
    x = data.test_x[POOL_START : POOL_START + POOL_SIZE]
    return shift_images(x, config.shift, config.strength, seed=config.seed + 1)


def run(config: FewSampleConfig, progress: ProgressFn | None = None) -> FewSampleResult:
    device = pick_device()
    data = load_mnist(str(device))
    shift = config.model
    train_data, _ = training_data(shift, data)
    training = Run(shift.model("batch"), shift.train_config(), train_data, label=BN_LABEL)

    def train_progress(fraction, message, partial):
        if progress:
            progress(0.5 * fraction, message, None)

    [result] = train_together([training], train_progress)
    model = training.model.eval()
    clean_x, test_x, test_y = shifted_test_set(shift, data)
    pool = adaptation_pool(shift, data)
    plain = evaluate(model, test_x, test_y)[1]
    clean = evaluate(model, clean_x, test_y)[1]
    full, _, _ = adapted_accuracy(model, pool, test_x, test_y, 0.0)
    sizes = config.sample_sizes
    methods = {ADABN: 0.0, MIXED: float(config.prior_strength)}
    accuracy = {m: np.zeros((len(sizes), config.draws)) for m in methods}
    nonfinite = {m: np.zeros((len(sizes), config.draws), dtype=int) for m in methods}
    zero_var = np.zeros(len(sizes))
    generator = torch.Generator().manual_seed(config.seed)
    for s, n in enumerate(sizes):
        if progress:
            progress(0.5 + 0.5 * s / len(sizes), f"adapting with n = {n:,} target images", None)
        for d in range(config.draws):
            adapt_x = pool[torch.randperm(len(pool), generator=generator)[:n].to(pool.device)]
            for method, prior in methods.items():
                acc, bad, var = adapted_accuracy(model, adapt_x, test_x, test_y, prior)
                accuracy[method][s, d], nonfinite[method][s, d] = acc, bad
                if method == ADABN:
                    zero_var[s] += var / config.draws
    if progress:
        progress(1.0, "done", None)
    return FewSampleResult(config=config, run=result, sample_sizes=np.asarray(sizes), accuracy=accuracy, plain_accuracy=float(plain),
                           full_accuracy=float(full), clean_accuracy=float(clean), zero_var_fraction=zero_var, nonfinite_outputs=nonfinite)


def crossing(result: FewSampleResult, method: str) -> dict:
    """Where ``method``'s mean accuracy beats / falls below plain evaluation: the sizes n of each."""
    means = result.mean(method)
    sizes = [int(n) for n in result.sample_sizes]
    beats = [n for n, m in zip(sizes, means) if m > result.plain_accuracy]
    hurts = [n for n, m in zip(sizes, means) if m < result.plain_accuracy]
    # the smallest n from which it beats plain evaluation at every larger n too
    from_n = next((n for i, n in enumerate(sizes) if all(m > result.plain_accuracy for m in means[i:])), None)
    worst = int(np.argmin(means))
    return {"beats": beats, "hurts": hurts, "beats_from": from_n, "worst_n": sizes[worst], "worst_accuracy": float(means[worst])}


def summarize(result: FewSampleResult) -> dict:
    return {
        "plain_accuracy": result.plain_accuracy,
        "full_target_adabn_accuracy": result.full_accuracy,
        "mean_accuracy_by_n": {m: dict(zip(map(int, result.sample_sizes), map(float, result.mean(m)))) for m in result.accuracy},
        "adabn": crossing(result, ADABN),
        "mix": crossing(result, MIXED),
    }


EXPERIMENT = Experiment(
    name="few_sample_adaptation",
    title="Adapting BN statistics with few target samples",
    summary="AdaBN from n = 1..1,024 shifted images vs Schneider et al.'s source/target mix (prior N) vs plain evaluation.",
    config_type=FewSampleConfig,
    run=run,
    order=61,
    presets={"Strong prior (N = 256)": FewSampleConfig(prior_strength=256), "Inverted digits": FewSampleConfig(model=ShiftConfig(shift="invert", strength=1.0))},
    summarize=summarize,
)
