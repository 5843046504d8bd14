"""The per-view cost budget (bnviz/budget.py): what one page, preset or link may start.

The cost model's multiply-adds are held against the models bnviz builds; every default
view and preset fits the budget; the page maxima fit it or the page refuses in one
message; the command line lifts it with ``--allow-heavy``.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import bnviz.app
import bnviz.experiments
from apptest_helpers import open_page
from bnviz import budget
from bnviz.errors import BnvizError
from bnviz.experiments import all_experiments
from bnviz.experiments.batch_noise_regularization import RegularizationConfig
from bnviz.experiments.bessel_mismatch import MAX_DEPTH, BesselConfig
from bnviz.experiments.distribution_shift import ShiftConfig
from bnviz.experiments.few_sample_adaptation import FewSampleConfig
from bnviz.experiments.home import HomeConfig
from bnviz.experiments.invariance_table import InvarianceConfig
from bnviz.experiments.normalization_math import NormalizationMathConfig
from bnviz.experiments.paper_figure1 import PAPER_STEPS, PaperFigure1Config
from bnviz.experiments.paper_lr_claims import PaperLrClaimsConfig
from bnviz.experiments.placement import LR_LADDER, PlacementConfig
from bnviz.experiments.precise_bn import PreciseBNConfig
from bnviz.experiments.train_vs_eval import TrainVsEvalConfig
from bnviz.experiments.why_noisy_bn import NoisyBNConfig
from bnviz.experiments.why_probes import STEP_MULTIPLIERS, ProbesConfig
from bnviz.models import ModelConfig, build_model
from test_url_fuzz import StopAtFirstExperiment


def counted_multiply_adds(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one example through ``model``, counted from each layer's weights and output size."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += module.weight.numel() * output.shape[-1] * output.shape[-2]
        elif isinstance(module, nn.Linear):
            total += module.weight.numel() * (output.shape[1] if output.dim() == 3 else 1)  # (N, T, width): once per time step

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("arch,hidden", [("mlp", (100, 100, 100)), ("mlp", (400,) * 6), ("cnn", (8, 16)), ("cnn", (8, 16, 32)), ("rnn", (48,)), ("rnn", (64, 32))])
def test_multiply_adds_match_the_models_bnviz_builds(arch, hidden):
    model = build_model(ModelConfig(arch=arch, hidden=hidden, activation="tanh" if arch == "rnn" else "relu"), seed=0)
    assert counted_multiply_adds(model, torch.zeros(1, 1, 28, 28)) == budget.multiply_adds(arch, hidden)


def test_step_cost_is_one_for_the_reference_and_grows_with_the_work():
    reference = ModelConfig()
    assert budget.step_cost(reference, budget.REFERENCE_BATCH) == pytest.approx(1.0)
    assert budget.step_cost(reference, 2 * budget.REFERENCE_BATCH) == pytest.approx(1.9)  # the overhead does not double
    assert budget.step_cost(ModelConfig(arch="cnn", hidden=(8, 16)), 64) > 50 * budget.step_cost(reference, 64)


CONFIGS = [(name, label, config) for name, spec in all_experiments().items()
           for label, config in [("default view", spec.default_config()), *spec.presets.items()]]


@pytest.mark.parametrize("name,label,config", CONFIGS, ids=[f"{n}:{l}" for n, l, _ in CONFIGS])
def test_every_default_view_and_preset_fits_the_budget(name, label, config):
    assert 0 <= config.cost() <= budget.VIEW_COST_LIMIT


# The heaviest each page's controls allow (the pages' own bounds), for the experiments
# whose maxima fit: the page then never needs to refuse.
PAGE_MAXIMA = {
    "home": HomeConfig(steps=3000, activation="relu"),
    "normalization_math": NormalizationMathConfig(train_steps=1000, batch_size=512),
    "train_vs_eval": TrainVsEvalConfig(steps=3000, batch_size=256),
    "batch_noise_regularization": RegularizationConfig(train_examples=5000, steps=2000, num_seeds=5),
    "precise_bn": PreciseBNConfig(learning_rates=(0.1, 20.0), draws=5, steps=2000),
    "paper_figure1": PaperFigure1Config(steps=PAPER_STEPS, seeds=1),  # more seeds at 50,000 steps: refused (REFUSING)
    "paper_lr_claims": PaperLrClaimsConfig(steps=2000, eval_every=100),
    "distribution_shift": ShiftConfig(depth=6, width=256, corrupted_examples=100, steps=2000),
    "few_sample_adaptation": FewSampleConfig(model=ShiftConfig(depth=6, width=256, steps=2000), draws=10),
    "invariance_table": InvarianceConfig(trained_steps=300),
    "bessel_mismatch": BesselConfig(depth=MAX_DEPTH, width=128, steps=1000),
    "why_noisy_bn": NoisyBNConfig(steps=3000),
    "why_probes": ProbesConfig(steps=2000, probe_every=5, with_noisy=True, max_multiplier=STEP_MULTIPLIERS[-1]),
}


@pytest.mark.parametrize("name", list(PAGE_MAXIMA))
def test_page_maxima_fit_the_budget(name):
    assert PAGE_MAXIMA[name].cost() <= budget.VIEW_COST_LIMIT


def heavy_placement() -> dict:
    return dict(lrs=LR_LADDER, seeds=10, steps=3000, depth=6, width=400, batch_size=256, eval_every=300)


def test_a_config_over_the_budget_is_refused_with_what_to_do():
    with pytest.raises(BnvizError) as refused:
        PlacementConfig(**heavy_placement())
    message = str(refused.value)
    assert "fewer seeds, learning rates or steps" in message and "--allow-heavy" in message and f"{budget.VIEW_COST_LIMIT:,}" in message
    with budget.heavy_allowed():
        assert PlacementConfig(**heavy_placement()).cost() > 100 * budget.VIEW_COST_LIMIT
    with pytest.raises(BnvizError):  # the bound is back after the block
        PlacementConfig(**heavy_placement())


def test_the_command_line_runs_a_heavy_config_with_allow_heavy(monkeypatch, capsys):
    from bnviz.__main__ import main

    real = bnviz.experiments.get_experiment("placement")
    seen = []
    stand_in = dataclasses.replace(real, run=lambda config, progress=None: seen.append(config) or {"ran": True}, summarize=None)
    monkeypatch.setattr(bnviz.experiments, "get_experiment", lambda name: stand_in)
    sets = ["--set", "seeds=10", "--set", "steps=3000", "--set", "width=400", "--set", "depth=6", "--set", f"lrs={list(LR_LADDER)}"]
    assert main(["run", "placement", *sets, "--no-cache"]) == 2
    assert "--allow-heavy" in capsys.readouterr().err and not seen
    try:
        assert main(["run", "placement", *sets, "--no-cache", "--allow-heavy"]) == 0
    finally:
        budget.allow_heavy(False)
    assert seen and seen[0].seeds == 10 and seen[0].cost() > budget.VIEW_COST_LIMIT


# Pages whose controls can combine past the budget: at their maxima they say so in one message.
REFUSING = {
    "placement": dict(lr="0.0003,10.0", seeds="10", steps="3000", depth="6", width="400", batch="256"),
    "small_batches": dict(sizes="full", seeds="5", steps="1000"),
    "bn_vs_layernorm": dict(arch="cnn", sweep="full", seeds="3", steps="1000"),
    "paper_results": dict(steps="50000", seeds="5"),
}


class StopAtTraining(StopAtFirstExperiment):
    """Computes the page's cheap experiments above its sweeps (no training) and stops at the first one that trains."""

    def __init__(self):
        super().__init__()
        self.real = bnviz.app.run_experiment
        self.costs = []  # of the configs that would have trained

    def __call__(self, name, config, live=None, label="Training"):
        if config.cost() == 0:
            return self.real(name, config, live=live, label=label)
        self.costs.append(config.cost())
        return super().__call__(name, config, live, label)


