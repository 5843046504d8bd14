"""Label-shifted test batches: where batch statistics help, and where they hurt.

Test-time adaptation by batch statistics assumes each test batch is a fair
sample of the test distribution. A stream whose batches hold only one digit
(or 2, 5 of the 10) breaks that: a batch's mean and variance then describe
*which digits* it holds, and normalising them away removes the very signal the
classifier needs. Measured on the distribution-shift page's model
(:mod:`bnviz.experiments.distribution_shift`: ReLU MLP, BN after each
activation), trained on clean digits for seeds 0 .. seeds-1, on test batches
of ``batch_size`` images drawn from ``k`` randomly chosen digits, on clean and
on shifted digits (the same shift transforms, :func:`bnviz.data.shift_images`):

* **eval mode**: the training set's running statistics (the reference);
* **batch statistics**: train-mode BN, each test batch normalised by its own
  mean and variance (no update kept);
* **AdaBN** (Li et al. 2016): every BN layer's statistics re-estimated once on
  the whole unlabeled test stream (all its batches pooled, so the pool holds
  every digit), then eval mode
  (:func:`bnviz.experiments.few_sample_adaptation.adapt_statistics`);
* **TENT** (Wang et al. 2021, ICLR, "Tent: Fully Test-Time Adaptation by
  Entropy Minimization"): on each test batch, ``tent_steps`` steps of Adam
  (lr ``tent_lr``) on the mean entropy ``-sum_c p_c log p_c`` of the batch's
  predictions, updating only BN's gamma and beta, normalising with batch
  statistics; the batch is then predicted with the adapted model. Episodic:
  every batch starts again from the trained model (Wang et al.'s online
  version carries the update to the next batch).

A method *helps* (or *hurts*) against eval mode when every seed's accuracy
difference is beyond :data:`MARGIN` the same way; otherwise the comparison is
inconclusive (:func:`compare`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from .. import optim
from ..models import ModelConfig
from ..train import ProgressFn, Run, TrainConfig, TrainResult, pick_device, train_together
from . import Experiment
from .distribution_shift import SHIFT_OPTIONS, ShiftConfig, shifted_test_set, training_data
from .few_sample_adaptation import adapt_statistics

CLASS_COUNTS = (1, 2, 5, 10)
METHODS = ("eval mode", "batch statistics", "AdaBN", "TENT")
DATA = ("clean digits", "shifted digits")
MARGIN = 0.01  # one percentage point, every seed the same way
# Wang et al. 2021 use Adam at lr 1e-3 on BN's affine parameters (Sec. 4); one step per batch online.
TENT_LR = 1e-3


@dataclass(frozen=True)
class LabelShiftConfig(Config):
    """``model``: the distribution-shift page's model and shift (its seed is replaced by seeds
    0 .. seeds-1). ``batches`` test batches of ``batch_size`` per class count in ``class_counts``."""

    model: ShiftConfig = ShiftConfig(test_examples=5000)
    seeds: int = 3
    class_counts: tuple[int, ...] = CLASS_COUNTS
    batch_size: int = 100
    batches: int = 10
    tent_steps: int = 1
    tent_lr: float = TENT_LR

    def __post_init__(self):
        check(self.model.shift != "digits", "Held-out digits have no labels the model knows: choose another shift.")
        check(self.model.corrupted_examples == 0 and self.model.precision == "float32", "Label shift is measured on a clean float32 model.")
        check(1 <= self.seeds <= 5, "Choose 1 to 5 seeds.")
        check(1 <= len(self.class_counts) <= 10 and all(1 <= k <= 10 for k in self.class_counts), "Class counts per batch are between 1 and 10 digits.")
        check(2 <= self.batch_size <= 400, "Test batches need 2 to 400 images (batch statistics need two).")
        check(1 <= self.batches <= 100, "Choose 1 to 100 test batches per class count.")
        check(1 <= self.tent_steps <= 20, "TENT takes 1 to 20 steps per batch.")
        check(1e-5 <= self.tent_lr <= 1e-1, "TENT's learning rate must be between 1e-5 and 0.1.")
        check_view_cost(self, "fewer seeds or steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``): one BN model per seed (TENT's few steps on test batches are a small share)."""
        return training_cost(self.runs())

    def seed_models(self) -> list:
        """The model config of each seed (its shift, training images and batches are its own)."""
        return [self.model.replace(seed=seed) for seed in range(self.seeds)]

    def runs(self) -> list[tuple[ModelConfig, TrainConfig]]:
        """What :func:`run` trains: one BN model per seed, as :meth:`seed_models` builds them."""
        return [(s.model("batch"), s.train_config()) for s in self.seed_models()]


def label_shifted_batches(y: torch.Tensor, classes_per_batch: int, batch_size: int, batches: int, seed: int) -> list[torch.Tensor]:
    """Index tensors of ``batches`` test batches, each of ``batch_size`` images drawn (without
    replacement within the batch) from ``classes_per_batch`` digits chosen at random per batch."""
    generator = torch.Generator().manual_seed(seed)
    y = y.cpu()
    by_class = [torch.nonzero(y == c).flatten() for c in range(10)]
    chosen = []
    for _ in range(batches):
        digits = torch.randperm(10, generator=generator)[:classes_per_batch]
        pool = torch.cat([by_class[int(d)] for d in digits])
        chosen.append(pool[torch.randperm(len(pool), generator=generator)[:batch_size]])
    return chosen


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy ``-sum_c p_c log p_c`` over the batch (logits (B, 10) -> scalar)."""
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def tent_predict(model: nn.Module, x: torch.Tensor, steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TENT on one batch (episodic): a copy of ``model`` in train mode (batch statistics), only
    BN's gamma/beta trainable, ``steps`` Adam steps on :func:`entropy`. Returns the predictions (B,)
    before the first step (plain batch statistics) and after the last."""
    adapted = copy.deepcopy(model).train()
    affine = [p for layer in adapted.norm_layers() for p in (layer.weight, layer.bias)]
    for p in adapted.parameters():
        p.requires_grad_(False)
    for p in affine:
        p.requires_grad_(True)
    optimizer = optim.Adam(affine, lr=lr)
    before = None
    for _ in range(steps):
        optimizer.zero_grad()
        logits = adapted(x)
        if before is None:
            before = logits.detach().argmax(dim=1)
        entropy(logits).backward()
        optimizer.step()
    with torch.no_grad():
        return before, adapted(x).argmax(dim=1)


