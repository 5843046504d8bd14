"""Train vs eval statistics: batch statistics, running estimates, the true population, and batch-mates.

One BN model (the paper's sigmoid MLP, BN before each nonlinearity) is trained
with recorders on its first BN layer. Then, on that same trained model:

* batch-mates: one test image inside many random batches of size B, in train
  mode (batch statistics: its prediction depends on the others) and in eval
  mode (running statistics: it does not); and alone (B = 1);
* test accuracy three ways: eval mode (running estimates), train mode (batch
  statistics at several batch sizes), and recalibrated population statistics
  (Algorithm 2 / precise BN, :func:`bnviz.bn_stats.recalibrate_batch_norm`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..budget import check_view_cost, training_cost
from ..bn_stats import batch_norm_layers, forward_independent_batches, forward_indexed_batches, recalibrate_batch_norm, training_set_moments
from ..config import Config, check
from ..data import MNIST_PIXEL_MEAN, MNIST_PIXEL_STD, load_mnist
from ..models import PAPER_HIDDEN, ModelConfig, build_model
from ..norms import PYTORCH_DEFAULT_MOMENTUM
from ..recorders import BatchNormStats, FirstLayerPopulationStats, ShadowRunningStats
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, TrainResult, evaluate, pick_device, train_together
from . import Experiment

PROBE_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
TRAIN_MODE_BATCH_SIZES = (2, 8, 32, 128)


@dataclass(frozen=True)
class TrainVsEvalConfig(Config):
    """The paper's MNIST MLP with BN, trained on all 60,000 images with plain SGD.

    ``bn_momentum`` is PyTorch's (weight of the new batch; Keras writes 1 - it).
    ``units``: the first-layer neurons whose statistics are recorded.
    ``image_index``: the test image of the batch-mates experiment, which draws
    ``probe_batches`` random batches of each size in ``probe_batch_sizes``.
    ``recalibration_batches``: training mini-batches (of ``batch_size``) that
    Algorithm 2 averages over.
    """

    hidden: tuple[int, ...] = PAPER_HIDDEN
    activation: str = "sigmoid"
    bn_momentum: float = PYTORCH_DEFAULT_MOMENTUM
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = 0.5
    steps: int = 600
    seed: int = 0
    eval_every: int = 50
    units: tuple[int, ...] = (0, 1, 2)
    image_index: int = 0
    probe_batch_sizes: tuple[int, ...] = PROBE_BATCH_SIZES
    probe_batches: int = 50
    train_mode_batch_sizes: tuple[int, ...] = TRAIN_MODE_BATCH_SIZES
    recalibration_batches: int = 200

    def __post_init__(self):
        check(1 <= len(self.hidden) <= 6, "Choose 1 to 6 hidden layers.")
        check(0.0 < self.bn_momentum <= 1.0, "BN momentum must be in (0, 1] (the cumulative average is always shown beside it).")
        check(2 <= self.batch_size <= 1024, "Batch size must be between 2 and 1,024: train-mode BN needs two examples.")
        check(10 <= self.steps <= 20_000, "steps must be between 10 and 20,000.")
        check(1 <= len(self.units) <= 8 and all(0 <= u < self.hidden[0] for u in self.units), f"units must be 1 to 8 neurons of the first layer (0..{self.hidden[0] - 1}).")
        check(0 <= self.image_index < 10_000, "image_index must be a test image, 0..9,999.")
        check(all(2 <= b <= 2048 for b in self.probe_batch_sizes) and self.probe_batch_sizes, "probe batch sizes must be between 2 and 2,048.")
        check(2 <= self.probe_batches <= 1000, "probe_batches must be between 2 and 1,000.")
        check(all(2 <= b <= 10_000 for b in self.train_mode_batch_sizes), "train-mode batch sizes must be between 2 and 10,000.")
        check(1 <= self.recalibration_batches <= 5000, "recalibration_batches must be between 1 and 5,000.")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.model_config(), self.train_config()
        check_view_cost(self, "fewer steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        # the probes (batch-mates, recalibration, train-mode accuracy) are forward passes: a small share
        return training_cost([(self.model_config(), self.train_config())])

    def model_config(self) -> ModelConfig:
        return ModelConfig(hidden=self.hidden, activation=self.activation, norm="batch", bn_momentum=self.bn_momentum)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed, eval_every=self.eval_every)


@dataclass
class TrainVsEvalResult:
    """Everything the page shows. Arrays over probe batch sizes S and probe batches K.

    ``run.records`` holds the per-step statistics of the first BN layer (see
    :class:`bnviz.recorders.BatchNormStats`, ``ShadowRunningStats`` with prefix
    ``bn_cumulative``, ``FirstLayerPopulationStats``). ``*_gap_*``: mean over
    all first-layer neurons at the last step of ``|estimate - truth| / true std``
    (means) and ``|estimate / true var - 1|`` (variances).
    """

    config: TrainVsEvalConfig
    run: TrainResult
    # batch-mates
    image: np.ndarray  # (28, 28) uint8 pixels of the probed test image
    image_label: int
    probe_batch_sizes: np.ndarray  # (S,)
    train_mode_probs: np.ndarray  # (S, K, 10) softmax of the image in train mode
    eval_mode_probs: np.ndarray  # (S, K, 10) the same batches in eval mode
    alone_eval_probs: np.ndarray  # (10,) eval mode, batch of one
    alone_train_error: str | None  # what torch raised for train mode with a batch of one
    eval_shape_rounding: float  # max |eval logit in a batch - alone|: float summation order, not batch-mates
    # accuracy three ways (full 10,000-image test set)
    eval_accuracy: float
    train_mode_batch_sizes: np.ndarray
    train_mode_accuracy: np.ndarray
    recalibrated_accuracy: float
    recalibration_values_per_channel: int
    # estimates vs truth for the whole first layer, last step
    mean_gap: dict  # {"running (EMA)": float, "cumulative average": float, "recalibrated": float}
    var_gap: dict

    @property
    def train_mode_spread(self) -> np.ndarray:
        """(S,) std over batches of the image's true-class probability in train mode."""
        return self.train_mode_probs[:, :, self.image_label].std(axis=1)

    @property
    def eval_mode_spread(self) -> np.ndarray:
        """(S,) max - min over batches of the eval-mode probabilities (all classes)."""
        return (self.eval_mode_probs.max(axis=1) - self.eval_mode_probs.min(axis=1)).max(axis=1)

    @property
    def train_mode_flip_rate(self) -> np.ndarray:
        """(S,) fraction of batches whose train-mode prediction differs from the eval-mode one alone."""
        return (self.train_mode_probs.argmax(axis=2) != int(self.alone_eval_probs.argmax())).mean(axis=1)


