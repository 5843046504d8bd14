"""Issue 14's measurements, checked against their equations and against torch:
few-sample adaptation (AdaBN, Schneider et al.'s mix), PreciseBN, and Ba et al.'s invariance table."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.bn_stats import batch_norm_layers, precise_batch_norm_statistics
from bnviz.experiments.few_sample_adaptation import adapt_statistics, mix_statistics
from bnviz.experiments.invariance_table import BA_ET_AL_TABLE_1, INVARIANCE_TOLERANCE, ROWS, ROW_NORMS, TRANSFORMS, InvarianceConfig, run as run_invariance, transformed
from bnviz.models import ModelConfig, build_model


def small_bn_model(placement: str = "after", seed: int = 0) -> nn.Module:
    model = build_model(ModelConfig(hidden=(16, 12), activation="relu", norm="batch", placement=placement), seed).double()
    # give the source statistics something other than their initial 0 and 1
    for i, layer in enumerate(batch_norm_layers(model)):
        generator = torch.Generator().manual_seed(10 + i)
        layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator, dtype=torch.float64))
        layer.running_var.copy_(torch.rand(layer.num_features, generator=generator, dtype=torch.float64) + 0.5)
    return model.eval()


def images(count: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------ few-sample adaptation
def test_mix_is_the_weighted_average_of_means_and_of_variances():
    generator = torch.Generator().manual_seed(0)
    source_mean, target_mean = torch.randn(5, generator=generator), torch.randn(5, generator=generator)
    source_var, target_var = torch.rand(5, generator=generator) + 0.1, torch.rand(5, generator=generator) + 0.1
    for prior, n in ((16, 1), (16, 64), (3, 7), (0, 5), (1000, 1)):
        mean, var = mix_statistics(source_mean, source_var, target_mean, target_var, n, prior)
        w = prior / (prior + n)
        # Schneider et al. mix the variances themselves (not the second moments)
        torch.testing.assert_close(mean, w * source_mean + (1 - w) * target_mean)
        torch.testing.assert_close(var, w * source_var + (1 - w) * target_var)
    mean, var = mix_statistics(source_mean, source_var, target_mean, target_var, 5, 0)
    torch.testing.assert_close(mean, target_mean)  # N = 0: pure target
    torch.testing.assert_close(var, target_var)


def test_adabn_on_all_target_images_equals_torch_batch_statistics():
    """N = 0 on all n images: each layer's statistics are the train-mode batch statistics of those
    images, earlier layers normalised with theirs (torch BatchNorm, momentum 1, stores exactly those;
    its running_var is the unbiased variance, ours the biased one BN divides by)."""
    model, x = small_bn_model(), images(64)
    adapted = copy.deepcopy(model)
    adapt_statistics(adapted, x, prior_strength=0)
    reference = copy.deepcopy(model)
    for layer in batch_norm_layers(reference):
        layer.momentum = 1.0
    reference.train()
    with torch.no_grad():
        train_logits = reference(x)
    n = len(x)
    for ours, torch_layer in zip(batch_norm_layers(adapted), batch_norm_layers(reference)):
        torch.testing.assert_close(ours.running_mean, torch_layer.running_mean)
        torch.testing.assert_close(ours.running_var, torch_layer.running_var * (n - 1) / n)
    # and so the adapted model in eval mode reproduces train mode on those images
    with torch.no_grad():
        torch.testing.assert_close(adapted.eval()(x), train_logits)


def test_mixed_statistics_follow_the_formula_layer_by_layer():
    model, x, prior = small_bn_model(), images(8), 16
    source = [(layer.running_mean.clone(), layer.running_var.clone()) for layer in batch_norm_layers(model)]
    adapted = copy.deepcopy(model)
    targets = adapt_statistics(adapted, x, prior_strength=prior)
    w = prior / (prior + len(x))
    # layer 1's input does not depend on the mix: its target statistics are those of W x + b, computed directly
    block = model.blocks[0]
    with torch.no_grad():
        first_input = block.act(block.linear(x.flatten(1)))  # BN after the ReLU
    torch.testing.assert_close(targets[0][0], first_input.mean(dim=0))
    torch.testing.assert_close(targets[0][1], first_input.var(dim=0, unbiased=False))
    for layer, (source_mean, source_var), (target_mean, target_var) in zip(batch_norm_layers(adapted), source, targets):
        torch.testing.assert_close(layer.running_mean, w * source_mean + (1 - w) * target_mean)
        torch.testing.assert_close(layer.running_var, w * source_var + (1 - w) * target_var)
    # layer 2's target statistics are those of its input through the *adapted* layer 1
    with torch.no_grad():
        second_input = model.blocks[1].act(model.blocks[1].linear(adapted.blocks[0].norm(first_input)))
    torch.testing.assert_close(targets[1][0], second_input.mean(dim=0))
    torch.testing.assert_close(targets[1][1], second_input.var(dim=0, unbiased=False))


def test_one_target_image_has_zero_variance_and_the_prior_keeps_the_source_share():
    model, x = small_bn_model(), images(1)
    source_var = batch_norm_layers(model)[0].running_var.clone()
    adabn = copy.deepcopy(model)
    targets = adapt_statistics(adabn, x, prior_strength=0)
    assert torch.all(targets[0][1] == 0) and torch.all(batch_norm_layers(adabn)[0].running_var == 0)
    with torch.no_grad():
        assert torch.isfinite(adabn(images(10, seed=3))).all()  # eps keeps it finite: amplification 1/sqrt(eps)
    mixed = copy.deepcopy(model)
    adapt_statistics(mixed, x, prior_strength=16)
    torch.testing.assert_close(batch_norm_layers(mixed)[0].running_var, 16 / 17 * source_var)


# ------------------------------------------------------------------ PreciseBN
def captured_inputs(model, x, batch_size, num_batches, seed, pooled):
    """Run precise_batch_norm_statistics while a hook keeps every BN layer's inputs, batch by batch."""
    seen = {i: [] for i in range(len(batch_norm_layers(model)))}
    handles = [layer.register_forward_hook(lambda m, inputs, out, i=i: seen[i].append(inputs[0].detach().clone()))
               for i, layer in enumerate(batch_norm_layers(model))]
    try:
        estimates = precise_batch_norm_statistics(model, x, batch_size, num_batches, seed, pooled_variance=pooled)
    finally:
        for handle in handles:
            handle.remove()
    return estimates, seen


