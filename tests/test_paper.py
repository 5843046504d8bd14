"""The original paper's page: Figure 1 and the learning-rate/sigmoid claims (bnviz.experiments.paper_*)."""
import json

import numpy as np
import pytest
import torch

from bnviz.charts.paper import accuracy_chart, lr_curve_records, lr_curves_chart, percentile_chart, steps_to_target_chart
from bnviz.errors import BnvizError
from bnviz.experiments import get_experiment
from bnviz.experiments.paper_figure1 import (
    PAPER_PERCENTILES,
    Figure1Result,
    PaperFigure1Config,
    bn_ahead_fraction,
    median_drift,
    percentile_prefix,
    recorders_for,
    steps_to_match,
)
from bnviz.experiments.paper_figure1 import run as run_figure1
from bnviz.experiments.paper_lr_claims import PaperLrClaimsConfig, chance_level_runs, speedup, steps_to_target
from bnviz.experiments.paper_lr_claims import run as run_lr_claims
from bnviz.models import ModelConfig
from bnviz.results import to_jsonable
from bnviz.train import Run, TrainConfig, TrainResult, evaluate


@pytest.mark.parametrize("seed", [0, 1])
def test_bn_beats_no_bn_at_equal_steps(seed):
    """Fig. 1(a) in a short version: at every evaluation after the start, on two seeds, BN is ahead."""
    result = run_figure1(PaperFigure1Config(steps=400, lr=0.5, init="default", seed=seed, seeds=1, binarise=False))
    no_bn, bn = result.by_label("no BN"), result.by_label("BN")
    assert np.array_equal(no_bn.eval_step, bn.eval_step)  # equal steps
    assert bn.final_test_acc > no_bn.final_test_acc
    assert bn_ahead_fraction(result) >= 0.9
    assert bn.test_acc[-1] > 0.8  # BN learned, not just "less bad"


def test_percentile_records_match_a_direct_computation(mnist):
    """The recorded 15/50/85th percentiles of layer L are torch.quantile of that layer's sigmoid input."""
    model = ModelConfig(norm="batch")
    recorders = recorders_for(model)
    run = Run(model, TrainConfig(steps=30, eval_every=30, eval_examples=500), mnist, recorders=recorders)
    run.advance(30)
    records = run.result().records
    _, _, activations = evaluate(run.model, run.eval_x, run.eval_y, capture=True)
    for layer in (1, 2, 3):
        values = records[f"{percentile_prefix(layer)}s"]
        assert values.shape == (2, 100, 3)  # evaluations at steps 0 and 30, every unit, three percentiles
        assert list(records[f"{percentile_prefix(layer)}_steps"]) == [0, 30]
        expected = torch.quantile(activations[layer - 1].double(), torch.tensor([p / 100 for p in PAPER_PERCENTILES], dtype=torch.float64), dim=0).T
        np.testing.assert_allclose(values[-1], expected.numpy(), rtol=1e-6, atol=1e-9)


def _fake_run(label: str, test_acc, medians=None) -> TrainResult:
    steps = np.arange(len(test_acc)) * 10
    records = {}
    if medians is not None:
        medians = np.asarray(medians, dtype=float)  # (evaluations, units)
        values = np.stack([medians - 1, medians, medians + 1], axis=-1)
        records = {f"{percentile_prefix(3)}s": values, f"{percentile_prefix(3)}_steps": steps}
    norm = "batch" if label == "BN" else "none"
    return TrainResult(
        label=label, model=ModelConfig(norm=norm), train=TrainConfig(steps=int(steps[-1]), eval_every=10), eval_step=steps,
        train_loss=np.zeros(len(steps)), train_acc=np.zeros(len(steps)), test_loss=np.zeros(len(steps)), test_acc=np.asarray(test_acc, dtype=float),
        step_loss=np.zeros(int(steps[-1])), final_test_acc=float(test_acc[-1]), final_test_loss=0.0, diverged=False, diverged_step=None, seconds=0.0, device="cpu", records=records,
    )