@pytest.mark.parametrize("page", list(REFUSING))
def test_a_page_at_its_maxima_refuses_in_one_message(page, monkeypatch):
    stand_in = StopAtTraining()
    monkeypatch.setattr(bnviz.app, "run_experiment", stand_in)
    at = open_page(f"app_pages/{page}.py", **REFUSING[page]).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "--allow-heavy" in errors[0], errors
    # the refused section trains nothing; the page's other sections go on (each is its own, bnviz.app.section)
    assert all(cost <= budget.VIEW_COST_LIMIT for cost in stand_in.costs), stand_in.names


def test_a_view_over_the_memory_budget_is_refused_and_the_pages_heaviest_choice_is_not():
    """The deep-chain gradients keep every layer's input: width x batch x depth grows past what a
    shared server should hold for one view (view_memory_bytes); the command line lifts the bound."""
    from bnviz.budget import VIEW_MEMORY_LIMIT, heavy_allowed
    from bnviz.experiments.init_gradients import InitGradientsConfig, view_memory_bytes

    heaviest_on_the_page = InitGradientsConfig(width=512, batch_size=512)
    assert view_memory_bytes(heaviest_on_the_page) <= VIEW_MEMORY_LIMIT
    with pytest.raises(BnvizError, match="MiB of tensors at once"):
        InitGradientsConfig(width=1024, batch_size=1000)
    with heavy_allowed():
        assert view_memory_bytes(InitGradientsConfig(width=1024, batch_size=1000)) > VIEW_MEMORY_LIMIT
