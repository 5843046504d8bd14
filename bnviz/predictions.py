"""Predict, then reveal: one question per page's main experiment, answered by its result.

Before a run's charts are shown, a student commits to an answer ("which network will
have the higher test accuracy at the end?"); the answer is then read off the result by
the question's rule, never typed in, with one line of the numbers that decided it. A
lecturer turns the questions on for the room with ``?predict=1`` (``bnviz.app``).

A :class:`Question` has ``text(config)`` and ``options(config)`` (asked before the result
exists, so they may name the config's settings) and ``answer(result) -> Answer``. Most
are "which arm scores highest" (:func:`highest`): an arm whose run diverged (NaN/inf
loss) has no score and ranks below every finite one; when the best two are within the
question's ``margin``, the answer is the question's tie option. These answer a question
about *this* run (its seeds), so they use no verdict words: those come from
:mod:`bnviz.verdicts`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .models import model_label


@dataclass(frozen=True)
class Answer:
    """``option``: the question's option the result makes true; None when the run cannot
    settle the question (every arm diverged, an accuracy with no meaning). ``explanation``:
    one line of the numbers that decided it."""

    option: str | None
    explanation: str


@dataclass(frozen=True)
class Question:
    text: Callable[[Any], str]  # config -> the question
    options: Callable[[Any], tuple[str, ...]]  # config -> the options, in the order shown
    answer: Callable[[Any], Answer]  # result -> the option the numbers make true


def percent(value: float) -> str:
    return f"{100 * value:.1f}%" if math.isfinite(value) else "no score (diverged)"


def points(margin: float) -> str:
    """An accuracy margin in percentage points, as a question words it: 0.01 -> "1 point"."""
    value = 100 * margin
    return f"{value:g} point" + ("" if value == 1 else "s")


def tie_option(margin: float, arms: int = 3) -> str:
    """The option "no ranking": the best two of ``arms`` are within ``margin``."""
    return f"Within {points(margin)} of each other" if arms == 2 else f"The best two within {points(margin)} of each other"


def highest(scores: dict[str, float], margin: float) -> Answer:
    """The option whose score is highest, by more than ``margin``; else :func:`tie_option`.

    ``scores``: option -> accuracy in [0, 1], NaN for an arm with no score (diverged). A
    single finite arm is the answer whatever its score (the others diverged); none: no answer.
    """
    ranked = sorted(scores.items(), key=lambda item: -item[1] if math.isfinite(item[1]) else math.inf)
    listed = ", ".join(f"{option} {percent(value)}" for option, value in ranked)
    finite = [(option, value) for option, value in ranked if math.isfinite(value)]
    if not finite:
        return Answer(None, f"No arm finished with a score ({listed}).")
    if len(finite) == 1:
        return Answer(finite[0][0], f"{listed}: the only one that did not diverge.")
    (best_option, best), (_second_option, second) = finite[0], finite[1]
    gap = 100 * (best - second)
    if best - second <= margin:
        return Answer(tie_option(margin, len(scores)), f"{listed}: the best two are {gap:.1f} points apart, within the {points(margin)} margin.")
    return Answer(best_option, f"{listed}: {best_option} leads by {gap:.1f} points, more than the {points(margin)} margin.")


def arm_score(runs) -> float:
    """Mean final test accuracy over an arm's seeds; NaN if any seed diverged."""
    values = [math.nan if run.diverged else run.final_test_acc for run in runs]
    return float(np.mean(values)) if values else math.nan


def seeds_words(seeds: int) -> str:
    return "" if seeds == 1 else f" (mean over {seeds} seeds)"


# ------------------------------------------------------------------ the questions, by experiment
ACCURACY_MARGIN = 0.01  # one point of test accuracy: closer than that is "within", not a ranking
WITH_BN, WITHOUT_BN = "With BN", "Without BN"


def _arm(result, label: str) -> list:
    """Every seed's run of one model (a :class:`~bnviz.results.SeededComparison`), or its one run."""
    return result.arm(label) if hasattr(result, "arm") else [result.by_label(label)]