def probe_batch_mates(model, x, image_index: int, batch_sizes, num_batches: int, seed: int):
    """Softmax of test image ``image_index`` inside random batches of ``x``, train and eval mode.

    Each batch is the image (row 0) plus ``B - 1`` other rows drawn without
    replacement; every batch is normalised on its own (as one forward call).
    The model is not changed. Returns ``(train_probs, eval_probs)`` of shape (S, K, 10).
    """
    generator = torch.Generator().manual_seed(seed)
    others = torch.cat([torch.arange(image_index), torch.arange(image_index + 1, len(x))])
    train_probs, eval_probs = [], []
    for size in batch_sizes:
        mates = torch.stack([others[torch.randperm(len(others), generator=generator)[: size - 1]] for _ in range(num_batches)])
        index = torch.cat([torch.full((num_batches, 1), image_index), mates], dim=1).to(x.device)  # (K, B): the image first
        for probs, train_mode in ((train_probs, True), (eval_probs, False)):
            logits = forward_indexed_batches(model, x, index, train_mode)[:, 0].double()
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
    return np.stack(train_probs), np.stack(eval_probs)


@torch.no_grad()
def train_mode_accuracy(model, x, y, batch_size: int, seed: int) -> float:
    """Accuracy when each test batch of ``batch_size`` is normalised with its own statistics.

    The test set is shuffled (seeded) and cut into batches of ``batch_size``;
    the remainder forms one smaller batch (or, if it is a single example,
    is left out: train mode cannot normalise one value).
    """
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(y.device)
    full = len(y) // batch_size * batch_size
    index = order[:full].reshape(-1, batch_size)
    correct = (forward_indexed_batches(model, x, index, train_mode=True).argmax(dim=2) == y[index]).sum().item()
    counted = full
    if len(y) - full >= 2:
        rest = order[full:]
        correct += (forward_independent_batches(model, x[rest][None], train_mode=True)[0].argmax(dim=1) == y[rest]).sum().item()
        counted = len(y)
    return correct / counted