@pytest.mark.parametrize("placement", ["before", "after"])
def test_precise_statistics_are_the_exact_moments_of_the_bn_inputs(placement):
    model = build_model(ModelConfig(hidden=(16, 12, 8), activation="sigmoid" if placement == "before" else "relu", norm="batch", placement=placement), 0).double()
    x, batch_size, num_batches = images(500), 20, 12  # N = 240 of the 500 images
    estimates, seen = captured_inputs(model, x, batch_size, num_batches, seed=3, pooled=True)
    for estimate, batches in zip(estimates, seen.values()):
        assert len(batches) == num_batches
        values = torch.cat(batches)  # all N = K m inputs the layer saw
        torch.testing.assert_close(estimate.mean, values.mean(dim=0))
        torch.testing.assert_close(estimate.var, values.var(dim=0, unbiased=False))
    # Algorithm 2 (the default): the same mean; variance m/(m-1) times the average batch variance
    algorithm2, seen2 = captured_inputs(model, x, batch_size, num_batches, seed=3, pooled=False)
    for estimate, batches in zip(algorithm2, seen2.values()):
        torch.testing.assert_close(estimate.mean, torch.cat(batches).mean(dim=0))
        within = torch.stack([b.var(dim=0, unbiased=False) for b in batches]).mean(dim=0)
        torch.testing.assert_close(estimate.var, within * batch_size / (batch_size - 1))


def test_precise_bn_inputs_come_from_earlier_layers_in_train_mode():
    """The weights are frozen, and each layer's input is what the network computes with the earlier
    BN layers normalising with their own batch statistics (PreciseBN's forward pass, in train mode)."""
    model = build_model(ModelConfig(hidden=(16, 12), activation="sigmoid", norm="batch"), 0).double()
    state = copy.deepcopy(model.state_dict())
    _, seen = captured_inputs(model, images(200), 25, 4, seed=1, pooled=True)
    first, second = model.blocks[0], model.blocks[1]
    for layer1_input, layer2_input in zip(seen[0], seen[1]):
        normalised = (layer1_input - layer1_input.mean(0)) / torch.sqrt(layer1_input.var(0, unbiased=False) + first.norm.eps)
        with torch.no_grad():
            expected = second.linear(first.act(normalised * first.norm.weight + first.norm.bias))
        torch.testing.assert_close(layer2_input, expected)
    for key, value in model.state_dict().items():  # the model is left exactly as it was
        torch.testing.assert_close(value, state[key])


