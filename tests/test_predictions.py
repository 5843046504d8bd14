"""Predict, then reveal (bnviz/predictions.py): every question's answer rule on synthetic
results (a diverged run among them) and on real instant ones, and each answer is one of
the options the question offers."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from apptest_helpers import ROOT
from bnviz import predictions as p
from bnviz.experiments import get_experiment
from bnviz.experiments.norm_comparison import NormComparisonResult
from bnviz.experiments.small_batches import SmallBatchesResult
from bnviz.results import Comparison, SeededComparison


def fake_run(label: str, accuracy: float, seed: int = 0, lr: float = 0.1, diverged: bool = False):
    """What an answer rule reads of a TrainResult."""
    return SimpleNamespace(label=label, final_test_acc=math.nan if diverged else accuracy, diverged=diverged, train=SimpleNamespace(seed=seed, lr=lr))


def answer(experiment: str, result, config=None):
    """The rule's answer, checked to be one of the options asked for ``config`` (default: the result's)."""
    question = p.QUESTIONS[experiment]
    found = question.answer(result)
    config = config if config is not None else result.config
    assert found.option is None or found.option in question.options(config), (found, question.options(config))
    assert found.explanation
    return found


def test_highest_ranks_ties_and_diverged_arms():
    assert p.highest({"a": 0.9, "b": 0.8}, 0.01).option == "a"
    tie = p.highest({"a": 0.9, "b": 0.895, "c": 0.5}, 0.01)
    assert tie.option == p.tie_option(0.01) and "0.5 points apart" in tie.explanation
    assert p.highest({"a": 0.9, "b": 0.899}, 0.01).option == "Within 1 point of each other"  # two arms
    assert p.highest({"a": math.nan, "b": 0.2}, 0.01).option == "b"  # a diverged arm ranks below any score
    assert p.highest({"a": math.nan, "b": math.nan}, 0.01).option is None
    assert "a 90.0%, b 80.0%: a leads by 10.0 points" in p.highest({"b": 0.8, "a": 0.9}, 0.01).explanation


def test_every_page_main_experiment_has_one_question():
    for page in (ROOT / "app_pages").glob("*.py"):
        asked = set(re.findall(r'run_experiment\("(\w+)"', page.read_text())) & set(p.QUESTIONS)
        assert len(asked) == 1, (page.name, asked)
    for name, question in p.QUESTIONS.items():
        config = get_experiment(name).default_config()
        options = question.options(config)
        assert question.text(config) and len(set(options)) == len(options) >= 2, name


def test_home_and_paper_bn_or_not():
    config = get_experiment("home").default_config()
    assert answer("home", Comparison([fake_run("no BN", 0.90), fake_run("BN", 0.95)]), config).option == p.WITH_BN
    diverged = answer("home", Comparison([fake_run("no BN", 0.90), fake_run("BN", 0.95, diverged=True)]), config)
    assert diverged.option == p.WITHOUT_BN and "diverged" in diverged.explanation
    paper = get_experiment("paper_figure1").default_config()
    seeds = [fake_run(label, acc, seed) for seed, pair in enumerate([(0.950, 0.952), (0.949, 0.955)]) for label, acc in zip(("no BN", "BN"), pair)]
    assert answer("paper_figure1", SeededComparison.from_seeds(seeds, 2), paper).option == p.tie_option(p.ACCURACY_MARGIN, 2)  # 0.4 points apart


@pytest.mark.parametrize("changes,expected", [
    ({}, p.STD_GAMMA),  # variance about 9, eps 1e-5: std(y) = |γ| to 6 digits
    ({"spread": 0.01, "eps": 1.0, "gamma": 2.0}, p.STD_BELOW),  # σ² = 1e-4 ≪ ε: y is squashed
    ({"constant_neuron": True, "eps": 0.0}, p.STD_NAN),  # 0/0
])
def test_normalization_math_output_std_on_real_batches(changes, expected):
    spec = get_experiment("normalization_math")
    config = spec.default_config().replace(source="synthetic", train_steps=0, **changes)
    found = answer("normalization_math", spec.run(config))
    assert found.option == expected, found


def test_train_vs_eval_best_way():
    config = get_experiment("train_vs_eval").default_config()
    result = SimpleNamespace(config=config, run=fake_run("BN", 0.9), eval_accuracy=0.90, recalibrated_accuracy=0.93,
                             train_mode_accuracy=np.array([0.5, 0.8, 0.88, 0.9]))
    assert answer("train_vs_eval", result).option == "recalibrated (Algorithm 2)"
    result.run = fake_run("BN", 0.9, diverged=True)
    assert answer("train_vs_eval", result).option is None


def test_distribution_shift_eval_or_train_mode():
    config = get_experiment("distribution_shift").default_config()
    rows = {("shifted", "eval"): 0.31, ("shifted", "train"): 0.82}
    result = SimpleNamespace(config=config, accuracy_defined=True, mode=lambda data, mode: {"accuracy": rows[(data, mode)]})
    assert answer("distribution_shift", result).option == p.SHIFT_TRAIN
    result.accuracy_defined = False  # unseen digits: no accuracy to compare
    assert answer("distribution_shift", result).option is None


def test_forward_pass_change():
    from bnviz.experiments.forward_pass_pitfall import NO_GRAD_PASS

    config = get_experiment("forward_pass_pitfall").default_config()
    drops, stays, rises = p.QUESTIONS["forward_pass_pitfall"].options(config)
    result = SimpleNamespace(config=config, accuracy_before=np.array([0.95, 0.94]), accuracy_after={NO_GRAD_PASS: np.array([0.85, 0.86])},
                             stat_change={NO_GRAD_PASS: np.array([0.4, 0.3])})
    found = answer("forward_pass_pitfall", result)
    assert found.option == drops and "-9.0 points" in found.explanation and "up to 0.4" in found.explanation
    result.accuracy_after = {NO_GRAD_PASS: np.array([0.951, 0.942])}
    assert answer("forward_pass_pitfall", result).option == stays
    result.accuracy_after = {NO_GRAD_PASS: np.array([math.nan, 0.9])}
    assert answer("forward_pass_pitfall", result).option is None


RESULT_CLASSES = {"norm_comparison": NormComparisonResult, "small_batches": SmallBatchesResult}


@pytest.mark.parametrize("experiment", list(RESULT_CLASSES))
def test_sweeps_at_the_smallest_batch(experiment):
    spec = get_experiment(experiment)
    config = spec.default_config().replace(batch_sizes=(64, 4), seeds=2)
    accuracy = {"none": 0.80, "batch": 0.70, "layer": 0.90, "group": 0.86}  # at batch 4; every norm 0.95 at 64
    runs = {(norm, b, s): fake_run(norm, accuracy.get(norm, 0.5) if b == 4 else 0.95, s) for norm in config.norms for b in config.batch_sizes for s in range(2)}
    result = RESULT_CLASSES[experiment](config=config, runs=runs)
    assert answer(experiment, result).option == "LayerNorm"
    runs[("layer", 4, 1)] = fake_run("layer", 0.0, 1, diverged=True)  # one diverged seed: LayerNorm has no mean
    assert answer(experiment, result).option == "GroupNorm"


def test_placement_at_the_largest_learning_rate():
    from bnviz.experiments.placement import PlacementResult

    config = get_experiment("placement").default_config()
    top = max(config.lrs)
    scores = {"no BN": 0.3, "BN before": 0.91, "BN after": 0.93}
    runs = [fake_run(label, scores[label] if lr == top else 0.99, seed, lr, diverged=label == "no BN" and lr == top)
            for lr in config.lrs for seed in range(config.seeds) for label in scores]
    found = answer("placement", PlacementResult(config=config, runs=runs, init_max_difference=0.0, same_batches=True))
    assert found.option == "BN after" and "no BN no score (diverged)" in found.explanation


def test_noisy_bn():
    config = get_experiment("why_noisy_bn").default_config()
    scores = {"no BN": 0.80, "BN": 0.93, "noisy BN": 0.925, "no BN + noise": 0.75}
    result = SeededComparison.from_seeds([fake_run(label, acc, seed) for seed in range(2) for label, acc in scores.items()], 4)
    assert answer("why_noisy_bn", result, config).option == p.tie_option(p.ACCURACY_MARGIN)
