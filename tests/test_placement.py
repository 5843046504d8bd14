"""The placement experiment: verdict logic, paired starts, per-cell caching, and the nonlinearity recorder."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.cache import ResultStore
from bnviz.errors import BnvizError
from bnviz.experiments.placement import LABELS, T_CRITICAL_95, CellConfig, PlacementConfig, paired_difference, run, verdict
from bnviz.models import build_model
from bnviz.recorders import NonlinearityInputs
from bnviz.train import Run, TrainConfig, evaluate, train_together
from bnviz.unit_stats import FLAT_SLOPE_FRACTION, steepest_slope

TINY = PlacementConfig(depth=1, width=16, lrs=(0.1,), seeds=2, steps=20, eval_every=10, eval_examples=200)


# ----------------------------------------------------------------------------- verdict (pure)
def test_paired_difference_matches_the_t_interval_by_hand():
    diff = paired_difference("BN after", [0.93, 0.94, 0.95], "BN before", [0.92, 0.92, 0.92])
    d = np.array([0.01, 0.02, 0.03])
    assert diff.better == "BN after" and diff.worse == "BN before" and diff.seeds == 3
    assert diff.mean == pytest.approx(d.mean())
    assert diff.half_width == pytest.approx(4.303 * d.std(ddof=1) / math.sqrt(3))
    assert not diff.significant  # 0.02 < 4.303 * 0.01 / sqrt(3) = 0.0248: three seeds are not enough here
    assert paired_difference("a", [0.93, 0.94, 0.95, 0.94], "b", [0.92] * 4).significant  # four are
    # the label order does not change the answer, only who is "better"
    swapped = paired_difference("BN before", [0.92, 0.92, 0.92], "BN after", [0.93, 0.94, 0.95])
    assert (swapped.better, swapped.mean, swapped.half_width) == (diff.better, pytest.approx(diff.mean), pytest.approx(diff.half_width))


def test_t_critical_values_against_closed_forms_and_the_density():
    p = 0.975
    assert T_CRITICAL_95[1] == pytest.approx(math.tan(math.pi * (p - 0.5)), abs=1e-3)  # Cauchy
    assert T_CRITICAL_95[2] == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), abs=1e-3)
    for df, t in T_CRITICAL_95.items():
        x = np.linspace(-t, t, 200_001)
        log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        density = np.exp(log_c) * (1 + x**2 / df) ** (-(df + 1) / 2)
        assert np.trapezoid(density, x) == pytest.approx(0.95, abs=2e-4), df


def test_verdict_names_a_clear_winner():
    rng = np.random.default_rng(0)
    base = 0.90 + rng.normal(0, 0.01, size=5)  # seeds differ a lot...
    accuracy = {
        "no BN": base - 0.05,
        "BN before": base,
        "BN after": base + 0.02 + rng.normal(0, 0.001, size=5),  # ...but BN after is ahead on every one
    }
    result = verdict(accuracy)
    assert result.winner == "BN after"
    assert result.placement.significant and result.placement.mean == pytest.approx(0.02, abs=0.002)
    assert result.text.startswith("**BN after** wins: it beats BN before by **2.0 points** (supported: the mean difference paired over 5 seeds is +2.0 points")
    assert "above the 0.5 points margin" in result.text
    assert "BN before beats no BN by 5.0 points" in result.text and "BN after beats no BN by 7.0 points" in result.text


def test_verdict_calls_a_gap_within_the_noise_a_tie():
    accuracy = {
        "no BN": np.array([0.90, 0.91, 0.89]),
        "BN before": np.array([0.930, 0.950, 0.940]),
        "BN after": np.array([0.945, 0.935, 0.946]),  # ahead on two seeds, behind on one
    }
    result = verdict(accuracy)
    assert result.winner is None and not result.placement.significant
    assert result.placement.better == "BN after" and result.placement.mean == pytest.approx(0.002)
    assert result.judged.word == "inconclusive" and result.text.startswith("**Inconclusive at 3 seeds**: BN after leads by 0.2 points")
    assert "wider than the gap" in result.text


def test_a_significant_gap_inside_the_margin_is_no_win():
    """Every seed agrees (the interval excludes 0) but the gap is 0.1 points: within the margin."""
    accuracy = {"no BN": np.array([0.90, 0.91, 0.89]), "BN before": np.array([0.940, 0.950, 0.945]), "BN after": np.array([0.941, 0.951, 0.946])}
    result = verdict(accuracy)
    assert result.placement.significant and result.winner is None and result.judged.word == "not supported"
    assert result.text.startswith("**No difference beyond the 0.5-point margin**")


def test_verdict_reports_identical_scores_and_divergence():
    same = np.array([0.1, 0.1, 0.1])
    result = verdict({"no BN": same, "BN before": same, "BN after": same}, {"no BN": np.array([True, True, False]), "BN before": np.zeros(3, bool), "BN after": np.zeros(3, bool)})
    assert result.winner is None and result.placement.mean == 0.0
    assert "score the same on every seed" in result.text
    assert "Diverged (loss NaN or infinite) no BN in 2 of 3 seeds" in result.text
    with pytest.raises(BnvizError):
        paired_difference("a", [0.1, 0.2], "b", [0.1])


# ----------------------------------------------------------------------------- paired starts
def test_the_three_models_of_a_seed_start_from_identical_linear_layers(mnist):
    config = PlacementConfig(depth=3, width=32)
    for seed in (0, 1):
        models = [build_model(cfg, seed) for cfg in config.models().values()]
        for model in models[1:]:
            for block, reference in zip(model.blocks, models[0].blocks):
                assert torch.equal(block.linear.weight, reference.linear.weight)
                assert torch.equal(block.linear.bias, reference.linear.bias)
            assert torch.equal(model.head.weight, models[0].head.weight)
    # a different seed gives different weights (the check above is not vacuous)
    assert not torch.equal(build_model(config.models()["no BN"], 0).blocks[0].linear.weight, build_model(config.models()["no BN"], 1).blocks[0].linear.weight)
    # and the same batches: the samplers of one seed draw the same indices
    runs = [Run(model, config.train_config(0.1, 0), mnist) for model in config.models().values()]
    for _ in range(3):
        batches = [run.sampler.next_indices() for run in runs]
        assert all(torch.equal(batch, batches[0]) for batch in batches)


def test_run_checks_paired_starts_and_reuses_cells_per_seed(tmp_path):
    store = ResultStore(tmp_path)
    seen = []
    result = run(TINY, progress=lambda fraction, message, partial: seen.append((fraction, message, len(partial))), store=store)
    assert result.init_max_difference == 0.0 and result.same_batches
    assert [r.label for r in result.runs_at(0.1)] == [label for label in LABELS for _ in range(2)]
    assert seen[-1][0] == pytest.approx(1.0) and seen[-1][2] == 6  # the live chart gets every run at the rate
    assert all(0.0 <= f <= 1.0 for f, _, _ in seen)
    # one more seed trains only the new cell; the first two come from the store
    more = run(TINY.replace(seeds=3), store=store)
    for seed in range(3):
        key = CellConfig(models=tuple(TINY.models().values()), train=TINY.train_config(0.1, seed))
        assert store.computations("placement-cell", key) == 1
    np.testing.assert_array_equal(more.final_accuracy(0.1)["BN after"][:2], result.final_accuracy(0.1)["BN after"])
    assert set(more.layer_statistic(0.1, "flat_fraction")) == set(LABELS)


def test_config_rejects_too_much_work_with_a_useful_message():
    with pytest.raises(BnvizError, match="fewer seeds, learning rates or steps"):
        PlacementConfig(lrs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0), seeds=10, steps=20_000)
    with pytest.raises(BnvizError, match="2 to 10 seeds"):
        PlacementConfig(seeds=1)
    assert PlacementConfig(lrs=(1.0, 0.1, 0.3)).lr_order() == [0.3, 0.1, 1.0]


# ----------------------------------------------------------------------------- recorder
def test_steepest_slopes_of_the_activations():
    assert steepest_slope(nn.Sigmoid()) == pytest.approx(0.25, abs=1e-6)
    assert steepest_slope(nn.Tanh()) == pytest.approx(1.0, abs=1e-6)
    assert steepest_slope(nn.ReLU()) == 1.0
    assert steepest_slope(nn.GELU()) == pytest.approx(1.1289, abs=1e-3)


@pytest.mark.parametrize("activation, placement", [("sigmoid", "before"), ("relu", "after")])
def test_nonlinearity_inputs_match_a_direct_computation(mnist, activation, placement):
    config = PlacementConfig(activation=activation, depth=2, width=24)
    model_cfg = config.models()[f"BN {placement}"]
    recorder = NonlinearityInputs()
    run_ = Run(model_cfg, TrainConfig(steps=30, lr=0.3, eval_every=15, eval_examples=300), mnist, [recorder])
    records = train_together([run_])[0].records
    assert list(records["nonlinearity_step"]) == [0, 15, 30]
    # the last evaluation was at the last step: the weights have not moved since
    _, _, inputs = evaluate(run_.model, run_.eval_x, run_.eval_y, capture=True)
    for layer, x in enumerate(inputs):
        if activation == "sigmoid":
            # sigma'(x) = s(1 - s) < 0.1 * 0.25  <=>  |x| > ln(s / (1 - s)) with s = (1 + sqrt(0.9)) / 2
            s = (1 + math.sqrt(1 - 4 * FLAT_SLOPE_FRACTION * 0.25)) / 2
            flat = x.abs() > math.log(s / (1 - s))
            out = torch.sigmoid(x)  # BN before: the block's output is the activation of its input
        else:
            flat = x <= 0
            out = run_.model.blocks[layer].norm.eval()(torch.relu(x))  # BN after, in eval mode
        assert records["flat_fraction"][-1, layer] == pytest.approx(flat.float().mean().item(), abs=1e-6)
        assert records["dead_fraction"][-1, layer] == pytest.approx(flat.all(dim=0).float().mean().item())
        assert records["act_input_mean"][-1, layer] == pytest.approx(x.mean().item(), abs=1e-5)
        assert records["output_mean"][-1, layer] == pytest.approx(out.mean().item(), abs=1e-5)
    assert records["act_input_hist"].shape == (2, 64)
    np.testing.assert_allclose(records["act_input_hist"].sum(axis=1), 1.0, atol=1e-5)