def _bn_or_not(result) -> Answer:
    return highest({WITH_BN: arm_score(_arm(result, "BN")), WITHOUT_BN: arm_score(_arm(result, "no BN"))}, ACCURACY_MARGIN)


def _bn_or_not_options(_config) -> tuple[str, ...]:
    return (WITH_BN, WITHOUT_BN, tie_option(ACCURACY_MARGIN, 2))


STD_TOLERANCE = 1e-3  # relative: "|γ|" means within 0.1% of it
STD_GAMMA, STD_BELOW, STD_NAN = "|γ|, to within 0.1%", "Less than |γ| by more than 0.1%", "Not a number (NaN)"


def _output_std(result) -> Answer:
    """Eq. (4) output y = γ·x̂ + β of the first shown neuron: std(y) = |γ|·√(σ²/(σ²+ε)), σ² the
    biased batch variance (eq. 2). Measured on the batch, shape (batch_size,)."""
    y = np.asarray(result.y[:, 0], dtype=float)
    gamma, eps, var = abs(result.config.gamma), result.config.eps, float(result.var[0])
    if not np.isfinite(y).all():
        return Answer(STD_NAN, f"The batch variance is {var:.3g} and ε = {eps:g}: eq. (3) divides by √({var:.3g} + {eps:g}) = 0, and 0/0 is NaN.")
    std = float(y.std())
    option = STD_GAMMA if abs(std - gamma) <= STD_TOLERANCE * gamma else STD_BELOW
    return Answer(option, f"std(y) = {std:.4g} = |γ|·√(σ²/(σ²+ε)) with |γ| = {gamma:g}, σ² = {var:.3g}, ε = {eps:g}"
                          + (f": {std / gamma:.4f} of |γ|." if gamma > 0 else "."))


def _train_vs_eval_options(config) -> tuple[str, ...]:
    from .experiments.train_vs_eval import evaluation_ways

    return (*evaluation_ways(config), tie_option(ACCURACY_MARGIN))


def _train_vs_eval(result) -> Answer:
    from .experiments.train_vs_eval import accuracy_three_ways

    scores = dict(accuracy_three_ways(result))
    if result.run.diverged:
        scores = dict.fromkeys(scores, math.nan)
    return highest(scores, ACCURACY_MARGIN)


SHIFT_EVAL, SHIFT_TRAIN = "Eval mode (the running statistics)", "Train mode (each test batch's own statistics)"


def _shift(result) -> Answer:
    if not result.accuracy_defined:
        return Answer(None, "These digits were never in training, so accuracy has no meaning here: the page shows what the network's values do instead.")
    return highest({SHIFT_EVAL: result.mode("shifted", "eval")["accuracy"], SHIFT_TRAIN: result.mode("shifted", "train")["accuracy"]}, ACCURACY_MARGIN)


def _change_options(_config=None) -> tuple[str, ...]:
    from .experiments.forward_pass_pitfall import ACCURACY_MARGIN as margin

    within = points(margin)
    return (f"It drops by more than {within}", f"It stays within {within}", f"It rises by more than {within}")


def _forward_pass(result) -> Answer:
    from .experiments.forward_pass_pitfall import ACCURACY_MARGIN as margin, NO_GRAD_PASS

    drops, stays, rises = _change_options()
    before, after = float(np.mean(result.accuracy_before)), float(np.mean(result.accuracy_after[NO_GRAD_PASS]))
    change = after - before
    if not math.isfinite(change):
        return Answer(None, f"Before the pass {percent(before)}, after {percent(after)}: no finite change.")
    option = drops if change < -margin else rises if change > margin else stays
    seeds, moved = len(result.accuracy_before), float(np.max(result.stat_change[NO_GRAD_PASS]))
    return Answer(option, f"Eval-mode test accuracy {percent(before)} before the pass, {percent(after)} after{seeds_words(seeds)}: "
                          f"{100 * change:+.1f} points. The pass changed a running statistic by up to {moved:.3g}: "
                          "no_grad stops gradients, not BN's buffer updates.")


def _norm_options(config) -> tuple[str, ...]:
    return (*(model_label(norm) for norm in config.norms), tie_option(ACCURACY_MARGIN))