def test_summary_numbers_on_a_hand_made_result():
    no_bn = _fake_run("no BN", [0.1, 0.5, 0.7, 0.8, 0.85], medians=[[0, 0], [1, 5], [2, 5], [3, 2], [4, 5]])
    bn = _fake_run("BN", [0.1, 0.8, 0.86, 0.79, 0.9], medians=[[0, 0], [1, 1], [1, 1], [1.5, 1], [1, 1]])
    result = Figure1Result([no_bn, bn])
    assert bn_ahead_fraction(result) == 0.75  # ahead at steps 10, 20, 40; behind at 30
    target, bn_steps, no_bn_steps = steps_to_match(result)
    assert (target, bn_steps, no_bn_steps) == (0.85, 20, 40)
    # from 10% of the run (step 4) on, i.e. evaluations at steps 10..40: max - min of each unit's median
    np.testing.assert_allclose(median_drift(result, "no BN", 3), [3, 3])
    np.testing.assert_allclose(median_drift(result, "BN", 3), [0.5, 0])
    steps, values = result.percentiles("BN", 3, 0)
    assert list(steps) == [0, 10, 20, 30, 40] and values.shape == (5, 3)


def test_larger_learning_rates_diverge_without_bn_and_train_with_it():
    """ReLU without BN at 30x (lr 3) blows up: a result marked diverged, shown by the charts; BN trains."""
    config = PaperLrClaimsConfig(steps=60, activations=("relu",), multipliers=(1, 30), eval_every=20)
    result = run_lr_claims(config)
    plain_30, bn_30 = result.find("no BN", 30, "relu"), result.find("BN", 30, "relu")
    assert plain_30.diverged and plain_30.diverged_step <= 60
    assert not bn_30.diverged and bn_30.final_test_acc > 0.5
    rows = {row["run"]: row for row in steps_to_target(result, 0.5)}
    assert rows[plain_30.label]["status"] == "diverged" and rows[plain_30.label]["steps"] is None
    assert rows[bn_30.label]["status"] == "reached" and rows[bn_30.label]["steps"] == bn_30.steps_to_accuracy(0.5)
    assert plain_30.label not in chance_level_runs(result)  # diverged is its own verdict
    records = lr_curve_records(result)
    marker = records[records.kind == "diverged"]
    assert list(marker.model) == ["no BN"] and marker.step.iloc[0] == plain_30.diverged_step
    json.dumps(lr_curves_chart(result).to_dict())  # NaN never reaches Vega
    json.dumps(steps_to_target_chart(list(rows.values())).to_dict())
    json.dumps(to_jsonable(result), allow_nan=False)


def test_speedup_is_the_baseline_steps_over_the_fastest_bn_run():
    rows = [
        {"run": "no BN ×1, relu", "model": "no BN", "activation": "relu", "multiplier": 1, "steps": 400},
        {"run": "no BN ×5, relu", "model": "no BN", "activation": "relu", "multiplier": 5, "steps": None},
        {"run": "BN ×1, relu", "model": "BN", "activation": "relu", "multiplier": 1, "steps": 200},
        {"run": "BN ×5, relu", "model": "BN", "activation": "relu", "multiplier": 5, "steps": 50},
        {"run": "BN ×30, relu", "model": "BN", "activation": "relu", "multiplier": 30, "steps": None},
    ]
    rows.append({"run": "BN ×5, sigmoid", "model": "BN", "activation": "sigmoid", "multiplier": 5, "steps": 100})
    assert speedup(rows, "relu") == {"baseline_steps": 400, "fastest": "BN ×5, relu", "fastest_steps": 50, "ratio": 8.0}
    assert speedup(rows, "sigmoid")["ratio"] == 4.0  # against the same ReLU yardstick, as Table 2's BN-x5-Sigmoid
    rows[0]["steps"] = None
    assert speedup(rows, "relu") is None


def test_figure1_charts_build_from_a_short_run():
    result = run_figure1(PaperFigure1Config(steps=100, seeds=1))
    assert result.layers == 3
    for chart in (accuracy_chart(result, paper_axis=True, total_steps=100), percentile_chart(result, layer=2, unit=7, total_steps=100)):
        json.dumps(chart.to_dict())


def test_configs_reject_impossible_requests_and_register():
    with pytest.raises(BnvizError, match="include 1"):
        PaperLrClaimsConfig(multipliers=(5, 30))
    with pytest.raises(BnvizError, match="50,000"):
        PaperFigure1Config(steps=60_000)
    with pytest.raises(BnvizError, match="optimizer"):
        PaperFigure1Config(optimizer="adam")
    figure1 = get_experiment("paper_figure1")
    assert PaperFigure1Config(steps=50_000, seeds=1) in figure1.configs_to_precompute()
    assert get_experiment("paper_lr_claims").default_config() == PaperLrClaimsConfig()


