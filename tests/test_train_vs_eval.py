"""Train vs eval statistics: running estimates against torch, exact population statistics,
Algorithm 2 recalibration, batch-mates, and the two experiments end to end (small configs)."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.bn_stats import (
    data_moments,
    forward_independent_batches,
    linear_output_moments,
    precise_batch_norm_statistics,
    recalibrate_batch_norm,
)
from bnviz.data import load_mnist
from bnviz.errors import BnvizError
from bnviz.experiments import batch_noise_regularization, train_vs_eval
from bnviz.experiments.train_vs_eval import TrainVsEvalConfig, probe_batch_mates, train_mode_accuracy
from bnviz.models import ModelConfig, build_model
from bnviz.recorders import BatchNormStats, FirstLayerPopulationStats, ShadowRunningStats
from bnviz.train import Run, TrainConfig, configure_torch_threads

configure_torch_threads()
WIDTH = 16


@pytest.fixture(scope="module")
def data():
    return load_mnist("cpu")


class TorchReference:
    """Feeds block 0's BN input, every training step, to fresh torch.nn.BatchNorm1d layers."""

    def __init__(self, momenta):
        self.layers = {m: nn.BatchNorm1d(WIDTH, momentum=m).double() for m in momenta}
        self.buffers = {m: [] for m in momenta}

    def attach(self, model):
        model.blocks[0].norm.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if module.training:
            for momentum, layer in self.layers.items():
                layer(inputs[0].detach().double())
                self.buffers[momentum].append((layer.running_mean.numpy().copy(), layer.running_var.numpy().copy()))