def _gaps(true_mean, true_var, estimates: dict) -> tuple[dict, dict]:
    true_mean, true_var = np.asarray(true_mean, float), np.asarray(true_var, float)
    mean_gap = {name: float(np.mean(np.abs(np.asarray(m, float) - true_mean) / np.sqrt(true_var))) for name, (m, _) in estimates.items()}
    var_gap = {name: float(np.mean(np.abs(np.asarray(v, float) / true_var - 1.0))) for name, (_, v) in estimates.items()}
    return mean_gap, var_gap


def run(config: TrainVsEvalConfig, progress: ProgressFn | None = None) -> TrainVsEvalResult:
    device = pick_device()
    data = load_mnist(str(device))
    if progress:
        progress(0.0, "the training set's mean and covariance (for the true statistics)", None)
    moments = training_set_moments(str(device))
    recorders = [
        BatchNormStats(block=0, units=config.units),
        ShadowRunningStats(block=0, units=config.units, momentum=None, prefix="bn_cumulative"),
        FirstLayerPopulationStats(moments, units=config.units),
    ]
    training = Run(config.model_config(), config.train_config(), data, recorders)

    def train_progress(fraction, message, partial):
        if progress:
            progress(0.05 + 0.75 * fraction, message, None)

    [result] = train_together([training], train_progress)
    # a copy without the recorders' hooks, so probing it records nothing
    model = build_model(config.model_config(), config.seed, device)
    model.load_state_dict(training.model.state_dict())
    if result.diverged:
        # nothing to probe: a diverged model's statistics are NaN; the page says so
        return _diverged(config, result, data)

    if progress:
        progress(0.8, "batch-mates: one image in many random batches", None)
    x, y = data.test_x, data.test_y
    train_probs, eval_probs = probe_batch_mates(model, x, config.image_index, config.probe_batch_sizes, config.probe_batches, config.seed)
    image = x[config.image_index : config.image_index + 1]
    model.eval()
    with torch.no_grad():
        alone_logits = model(image)[0].double()
        in_batch_logits = model(torch.cat([image, x[:255]]))[0].double()
    alone_train_error = None
    try:
        with torch.no_grad():
            copy.deepcopy(model).train()(image)
    except ValueError as error:  # torch: "Expected more than 1 value per channel when training"
        alone_train_error = str(error)

    if progress:
        progress(0.88, "test accuracy three ways", None)
    eval_accuracy = evaluate(model, x, y)[1]
    train_accuracies = [train_mode_accuracy(model, x, y, size, config.seed) for size in config.train_mode_batch_sizes]
    recalibrated = copy.deepcopy(model)
    estimates = recalibrate_batch_norm(recalibrated, data.train_x, config.batch_size, config.recalibration_batches, seed=config.seed)
    recalibrated_accuracy = evaluate(recalibrated, x, y)[1]

    records = result.records
    first_bn = batch_norm_layers(model)[0]
    mean_gap, var_gap = _gaps(
        records["bn_population_final_mean"],
        records["bn_population_final_var"],
        {
            "running (EMA)": (first_bn.running_mean.cpu().numpy(), first_bn.running_var.cpu().numpy()),
            "cumulative average": (records["bn_cumulative_final_mean"], records["bn_cumulative_final_var"]),
            "recalibrated": (estimates[0].mean.cpu().numpy(), estimates[0].var.cpu().numpy()),
        },
    )
    return TrainVsEvalResult(
        config=config,
        run=result,
        image=_pixels(image),
        image_label=int(y[config.image_index]),
        probe_batch_sizes=np.asarray(config.probe_batch_sizes),
        train_mode_probs=train_probs,
        eval_mode_probs=eval_probs,
        alone_eval_probs=torch.softmax(alone_logits, dim=0).cpu().numpy(),
        alone_train_error=alone_train_error,
        eval_shape_rounding=float((in_batch_logits - alone_logits).abs().max()),
        eval_accuracy=float(eval_accuracy),
        train_mode_batch_sizes=np.asarray(config.train_mode_batch_sizes),
        train_mode_accuracy=np.asarray(train_accuracies),
        recalibrated_accuracy=float(recalibrated_accuracy),
        recalibration_values_per_channel=estimates[0].values_per_channel,
        mean_gap=mean_gap,
        var_gap=var_gap,
    )


