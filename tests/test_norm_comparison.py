"""BN vs LayerNorm page: the pooling sets against torch, the recurrent model, the probe, the sweeps."""
import numpy as np
import pytest
import torch
from torch import nn

from bnviz.errors import BnvizError
from bnviz.experiments import norm_axes, norm_comparison, sequence_norms
from bnviz.experiments.norm_axes import METHODS, NormAxesConfig, normalize_by_sets, statistic_sets
from bnviz.models import ModelConfig, build_model
from bnviz.probes import SingleInputConsistency
from bnviz.train import TrainConfig, train

SHAPES = {"image": (3, 8, 4, 4), "features": (5, 8), "sequence": (4, 6, 8)}
GROUPS = 4


def torch_reference(method, layout, x):
    """Torch's own layers, built here independently of bnviz (training mode, no affine)."""
    n = x.shape[0]
    if layout == "image":
        c = x.shape[1]
        layer = {"batch": nn.BatchNorm2d(c, affine=False), "layer": nn.LayerNorm(x.shape[1:], elementwise_affine=False),
                 "instance": nn.InstanceNorm2d(c), "group": nn.GroupNorm(GROUPS, c, affine=False)}[method]
        return layer.double()(x)
    if layout == "features":
        f = x.shape[1]
        layer = {"batch": nn.BatchNorm1d(f, affine=False), "layer": nn.LayerNorm(f, elementwise_affine=False),
                 "instance": nn.GroupNorm(f, f, affine=False), "group": nn.GroupNorm(GROUPS, f, affine=False)}[method]
        return layer.double()(x)
    t, f = x.shape[1], x.shape[2]
    if method == "batch":  # recurrent BN: statistics per time step
        return torch.stack([nn.BatchNorm1d(f, affine=False).double()(x[:, s]) for s in range(t)], dim=1)
    if method == "layer":
        return nn.LayerNorm(f, elementwise_affine=False).double()(x)
    if method == "group":
        return nn.GroupNorm(GROUPS, f, affine=False).double()(x.reshape(n * t, f)).reshape(x.shape)
    return nn.InstanceNorm1d(f)(x.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", list(SHAPES))
def test_highlighted_sets_normalise_exactly_as_torchs_layers(layout, method):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPES[layout], generator=generator, dtype=torch.float64) * 3 + 2
    ids = statistic_sets(method, layout, x.shape, GROUPS)
    ours = normalize_by_sets(x.numpy(), ids)
    np.testing.assert_allclose(ours, torch_reference(method, layout, x).detach().numpy(), atol=1e-7)