def test_running_estimates_match_torch_batchnorm1d_step_by_step(data):
    units = tuple(range(WIDTH))
    reference = TorchReference([0.1, None])
    recorders = [
        BatchNormStats(block=0, units=units),
        ShadowRunningStats(block=0, units=units, momentum=0.1, prefix="ema"),
        ShadowRunningStats(block=0, units=units, momentum=None, prefix="cumulative"),
        reference,
    ]
    run = Run(ModelConfig(hidden=(WIDTH,), norm="batch", bn_momentum=0.1), TrainConfig(steps=40, batch_size=8, lr=0.5, eval_every=20, eval_examples=10), data, recorders)
    run.advance(40)
    records = run.result().records
    torch_ema = np.stack([mean for mean, _ in reference.buffers[0.1]]), np.stack([var for _, var in reference.buffers[0.1]])
    torch_cumulative = np.stack([mean for mean, _ in reference.buffers[None]]), np.stack([var for _, var in reference.buffers[None]])
    assert records["ema_mean"].shape == (40, WIDTH)
    np.testing.assert_allclose(records["ema_mean"], torch_ema[0], atol=1e-10)
    np.testing.assert_allclose(records["ema_var"], torch_ema[1], atol=1e-10)
    np.testing.assert_allclose(records["cumulative_mean"], torch_cumulative[0], atol=1e-10)
    np.testing.assert_allclose(records["cumulative_var"], torch_cumulative[1], atol=1e-10)
    # the model's own float32 buffers, read by BatchNormStats after each step, follow the same update
    np.testing.assert_allclose(records["bn_running_mean"], torch_ema[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(records["bn_running_var"], torch_ema[1], rtol=1e-4, atol=1e-5)
    # the cumulative average differs from the EMA (else the page would show one curve twice)
    assert np.abs(records["cumulative_mean"] - records["ema_mean"]).max() > 1e-3


def test_first_layer_population_statistics_are_exact(data):
    x = data.train_x[:500]
    model = build_model(ModelConfig(hidden=(WIDTH,), norm="batch"), seed=3)
    mean, var = linear_output_moments(model.blocks[0].linear.weight, model.blocks[0].linear.bias, data_moments(x))
    with torch.no_grad():
        z = model.blocks[0].linear(x.flatten(1)).double()
    np.testing.assert_allclose(mean.numpy(), z.mean(dim=0).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var.numpy(), z.var(dim=0, unbiased=False).numpy(), rtol=1e-4, atol=1e-5)
    # and the recorder reads the weights of the step (before the update)
    recorder = FirstLayerPopulationStats(data_moments(x), units=(0, 5))
    recorder.attach(model)
    recorder.after_backward(1, model)
    np.testing.assert_allclose(recorder.finish()["bn_population_mean"][0], mean.numpy()[[0, 5]])


def _set_momentum(model, momentum):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.momentum = momentum


def test_precise_bn_with_one_full_batch_equals_torch_batch_statistics(data):
    """One batch holding all of x: Algorithm 2 gives that batch's mean and unbiased variance, in every layer,
    which torch's buffers also hold after one train-mode forward with momentum 1."""
    x = data.train_x[:300]
    model = build_model(ModelConfig(hidden=(WIDTH, WIDTH), norm="batch"), seed=1)
    for layer in model.norm_layers():  # "computed, not copied": garbage buffers must not matter
        layer.running_mean.fill_(7.0)
        layer.running_var.fill_(9.0)
    estimates = precise_batch_norm_statistics(model, x, batch_size=300, num_batches=1)
    assert all(float(layer.running_mean[0]) == 7.0 for layer in model.norm_layers())  # model left as it was
    reference = copy.deepcopy(model)
    _set_momentum(reference, 1.0)
    reference.train()
    with torch.no_grad():
        reference(x)
    for estimate, layer in zip(estimates, reference.norm_layers()):
        assert estimate.values_per_channel == 300
        np.testing.assert_allclose(estimate.mean.numpy(), layer.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(estimate.var.numpy(), layer.running_var.numpy(), rtol=1e-4, atol=1e-6)


def test_recalibration_averages_batch_statistics_with_the_unbiased_correction(data):
    x = data.train_x[:240]
    model = build_model(ModelConfig(hidden=(WIDTH,), norm="batch"), seed=2)
    # 4 batches of 60 partition x (one permutation): the mean of their means is x's mean exactly
    estimates = recalibrate_batch_norm(model, x, batch_size=60, num_batches=4, seed=5)
    with torch.no_grad():
        z = model.blocks[0].linear(x.flatten(1)).double()
    np.testing.assert_allclose(estimates[0].mean.numpy(), z.mean(dim=0).numpy(), rtol=1e-5, atol=1e-6)
    # the variance: m/(m-1) times the mean of the 4 biased batch variances, recomputed here by hand
    order = torch.randperm(240, generator=torch.Generator().manual_seed(5))
    biased = torch.stack([z[order[i * 60 : (i + 1) * 60]].var(dim=0, unbiased=False) for i in range(4)]).mean(dim=0)
    np.testing.assert_allclose(estimates[0].var.numpy(), (biased * 60 / 59).numpy(), rtol=1e-5)
    np.testing.assert_allclose(model.norm_layers()[0].running_var.numpy(), estimates[0].var.numpy(), rtol=1e-6)
    with pytest.raises(BnvizError):
        precise_batch_norm_statistics(model, x, batch_size=1)


def test_independent_batches_match_a_loop_of_forward_calls(data):
    model = build_model(ModelConfig(hidden=(WIDTH, WIDTH), norm="batch"), seed=4)
    model.norm_layers()[0].running_mean.fill_(0.3)
    batches = data.test_x[:48].reshape(6, 8, 1, 28, 28)
    for train_mode in (True, False):
        loop_model = copy.deepcopy(model).train(train_mode)
        with torch.no_grad():
            expected = torch.stack([loop_model(batch) for batch in batches])
        np.testing.assert_allclose(forward_independent_batches(model, batches, train_mode).numpy(), expected.numpy(), atol=1e-5)
    assert float(model.norm_layers()[0].running_mean[0]) == pytest.approx(0.3)  # untouched


@pytest.fixture(scope="module")
def small_result():
    config = TrainVsEvalConfig(hidden=(32, 32), steps=60, eval_every=30, probe_batch_sizes=(2, 16, 128), probe_batches=30,
                               train_mode_batch_sizes=(2, 128), recalibration_batches=20)
    return train_vs_eval.run(config)


def test_batch_mates_eval_spread_is_exactly_zero_and_train_spread_shrinks(small_result):
    assert np.all(small_result.eval_mode_spread == 0.0)
    spread = small_result.train_mode_spread
    assert spread[0] > spread[-1] > 0
    assert small_result.alone_train_error and "more than 1 value per channel" in small_result.alone_train_error
    assert np.isclose(small_result.alone_eval_probs.sum(), 1.0)
    # eval mode alone and inside a batch: the same prediction
    assert np.allclose(small_result.eval_mode_probs[0, 0], small_result.alone_eval_probs, atol=1e-5)


def test_accuracy_three_ways_and_gaps_are_computed(small_result):
    rows = train_vs_eval.accuracy_three_ways(small_result)
    assert [way for way, _ in rows][0].startswith("eval mode") and rows[-1][0].startswith("recalibrated")
    assert all(0.0 < accuracy <= 1.0 for _, accuracy in rows)
    assert small_result.train_mode_accuracy[0] < small_result.train_mode_accuracy[-1]  # batches of 2 hurt
    assert set(small_result.mean_gap) == {"running (EMA)", "cumulative average", "recalibrated"}
    assert all(np.isfinite(v) and v >= 0 for v in small_result.mean_gap.values())
    records = small_result.run.records
    assert records["bn_population_mean"].shape == records["bn_running_mean"].shape == (60, 3)
    errors = train_vs_eval.estimate_errors(small_result, 0)
    assert set(errors) == {"running (EMA)", "cumulative average"}


def test_train_mode_accuracy_equals_a_loop_over_batches(data):
    model = build_model(ModelConfig(hidden=(WIDTH,), norm="batch"), seed=0)
    x, y = data.test_x[:103], data.test_y[:103]
    accuracy = train_mode_accuracy(model, x, y, batch_size=10, seed=1)
    order = torch.randperm(103, generator=torch.Generator().manual_seed(1))
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        correct = sum((probe(x[order[i : i + 10]]).argmax(1) == y[order[i : i + 10]]).sum().item() for i in range(0, 100, 10))
        correct += (probe(x[order[100:]]).argmax(1) == y[order[100:]]).sum().item()  # the remainder of 3
    assert accuracy == pytest.approx(correct / 103)


def test_probe_batch_mates_leaves_the_model_unchanged(data):
    model = build_model(ModelConfig(hidden=(WIDTH,), norm="batch"), seed=0)
    before = model.norm_layers()[0].running_mean.clone()
    train_probs, eval_probs = probe_batch_mates(model, data.test_x[:200], 5, (2, 8), 4, seed=0)
    assert train_probs.shape == eval_probs.shape == (2, 4, 10)
    assert torch.equal(before, model.norm_layers()[0].running_mean)


def test_configs_reject_what_train_mode_cannot_do():
    with pytest.raises(BnvizError):
        TrainVsEvalConfig(batch_size=1)
    with pytest.raises(BnvizError):
        TrainVsEvalConfig(units=(100,))
    with pytest.raises(BnvizError):
        batch_noise_regularization.RegularizationConfig(batch_sizes=(1, 8))


def test_regularization_experiment_rows_and_bn_effect():
    config = batch_noise_regularization.RegularizationConfig(hidden=(32,), batch_sizes=(8, 64), train_examples=200, steps=40, num_seeds=2)
    result = batch_noise_regularization.run(config)
    table = result.table
    assert len(table) == 2 * 2 * 2 and set(table["model"]) == {"BN", "no BN"}
    assert np.allclose(table["gap"], table["train_acc"] - table["test_acc"])
    effect = result.bn_effect()
    assert len(effect) == 4 and effect["bn_effect"].notna().all()


def _lag_result(low_lags, high_lags):
    from bnviz.experiments.precise_bn import PreciseBNConfig, PreciseBNResult

    lags = np.array([low_lags, high_lags], dtype=float)
    return PreciseBNResult(config=PreciseBNConfig(seeds=lags.shape[1]), runs=[], samples_used=np.array([600]), ema_accuracy=np.zeros(2),
                           precise_accuracy=lags[:, -1:, None] * np.ones((2, 1, 1)), stat_gap=[], seed_lags=lags)


def test_the_ema_lag_verdict_needs_a_margin_over_seeds():
    """Wu & Johnson's 'the EMA lags more at a high learning rate': a 0.1-point gap is no support;
    a 2-point gap on every seed is; one seed is inconclusive whatever the gap."""
    from bnviz.experiments.precise_bn import lag_verdict

    assert lag_verdict(_lag_result([0.001, 0.002, 0.0015], [0.021, 0.022, 0.0205])).word == "supported"
    tiny = lag_verdict(_lag_result([0.001, 0.002, 0.0015], [0.002, 0.003, 0.0025]))  # +0.1 points on every seed
    assert tiny.word == "not supported" and "0.25 points margin" in tiny.rule
    assert lag_verdict(_lag_result([0.001], [0.05])).label == "inconclusive at 1 seed"


def test_the_batch_size_trend_of_bns_regularisation_needs_a_margin_over_seeds():
    from bnviz.experiments.batch_noise_regularization import RegularizationConfig, RegularizationResult, trend_verdict

    def result(effect_small, effect_large):
        rows = []
        for seed, (small, large) in enumerate(zip(effect_small, effect_large)):
            for size, effect in ((8, small), (128, large)):
                rows += [{"model": "no BN", "batch_size": size, "seed": seed, "gap": 0.10 + effect}, {"model": "BN", "batch_size": size, "seed": seed, "gap": 0.10}]
        return RegularizationResult(config=RegularizationConfig(batch_sizes=(8, 128), num_seeds=len(effect_small)), rows=rows, diverged=[])

    assert trend_verdict(result([0.05, 0.06, 0.055], [0.01, 0.012, 0.011])).word == "supported"
    flat = trend_verdict(result([0.020, 0.021, 0.0205], [0.020, 0.020, 0.020]))  # +0.05 points: inside the margin
    assert flat.word == "not supported" and not flat.reversed
    assert trend_verdict(result([0.05], [0.01])).label == "inconclusive at 1 seed"
