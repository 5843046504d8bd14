"""The Bessel-factor mismatch of PyTorch's BN, compounded through a deep chain.

PyTorch normalises in training mode with the *biased* batch variance
``s^2 = 1/m sum (x - mu_B)^2`` but stores the *unbiased* ``s^2 m / (m - 1)``
in ``running_var``. Even when the running statistics are exactly one batch's
own (momentum 1, one pass), eval mode on that same batch divides by
``sqrt(s^2 m / (m-1))`` instead of ``sqrt(s^2)``: each BN layer's centred
output shrinks by ``sqrt((m - 1) / m)`` (eps aside).

Through a chain of L BN layers with identity activations, the shrink
compounds. Layer l's input is a linear map of layer l-1's output, so its
centred part shrinks by the factor already accumulated, while its batch mean is
unchanged (a BN output's batch mean is beta in both modes); layer l then
divides by its own unbiased standard deviation, one more ``sqrt((m-1)/m)``::

    ||y_eval^(l) - mean|| / ||y_train^(l) - mean|| = ((m - 1) / m)^(l / 2)

the standard deviation ratio; the variance ratio is ``((m-1)/m)^l``. (The
often quoted (63/64)^10 = 0.854 is the standard deviation after 20 layers at
m = 64, or the variance after 10.)

Measured here on a real deep MLP trained through bnviz's trainer (identity
activation, BN before it, so the chain is linear): after training, a
:class:`BesselProbe` stores each test batch's own statistics as the running
ones and compares eval mode with train mode on that batch, layer by layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import ModelConfig
from ..probes import BesselProbe
from ..train import ProgressFn, Run, TrainConfig, TrainResult, pick_device, train_together
from . import Experiment

PROBE_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
MAX_DEPTH = 20
TRAIN_BATCH_SIZE = 64


def closed_form_ratio(m, depth):
    """((m - 1) / m) ** (depth / 2): eval-mode over train-mode output scale after ``depth`` BN layers."""
    m, depth = np.asarray(m, dtype=float), np.asarray(depth, dtype=float)
    return ((m - 1) / m) ** (depth / 2)


@dataclass(frozen=True)
class BesselConfig(Config):
    """A deep identity-activation BN MLP, ``depth`` hidden layers of ``width``, trained
    ``steps`` Adam steps at batch 64, then probed at batch sizes ``probe_batch_sizes``."""

    depth: int = MAX_DEPTH
    width: int = 64
    steps: int = 100
    seed: int = 0
    probe_batch_sizes: tuple[int, ...] = PROBE_BATCH_SIZES
    eps: float = 1e-5

    def __post_init__(self):
        check(1 <= self.depth <= MAX_DEPTH, f"depth must be between 1 and {MAX_DEPTH}.")
        check(8 <= self.width <= 256, "width must be between 8 and 256.")
        check(1 <= self.steps <= 2000, "steps must be between 1 and 2,000.")
        check(0 <= self.seed <= 99, "seed must be between 0 and 99.")
        check(1 <= len(self.probe_batch_sizes) <= 10 and all(2 <= m <= 1024 for m in self.probe_batch_sizes), "Choose 1 to 10 probe batch sizes between 2 and 1,024.")
        check(0.0 <= self.eps <= 1e-2, "eps must be between 0 and 0.01.")
        check_view_cost(self, "fewer steps, layers or units")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost([(self.model(), self.train_config())])

    def model(self) -> ModelConfig:
        return ModelConfig(hidden=(self.width,) * self.depth, activation="identity", norm="batch", bn_eps=self.eps)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=TRAIN_BATCH_SIZE, lr=0.001, optimizer="adam", seed=self.seed, eval_every=self.steps, eval_examples=500)


@dataclass
class BesselResult:
    """``measured[i, l]``: eval/train output scale of BN layer l+1 on a batch of
    ``probe_batch_sizes[i]``; ``closed[i, l]`` the closed form; ``mean_gap`` the
    largest difference of the batch means between the modes."""

    config: BesselConfig
    run: TrainResult
    measured: np.ndarray
    closed: np.ndarray
    mean_gap: np.ndarray

    @property
    def max_relative_error(self) -> float:
        return float(np.max(np.abs(self.measured / self.closed - 1)))


def run(config: BesselConfig, progress: ProgressFn | None = None) -> BesselResult:
    data = load_mnist(str(pick_device()))
    # disjoint test batches, one per probe size
    starts = np.concatenate([[0], np.cumsum(config.probe_batch_sizes)[:-1]])
    batches = [data.test_x[s : s + m] for s, m in zip(starts, config.probe_batch_sizes)]
    probe = BesselProbe(batches, at_step=config.steps)
    run_ = Run(config.model(), config.train_config(), data, recorders=[probe])
    wrapped = None
    if progress is not None:
        def wrapped(fraction, message, partial):
            progress(fraction, f"deep BN MLP: {message}", None)
    result = train_together([run_], wrapped, chunk=max(config.steps // 5, 1))[0]
    if progress is not None:
        progress(1.0, "done", None)
    m = np.asarray(config.probe_batch_sizes, dtype=float)[:, None]
    depth = np.arange(1, config.depth + 1)[None, :]
    return BesselResult(config, result, result.records["bessel_ratio"], closed_form_ratio(m, depth), result.records["bessel_mean_gap"])


def summarize(result: BesselResult) -> dict:
    c = result.config
    return {f"m={m}, depth {c.depth}": {"measured": float(result.measured[i, -1]), "closed form": float(result.closed[i, -1])} for i, m in enumerate(c.probe_batch_sizes)} | {"max relative error": result.max_relative_error}


EXPERIMENT = Experiment(
    name="bessel_mismatch",
    title="The Bessel-factor mismatch through a deep BN chain",
    summary="Eval vs train output scale of each layer of a deep identity-activation BN MLP whose running statistics are one batch's own, against ((m-1)/m)^(depth/2).",
    config_type=BesselConfig,
    run=run,
    order=64,
    summarize=summarize,
)