def _smallest_batch(result) -> Answer:
    """Mean over seeds at the smallest batch size of the sweep (``accuracy(norm)``: (batch sizes, seeds), NaN = diverged)."""
    row = result.config.batch_sizes.index(min(result.config.batch_sizes))
    return highest({model_label(norm): float(np.mean(result.accuracy(norm)[row])) for norm in result.config.norms}, ACCURACY_MARGIN)


def _sweep_text(config) -> str:
    names = ", ".join(model_label(norm) for norm in config.norms)
    return (f"{names}: each trains the same network at batch sizes {', '.join(map(str, config.batch_sizes))}. At batch size "
            f"{min(config.batch_sizes)}, which has the highest test accuracy{seeds_words(config.seeds)}?")


def _placement_options(_config) -> tuple[str, ...]:
    from .experiments.placement import LABELS

    return (*LABELS, tie_option(ACCURACY_MARGIN))


def _placement(result) -> Answer:
    from .experiments.placement import LABELS

    lr = max(result.config.lrs)
    return highest({label: arm_score(result.runs_at(lr, label)) for label in LABELS}, ACCURACY_MARGIN)


def _noisy_options(_config) -> tuple[str, ...]:
    from .experiments.why_noisy_bn import NOISY_MODELS

    return (*(model_label(norm) for norm in NOISY_MODELS), tie_option(ACCURACY_MARGIN))


def _noisy(result) -> Answer:
    from .experiments.why_noisy_bn import NOISY_MODELS

    return highest({model_label(norm): arm_score(result.arm(model_label(norm))) for norm in NOISY_MODELS}, ACCURACY_MARGIN)


# experiment name (the page's main run, ``bnviz.app.run_experiment``) -> its question
QUESTIONS: dict[str, Question] = {
    "home": Question(
        lambda c: f"Both networks train for {c.steps:,} steps at learning rate {c.lr:g} ({c.activation}). Which will have the higher test accuracy at the end?",
        _bn_or_not_options, _bn_or_not),
    "normalization_math": Question(
        lambda c: (f"Neuron {c.first_neuron}'s batch goes through eq. (1)–(4) with γ = {c.gamma:g}, β = {c.beta:g}, ε = {c.eps:g}. "
                   "What will the standard deviation of its output y over the batch be?"),
        lambda _c: (STD_GAMMA, STD_BELOW, STD_NAN), _output_std),
    "train_vs_eval": Question(
        lambda c: f"The same trained weights ({c.steps:,} steps, batches of {c.batch_size}), scored on the test set three ways. Which way scores highest?",
        _train_vs_eval_options, _train_vs_eval),
    "paper_figure1": Question(
        lambda c: f"The paper's MLP trains for {c.steps:,} steps with and without BN. Which reaches the higher test accuracy at the end{seeds_words(c.seeds)}?",
        _bn_or_not_options, _bn_or_not),
    "distribution_shift": Question(
        lambda c: f"A BN model trained on clean digits is tested on {c.shift} digits (strength {c.strength:g}). Which way of evaluating it scores higher on them?",
        lambda _c: (SHIFT_EVAL, SHIFT_TRAIN, tie_option(ACCURACY_MARGIN, 2)), _shift),
    "forward_pass_pitfall": Question(
        lambda c: ("A trained BN model makes one pass over the test set in train mode under `torch.no_grad()`, then is scored "
                   "with `model.eval()`. Its test accuracy, compared with before that pass:"),
        _change_options, _forward_pass),
    "norm_comparison": Question(_sweep_text, _norm_options, _smallest_batch),
    "small_batches": Question(_sweep_text, _norm_options, _smallest_batch),
    "placement": Question(
        lambda c: (f"No BN, BN before and BN after the {c.activation}, trained at learning rate {max(c.lrs):g}. "
                   f"Which has the highest final test accuracy{seeds_words(c.seeds)}?"),
        _placement_options, _placement),
    "why_noisy_bn": Question(
        lambda c: ("Noisy BN adds fresh noise after every BN layer, so each layer's input keeps moving. "
                   f"After {c.steps:,} steps, which has the highest test accuracy{seeds_words(c.seeds)}?"),
        _noisy_options, _noisy),
}
