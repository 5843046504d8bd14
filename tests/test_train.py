import numpy as np
import pytest
import torch

from bnviz.models import ModelConfig, build_model
from bnviz.recorders import BatchNormStats, GradientNorms, UnitPercentiles
from bnviz.train import Run, TrainConfig, train

SMALL = TrainConfig(steps=60, batch_size=32, lr=0.1, eval_every=20, eval_examples=500)


def test_same_seed_same_losses(mnist):
    model = ModelConfig(hidden=(32, 32), norm="batch")
    first, second = train(model, SMALL, mnist), train(model, SMALL, mnist)
    assert np.array_equal(first.step_loss, second.step_loss)
    third = train(model, SMALL.replace(seed=1), mnist)
    assert not np.array_equal(first.step_loss, third.step_loss)


def test_divergence_is_a_result_not_an_exception(mnist):
    result = train(ModelConfig(hidden=(64, 64), activation="relu"), SMALL.replace(lr=50.0, steps=200), mnist)
    assert result.diverged and 1 <= result.diverged_step <= 200
    assert len(result.eval_step) >= 1


def test_bn_learns_faster_than_no_bn_with_the_papers_settings(mnist):
    # Ioffe & Szegedy 2015, Sec. 4.1: 784-100-100-100-10 sigmoid MLP, SGD, batches of 60.
    for seed in (0, 1):
        cfg = TrainConfig(steps=300, batch_size=60, lr=0.1, seed=seed, eval_every=100, eval_examples=1000)
        plain = train(ModelConfig(), cfg, mnist)
        bn = train(ModelConfig(norm="batch"), cfg, mnist)
        assert bn.final_test_acc > plain.final_test_acc + 0.05, (seed, bn.final_test_acc, plain.final_test_acc)


def test_recorders(mnist):
    percentiles, bn_stats, grads = UnitPercentiles(block=-1, units=(0, 5)), BatchNormStats(block=0, units=(0, 1)), GradientNorms(every=10)
    result = train(ModelConfig(hidden=(20, 20), norm="batch"), SMALL, mnist, recorders=[percentiles, bn_stats, grads])
    records = result.records
    assert records["unit_percentiles"].shape == (len(result.eval_step), 2, 3)
    assert np.all(np.diff(records["unit_percentiles"], axis=2) >= 0)  # 15th <= 50th <= 85th
    assert records["bn_batch_mean"].shape == (SMALL.steps, 2)
    assert records["grad_norm"].shape == (SMALL.steps // 10, 2)


def test_a_probe_runs_after_each_evaluation_without_keeping_its_activations(mnist):
    """``after_eval`` probes run their own passes; only ``on_eval`` recorders make the
    evaluation keep every block's activations (a CNN's are ~0.1 GB per run)."""
    class Probe:
        def __init__(self):
            self.steps = []

        def after_eval(self, step, model):
            self.steps.append(step)

    probe = Probe()
    run = Run(ModelConfig(arch="cnn", norm="batch"), TrainConfig(steps=20, batch_size=16, eval_every=10, eval_examples=50), mnist, recorders=[probe])
    assert not run.needs_activations
    run.advance(20)
    assert probe.steps == [0, 10, 20]
    with_percentiles = Run(ModelConfig(hidden=(8,)), TrainConfig(steps=10, batch_size=16, eval_every=10, eval_examples=50), mnist,
                           recorders=[probe, UnitPercentiles(block=0, units=(0,))])
    assert with_percentiles.needs_activations


def test_evaluating_uint8_images_gives_the_numbers_of_the_whole_float_set(mnist):
    """Evaluation reads the full uint8 test set a chunk at a time (the first chunk is the shared
    evaluation head, the others are standardised into the thread's chunk buffer, or chunks too
    large for it on their own): the same loss and accuracy as the whole set standardised at
    once, bit for bit."""
    from bnviz.train import evaluate

    model = build_model(ModelConfig(hidden=(32,), norm="batch"), 0)
    for batch_size in (2000, 3000):
        on_uint8 = evaluate(model, mnist.test_x, mnist.test_y, batch_size=batch_size)
        on_floats = evaluate(model, mnist.test_x.materialise(), mnist.test_y, batch_size=batch_size)
        assert on_uint8[:2] == on_floats[:2]


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "group"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_models_build_and_run(arch, norm):
    model = build_model(ModelConfig(arch=arch, hidden=(8, 8), norm=norm, groups=2), seed=0)
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_bn_placement_order():
    before = build_model(ModelConfig(hidden=(8,), norm="batch", placement="before"), seed=0)
    after = build_model(ModelConfig(hidden=(8,), norm="batch", placement="after"), seed=0)
    assert before.blocks[0].norm_first and not after.blocks[0].norm_first


@pytest.mark.parametrize("shape", [(2000, 100), (7, 3), (1, 4), (60, 10)])
def test_column_quantiles_equal_torch_quantile_bit_for_bit(shape):
    """The paper page's percentile recorder sorts with numpy (5x faster); the numbers are
    torch.quantile's, ties and a NaN column included."""
    from bnviz.unit_stats import column_quantiles

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))).double()
    x[:, 0] = 1.0
    if shape[1] > 2:
        x[min(3, shape[0] - 1), 2] = float("nan")
    q = torch.tensor([0.15, 0.5, 0.85], dtype=torch.float64)
    torch.testing.assert_close(column_quantiles(x, q), torch.quantile(x, q, dim=0), rtol=0, atol=0, equal_nan=True)
    # float32 activations (what the recorders pass): sorted as float32, interpolated in float64
    single = x.float()
    torch.testing.assert_close(column_quantiles(single, q), torch.quantile(single.double(), q, dim=0), rtol=0, atol=0, equal_nan=True)