@pytest.mark.parametrize("layout", ["image", "features"])
def test_bn_sets_have_the_means_torch_records(layout):
    # momentum 1: the running mean is exactly this batch's per-channel mean
    x = torch.randn(SHAPES[layout], generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 5
    layer = (nn.BatchNorm2d if layout == "image" else nn.BatchNorm1d)(8, momentum=1.0).double()
    layer(x)
    ids = statistic_sets("batch", layout, x.shape, GROUPS)
    set_means = np.bincount(ids.ravel(), weights=x.numpy().ravel()) / np.bincount(ids.ravel())
    np.testing.assert_allclose(set_means, layer.running_mean.numpy(), atol=1e-12)


def test_layer_and_group_sets_have_torchs_means():
    x = torch.randn(SHAPES["image"], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for method, expected in (("layer", x.mean(dim=(1, 2, 3))), ("group", x.reshape(3, GROUPS, -1).mean(dim=2).reshape(-1)), ("instance", x.mean(dim=(2, 3)).reshape(-1))):
        ids = statistic_sets(method, "image", x.shape, GROUPS)
        set_means = np.bincount(ids.ravel(), weights=x.numpy().ravel()) / np.bincount(ids.ravel())
        np.testing.assert_allclose(set_means, expected.numpy(), atol=1e-12)


@pytest.mark.parametrize("layout", norm_axes.LAYOUTS)
def test_norm_axes_experiment(layout, mnist):
    result = norm_axes.run(NormAxesConfig(layout=layout, batch=3, groups=2))
    assert max(result.torch_max_difference.values()) < 1e-10
    # LN pools one example (at one time step, for a sequence)
    assert result.set_size("layer") == (result.values.shape[-1] if layout == "sequence" else result.values[0].size)
    for i, method in enumerate(METHODS):
        if result.set_size(method) > 1:
            assert result.pooled_mean_abs[i, i] < 1e-9
    # BN's output is not standardised per example
    assert result.pooled_mean_abs[METHODS.index("batch"), METHODS.index("layer")] > 0.01


def test_configs_reject_the_impossible():
    with pytest.raises(BnvizError):
        norm_comparison.NormComparisonConfig(norms=("instance",))
    with pytest.raises(BnvizError):
        norm_comparison.NormComparisonConfig(batch_sizes=(1, 8))
    with pytest.raises(BnvizError):
        NormAxesConfig(groups=3)


# ------------------------------------------------------------------ the RNN
def test_rnn_reads_any_number_of_rows_and_per_step_bn_reuses_the_last_steps_statistics():
    model = build_model(ModelConfig(arch="rnn", hidden=(16,), activation="tanh", norm="batch"), seed=0)
    assert len(model.blocks[0].norm.layers) == 28
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    model.eval()
    assert model(torch.randn(5, 1, 40, 28)).shape == (5, 10)
    norm = model.blocks[0].norm
    x = torch.randn(4, 16)
    assert torch.equal(norm(x, 40), norm.layers[27](x))


def test_rnn_matches_a_hand_written_recurrence():
    cfg = ModelConfig(arch="rnn", hidden=(12,), activation="tanh", norm="layer")
    model = build_model(cfg, seed=3)
    images = torch.randn(2, 1, 28, 28)
    block = model.blocks[0]
    h = torch.zeros(2, 12)
    for t in range(28):
        h = torch.tanh(nn.functional.layer_norm(block.linear(images[:, 0, t]) + block.recurrent(h), (12,), block.norm.layers[0].weight, block.norm.layers[0].bias))
    torch.testing.assert_close(model(images), model.head(h))


def test_rnn_trains_with_the_one_trainer(mnist):
    result = train(ModelConfig(arch="rnn", hidden=(16,), activation="tanh", norm="layer"), TrainConfig(steps=30, batch_size=32, lr=0.01, optimizer="adam", eval_every=15, eval_examples=200), mnist)
    assert not result.diverged and np.all(np.isfinite(result.step_loss))
    assert result.step_loss[-5:].mean() < result.step_loss[:5].mean()


# ------------------------------------------------------------------ the probe
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_single_input_probe(norm, mnist):
    model = build_model(ModelConfig(hidden=(16,), norm=norm), seed=0)
    x, y = mnist.test_x, mnist.test_y
    probe = SingleInputConsistency(x[:1], x[1:8], x[8:15], x[:64], y[:64])
    running_before = model.blocks[0].norm.running_mean.clone() if norm == "batch" else None
    probe.after_eval(0, model)
    records = probe.finish()
    summary = norm_comparison.consistency_summary(records)
    assert summary["alone_vs_batch"] < 1e-4  # eval mode: never depends on batch-mates
    if norm == "batch":
        assert torch.equal(model.blocks[0].norm.running_mean, running_before)  # probed on a copy
        assert "more than 1 value per channel" in summary["train_alone_error"]
        assert summary["batch_dependence"] > 1e-3 and summary["train_eval_gap"] > 1e-3
    else:
        assert summary["train_alone_error"] == ""
        assert max(summary["batch_dependence"], summary["train_eval_gap"], summary["train_alone_vs_eval"]) < 1e-4
        assert summary["mode_accuracy"][0] == summary["mode_accuracy"][1]


# ------------------------------------------------------------------ the experiments
def test_small_sweep_summary_is_computed_from_the_runs(mnist):
    config = norm_comparison.NormComparisonConfig(norms=("none", "batch", "layer"), batch_sizes=(2, 16), steps=10, seeds=1)
    seen = []
    result = norm_comparison.run(config, progress=lambda fraction, message, partial: seen.append(fraction))
    assert seen[-1] == 1.0 and len(seen) > 6
    assert result.accuracy("batch").shape == (2, 1)
    rows = {row["norm"]: row for row in result.summary_rows()}
    assert rows["BN"]["one example alone, train mode"] == "refused by torch"
    assert rows["LayerNorm"]["one example alone, train mode"].startswith("yes")
    assert rows["LayerNorm"]["train − eval accuracy, batch 2"] == 0.0
    assert rows["BN"]["test accuracy, batch 16"] == result.runs[("batch", 16, 0)].final_test_acc


def test_blank_rows():
    x = torch.zeros(2, 1, 28, 28)
    padded = sequence_norms.with_blank_rows(x, 5, "before")
    assert padded.shape == (2, 1, 33, 28)
    assert torch.all(padded[:, :, :5] == sequence_norms.BLANK_PIXEL) and torch.all(padded[:, :, 5:] == 0)
    assert torch.all(sequence_norms.with_blank_rows(x, 5, "after")[:, :, 28:] == sequence_norms.BLANK_PIXEL)


def test_small_sequence_experiment(mnist):
    config = sequence_norms.SequenceNormsConfig(hidden=16, steps=10, eval_every=5, extra_rows=(0, 4))
    result = sequence_norms.run(config)
    assert [run.label for run in result.runs] == ["no BN", "LayerNorm", "BN"]
    assert result.padded_accuracy.shape == (3, 2, 2)
    # no extra rows: both placements read the same digits
    np.testing.assert_array_equal(result.padded_accuracy[:, 0, 0], result.padded_accuracy[:, 1, 0])
    np.testing.assert_allclose(result.padded_accuracy[:, 0, 0], [run.test_acc[-1] for run in result.runs])
    assert "more than 1 value per channel" in result.consistency("BN")["train_alone_error"]
    assert result.consistency("LayerNorm")["train_alone_error"] == ""