def _seeded_figure1(no_bn_drift: float, bn_drift: float, bn_band: float = 2.0, seeds: int = 3) -> Figure1Result:
    """Three seeds; each unit's median moves linearly by ``*_drift`` over the run (band ``bn_band`` wide for BN, 1 for no BN)."""
    from bnviz.experiments.paper_figure1 import percentile_prefix as prefix

    runs = []
    for seed in range(seeds):
        for label, drift, band in (("no BN", no_bn_drift, 1.0), ("BN", bn_drift, bn_band)):
            steps = np.arange(11) * 10
            medians = np.outer(np.linspace(0, drift * (1 + 0.05 * seed), 11), np.ones(4))  # (evaluations, units)
            values = np.stack([medians - band / 2, medians, medians + band / 2], axis=-1)
            run = _fake_run(label, np.linspace(0.1, 0.9, 11))
            run.train = run.train.replace(seed=seed)
            for mode in ("evaluation", "training"):
                run.records[f"{prefix(3, mode)}s"], run.records[f"{prefix(3, mode)}_steps"] = values, steps
            runs.append(run)
    return Figure1Result.from_seeds(runs, 2)


def test_steadier_is_judged_on_band_relative_drift_over_seeds():
    from bnviz.experiments.paper_figure1 import drift_verdict

    steady = drift_verdict(_seeded_figure1(no_bn_drift=1.0, bn_drift=0.1), 3)
    assert steady.verdict.word == "supported" and len(steady.relative["BN"]) == 3
    # BN's raw drift is twice no BN's, but its band is 4x wider: per band width it is steadier (raw numbers would say the opposite)
    scaled = drift_verdict(_seeded_figure1(no_bn_drift=1.0, bn_drift=2.0, bn_band=8.0), 3)
    assert np.all(scaled.raw["BN"] > scaled.raw["no BN"]) and scaled.verdict.word == "supported"
    # the same drift per band width in both: no support, whatever the raw scales
    same = drift_verdict(_seeded_figure1(no_bn_drift=1.0, bn_drift=2.0, bn_band=2.0), 3)
    assert same.verdict.word == "not supported"
    one_seed = drift_verdict(_seeded_figure1(no_bn_drift=1.0, bn_drift=0.1, seeds=1), 3)
    assert one_seed.verdict.label == "inconclusive at 1 seed"


def test_the_typical_unit_is_never_a_degenerate_one():
    from bnviz.experiments.paper_figure1 import representative_unit

    result = _seeded_figure1(no_bn_drift=1.0, bn_drift=0.1, seeds=1)
    for run in result.runs:  # unit 0 collapses to a flat line in both networks; unit 3 is wide
        for key in [k for k in run.records if k.endswith("s") and not k.endswith("_steps")]:
            values = run.records[key].copy()
            values[:, 0, :] = values[:, 0, 1:2]
            values[:, 3, 0] -= 5.0
            run.records[key] = values
    assert representative_unit(result, 3) in (1, 2)


def test_training_mode_percentiles_are_those_of_batch_statistics(mnist):
    """The recorder's training-mode percentiles: each batch of 60 normalised by its own statistics;
    BN's running averages untouched by the extra forward."""
    from bnviz.experiments.paper_figure1 import TrainingModePercentiles
    from bnviz.models import build_model

    model = build_model(ModelConfig(norm="batch"), seed=0)
    images = mnist.test_x[:120]
    before = [b.clone() for b in model.buffers()]
    recorder = TrainingModePercentiles(images, 60, 3)
    recorder.after_eval(0, model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
    with torch.no_grad():
        model.train()
        inputs = []
        hook = model.blocks[2].act.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
        for start in (0, 60):
            model(images[start : start + 60])
        hook.remove()
    expected = torch.quantile(torch.cat(inputs).double(), torch.tensor([0.15, 0.5, 0.85], dtype=torch.float64), dim=0).T.numpy()
    np.testing.assert_allclose(recorder.finish()[f"{percentile_prefix(3, 'training')}s"][0], expected, rtol=1e-5, atol=1e-6)


def test_the_paper_page_config_deviations_and_init_choices():
    from bnviz.experiments.paper_figure1 import SMALL_INIT_STD, deviations, init_choice

    default = PaperFigure1Config()
    assert init_choice(default) == "small" and default.init_std == SMALL_INIT_STD and default.binarise and default.seeds >= 3
    assert init_choice(default.replace(init="default")) == "default" and init_choice(default.replace(init_std=1.0)) == "normal"
    text = " ".join(deviations(default))
    assert "5,000 training steps" in text and "Binary input images" in text and "3 seeds" in text
    assert "Grey-level" in " ".join(deviations(default.replace(binarise=False)))