@torch.no_grad()
def eval_predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode predictions (B,): each image on its own, so all batches go through at once."""
    return model.eval()(x).argmax(dim=1)


def method_accuracy(model: nn.Module, adabn_model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor], config: LabelShiftConfig) -> dict:
    """Accuracy of each of :data:`METHODS` over the images of ``batches`` (indices into x, y).

    Eval mode and AdaBN do not depend on batch-mates: one pass over all the batches' images.
    Batch statistics are TENT's predictions before its first step (the same train-mode forward).
    """
    index = torch.cat(batches).to(x.device)
    correct = {"eval mode": (eval_predictions(model, x[index]) == y[index]).sum().item(),
               "AdaBN": (eval_predictions(adabn_model, x[index]) == y[index]).sum().item(),
               "batch statistics": 0, "TENT": 0}
    for batch in batches:
        batch = batch.to(x.device)
        plain, adapted = tent_predict(model, x[batch], config.tent_steps, config.tent_lr)
        correct["batch statistics"] += (plain == y[batch]).sum().item()
        correct["TENT"] += (adapted == y[batch]).sum().item()
    return {method: correct[method] / len(index) for method in METHODS}


@dataclass
class LabelShiftResult:
    """``accuracy[data][method]``: (seeds, class counts) accuracy over each stream's images."""

    config: LabelShiftConfig
    runs: list[TrainResult]
    accuracy: dict

    def difference(self, data: str, method: str) -> np.ndarray:
        """(seeds, class counts): ``method`` minus eval mode."""
        return self.accuracy[data][method] - self.accuracy[data]["eval mode"]

    def records(self) -> list[dict]:
        return [{"data": data, "method": method, "classes": int(k), "seed": s, "accuracy": float(values[s, i])}
                for data, by_method in self.accuracy.items() for method, values in by_method.items()
                for s in range(values.shape[0]) for i, k in enumerate(self.config.class_counts)]


def compare(difference: np.ndarray, margin: float = MARGIN) -> str:
    """"helps" / "hurts" when every seed's accuracy difference against eval mode is beyond
    ``margin`` the same way; "inconclusive" otherwise."""
    difference = np.asarray(difference, dtype=float)
    if np.all(difference > margin):
        return "helps"
    if np.all(difference < -margin):
        return "hurts"
    return "inconclusive"


def run(config: LabelShiftConfig, progress: ProgressFn | None = None) -> LabelShiftResult:
    device = pick_device()
    data = load_mnist(str(device))
    shifts = config.seed_models()
    runs = [Run(model, train, training_data(s, data)[0], label=f"BN, seed {s.seed}") for s, (model, train) in zip(shifts, config.runs())]
    results = train_together(runs, None if progress is None else (lambda f, m, p: progress(0.5 * f, m, None)))
    counts = config.class_counts
    accuracy = {d: {m: np.zeros((config.seeds, len(counts))) for m in METHODS} for d in DATA}
    for seed, (shift, run_) in enumerate(zip(shifts, runs)):
        model = run_.model.eval()
        clean_x, shifted_x, y = shifted_test_set(shift, data)
        for data_name, x in (("clean digits", clean_x), ("shifted digits", shifted_x)):
            for i, k in enumerate(counts):
                if progress is not None:
                    progress(0.5 + 0.5 * (seed + i / len(counts)) / config.seeds, f"seed {seed}, {data_name}, {k} digit(s) per batch", None)
                batches = label_shifted_batches(y, k, config.batch_size, config.batches, seed=1000 * seed + k)
                adabn_model = copy.deepcopy(model)
                adapt_statistics(adabn_model, x[torch.cat(batches).to(x.device)])
                for method, value in method_accuracy(model, adabn_model.eval(), x, y, batches, config).items():
                    accuracy[data_name][method][seed, i] = value
        del clean_x, shifted_x, x  # before the next seed's copies (each 31 MB at 10,000 images), not after
    if progress is not None:
        progress(1.0, "done", None)
    return LabelShiftResult(config=config, runs=results, accuracy=accuracy)


def summarize(result: LabelShiftResult) -> dict:
    counts = result.config.class_counts
    return {data: {method: {f"{k} digit(s)": round(float(result.accuracy[data][method][:, i].mean()), 4) for i, k in enumerate(counts)}
                   | ({} if method == "eval mode" else {"vs eval mode": [compare(result.difference(data, method)[:, i]) for i in range(len(counts))]})
                   for method in METHODS} for data in DATA}


DEFAULT = LabelShiftConfig()
EXPERIMENT = Experiment(
    name="label_shift",
    title="Label-shifted test batches",
    summary="Test batches of 1, 2, 5 or 10 digits: eval mode vs batch statistics, AdaBN and TENT, on clean and shifted digits.",
    config_type=LabelShiftConfig,
    run=run,
    order=62,
    presets={"Inverted digits": DEFAULT.replace(model=DEFAULT.model.replace(shift="invert", strength=1.0)),
             "TENT, 10 steps per batch": DEFAULT.replace(tent_steps=10)},
    summarize=summarize,
)