def _pixels(image: torch.Tensor) -> np.ndarray:
    return ((image[0, 0] * MNIST_PIXEL_STD + MNIST_PIXEL_MEAN).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _diverged(config, result, data) -> TrainVsEvalResult:
    sizes = np.asarray(config.probe_batch_sizes)
    nan_probs = np.full((len(sizes), config.probe_batches, 10), np.nan)
    return TrainVsEvalResult(
        config=config, run=result, image=_pixels(data.test_x[config.image_index : config.image_index + 1]),
        image_label=int(data.test_y[config.image_index]), probe_batch_sizes=sizes, train_mode_probs=nan_probs,
        eval_mode_probs=nan_probs.copy(), alone_eval_probs=np.full(10, np.nan), alone_train_error=None,
        eval_shape_rounding=float("nan"), eval_accuracy=float("nan"), train_mode_batch_sizes=np.asarray(config.train_mode_batch_sizes),
        train_mode_accuracy=np.full(len(config.train_mode_batch_sizes), np.nan), recalibrated_accuracy=float("nan"),
        recalibration_values_per_channel=config.batch_size, mean_gap={}, var_gap={},
    )


def evaluation_ways(config: TrainVsEvalConfig) -> list[str]:
    """The names of :func:`accuracy_three_ways`'s rows, in order, from the config alone."""
    return ["eval mode (running estimates)", *(f"train mode, batches of {int(b)}" for b in config.train_mode_batch_sizes), "recalibrated (Algorithm 2)"]


def accuracy_three_ways(result: TrainVsEvalResult) -> list[tuple[str, float]]:
    """(way, test accuracy) rows: eval mode, train mode at each batch size, recalibrated."""
    accuracies = [result.eval_accuracy, *map(float, result.train_mode_accuracy), result.recalibrated_accuracy]
    return list(zip(evaluation_ways(result.config), accuracies))


def estimate_errors(result: TrainVsEvalResult, unit_position: int, statistic: str = "mean") -> dict[str, float]:
    """Mean |estimate - truth| over the second half of training, for one recorded neuron, in units of
    the true standard deviation (means) or relative to the true variance (variances)."""
    records = result.run.records
    half = len(records["bn_step"]) // 2
    true_mean = records["bn_population_mean"][half:, unit_position]
    true_var = records["bn_population_var"][half:, unit_position]
    errors = {}
    for name, key in (("running (EMA)", "bn_running"), ("cumulative average", "bn_cumulative")):
        estimate = records[f"{key}_{statistic}"][half:, unit_position]
        error = np.abs(estimate - true_mean) / np.sqrt(true_var) if statistic == "mean" else np.abs(estimate / true_var - 1.0)
        errors[name] = float(np.mean(error)) if len(error) else float("nan")
    return errors


def last_step_errors(result: TrainVsEvalResult, unit_position: int) -> dict[str, float]:
    """One recorded neuron's *EMA error* at the last step: |estimate - true mean| / true std, for the
    EMA and the cumulative average (the page's one name for this quantity; :func:`estimate_errors`
    averages it over the second half of training, ``mean_gap`` over the whole first layer)."""
    records = result.run.records
    final = len(records["bn_step"]) - 1
    true_mean, true_std = records["bn_population_mean"][final, unit_position], np.sqrt(records["bn_population_var"][final, unit_position])
    return {name: float(abs(records[f"{key}_mean"][final, unit_position] - true_mean) / true_std)
            for name, key in (("running (EMA)", "bn_running"), ("cumulative average", "bn_cumulative"))}


def summarize(result: TrainVsEvalResult) -> dict:
    return {
        "diverged": result.run.diverged,
        "accuracy": dict(accuracy_three_ways(result)),
        "mean_gap_in_true_std": result.mean_gap,
        "var_relative_gap": result.var_gap,
        "train_mode_spread_by_batch_size": dict(zip(map(int, result.probe_batch_sizes), map(float, result.train_mode_spread))),
        "eval_mode_spread_by_batch_size": dict(zip(map(int, result.probe_batch_sizes), map(float, result.eval_mode_spread))),
        "alone_train_error": result.alone_train_error,
    }


EXPERIMENT = Experiment(
    name="train_vs_eval",
    title="Train vs eval statistics: batch, running, population",
    summary="BN's batch statistics vs its running estimates vs the true population; batch-mates; test accuracy three ways.",
    config_type=TrainVsEvalConfig,
    run=run,
    order=20,
    presets={
        "Keras default momentum (0.99 = PyTorch 0.01)": TrainVsEvalConfig(bn_momentum=0.01),
        "Small batches (8)": TrainVsEvalConfig(batch_size=8),
    },
    summarize=summarize,
)