# ------------------------------------------------------------------ invariance table
def direct_output(row: str, weight: np.ndarray, bias: np.ndarray, x: np.ndarray, gamma, beta, eps: float, reference_input: np.ndarray) -> np.ndarray:
    """The norm layer's output written out in numpy, float64: BN over the batch axis, LN over the units."""
    z = x @ weight.T + bias
    if row == "no norm":
        return z
    if row == "LayerNorm":
        return (z - z.mean(axis=1, keepdims=True)) / np.sqrt(z.var(axis=1, keepdims=True) + eps) * gamma + beta
    if row == "RMSNorm":  # no mean subtracted, no beta
        return z / np.sqrt((z**2).mean(axis=1, keepdims=True) + eps) * gamma
    if row == "BN, train mode":
        return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + eps) * gamma + beta
    # eval mode: the statistics of the untransformed batch's inputs, fixed
    return (z - reference_input.mean(axis=0)) / np.sqrt(reference_input.var(axis=0) + eps) * gamma + beta


@pytest.mark.parametrize("changes", [{}, {"linear_bias": True}, {"eps": 1e-3, "delta": 0.5}])
def test_every_cell_of_the_invariance_table_matches_a_direct_computation(changes):
    config = InvarianceConfig(batch=64, **changes)
    result = run_invariance(config)
    from bnviz.data import load_mnist

    x = load_mnist("cpu").test_x[: config.batch].flatten(1).double()
    for row in ROWS:
        model = build_model(config.model_config(ROW_NORMS[row]), config.seed).double()
        linear, norm = model.blocks[0].linear, model.blocks[0].norm
        weight = linear.weight.detach()
        bias = linear.bias.detach().numpy() if config.linear_bias else np.zeros(weight.shape[0])
        gamma = norm.weight.detach().numpy() if row != "no norm" else None
        beta = norm.bias.detach().numpy() if row != "no norm" and norm.bias is not None else None
        reference_input = x.numpy() @ weight.numpy().T + bias
        before = direct_output(row, weight.numpy(), bias, x.numpy(), gamma, beta, config.eps, reference_input)
        for transform in TRANSFORMS:
            new_weight, new_x = transformed(transform, weight, x, config)
            after = direct_output(row, new_weight.numpy(), bias, new_x.numpy(), gamma, beta, config.eps, reference_input)
            relative = np.abs(after - before).max() / np.abs(before).max()
            cell = result.cell(row, transform)
            assert cell["relative_diff"] == pytest.approx(relative, rel=1e-6, abs=1e-13), (row, transform)
            assert cell["invariant"] == (relative < INVARIANCE_TOLERANCE), (row, transform)


def test_the_default_table_agrees_with_ba_et_al_and_the_bias_breaks_layernorm():
    result = run_invariance(InvarianceConfig(batch=64))
    assert result.agreement() == (12, 12)
    for t, transform in enumerate(TRANSFORMS):
        assert not result.cell("no norm", transform)["invariant"]
        assert not result.cell("BN, eval mode", transform)["invariant"]  # fixed statistics: nothing cancels
        assert result.cell("LayerNorm", transform)["invariant"] == BA_ET_AL_TABLE_1["LayerNorm"][t]
        # RMSNorm: LayerNorm's row but for weight matrix re-centering (it subtracts no mean)
        assert result.cell("RMSNorm", transform)["invariant"] == (BA_ET_AL_TABLE_1["LayerNorm"][t] and transform != "weight matrix re-centering")
    with_bias = run_invariance(InvarianceConfig(batch=64, linear_bias=True))
    broken = {c["transform"] for c in with_bias.cells if c["row"] == "LayerNorm" and c["claimed"] != c["invariant"]}
    assert broken == {"weight matrix re-scaling", "dataset re-scaling", "single training case re-scaling"}
    assert all(with_bias.cell("BN, train mode", t)["invariant"] == c for t, c in zip(TRANSFORMS, BA_ET_AL_TABLE_1["BN, train mode"]))
