"""Batch Renorm and ghost BN against torch and against their papers' equations; the two experiments."""
import numpy as np
import pytest
import torch
from torch import nn

from bnviz.errors import BnvizError
from bnviz.experiments import bessel_mismatch, small_batches
from bnviz.experiments.bessel_mismatch import BesselConfig, closed_form_ratio
from bnviz.experiments.small_batches import SmallBatchesConfig
from bnviz.models import ModelConfig, build_model, model_label
from bnviz.renorm import BatchRenorm1d, BatchRenorm2d, GhostBatchNorm1d, ghost_batch_sizes, renorm_limits

TOL = 1e-6


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 + 0.5


def forward_backward(layer, x, grad_y):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(grad_y)
    return y.detach(), x.grad, layer.weight.grad, layer.bias.grad


def with_affine(layer, seed=5):
    with torch.no_grad():
        layer.weight.copy_(randn(layer.num_features, seed=seed))
        layer.bias.copy_(randn(layer.num_features, seed=seed + 1))
    return layer


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_renorm_with_r_max_1_and_d_max_0_is_torchs_batch_norm(momentum):
    ours = with_affine(BatchRenorm1d(6, r_max=1.0, d_max=0.0, warmup_steps=0, momentum=momentum).double())
    torch_bn = with_affine(nn.BatchNorm1d(6, momentum=momentum).double())
    for step in range(3):  # several steps: running statistics move, r and d would matter if not clipped to (1, 0)
        x, grad_y = randn(8, 6, seed=step), randn(8, 6, seed=10 + step)
        for ours_value, torch_value in zip(forward_backward(ours, x, grad_y), forward_backward(torch_bn, x, grad_y)):
            torch.testing.assert_close(ours_value, torch_value, atol=TOL, rtol=0)
        torch.testing.assert_close(ours.running_mean, torch_bn.running_mean, atol=TOL, rtol=0)
        torch.testing.assert_close(ours.running_var, torch_bn.running_var, atol=TOL, rtol=0)
        ours.weight.grad = ours.bias.grad = torch_bn.weight.grad = torch_bn.bias.grad = None
    ours.eval(), torch_bn.eval()
    x = randn(5, 6, seed=99)
    torch.testing.assert_close(ours(x), torch_bn(x), atol=TOL, rtol=0)
    assert int(ours.num_batches_tracked) == 3


def test_batch_renorm_unclipped_matches_the_papers_algorithm_1_forward_and_backward():
    """Algorithm 1 and the paper's gradient formulas (Sec. 3), written out here in numpy."""
    eps = 1e-5
    layer = with_affine(BatchRenorm1d(4, r_max=10.0, d_max=10.0, warmup_steps=0, eps=eps).double())
    mu, var_running = randn(4, seed=3).numpy() * 0.3, 0.5 + randn(4, seed=4).numpy() ** 2
    with torch.no_grad():
        layer.running_mean.copy_(torch.from_numpy(mu))
        layer.running_var.copy_(torch.from_numpy(var_running))
    x, grad_y = randn(7, 4, seed=1), randn(7, 4, seed=2)
    y, grad_x, grad_gamma, grad_beta = forward_backward(layer, x, grad_y)

    xs, g, gamma, beta, m = x.numpy(), grad_y.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), 7
    sigma = np.sqrt(var_running + eps)
    mu_b = xs.mean(0)
    sigma_b = np.sqrt(eps + ((xs - mu_b) ** 2).mean(0))
    r = sigma_b / sigma
    d = (mu_b - mu) / sigma
    assert np.all((1 / 10 < r) & (r < 10)) and np.all(np.abs(d) < 10)  # not clipped
    x_hat = (xs - mu_b) / sigma_b * r + d
    np.testing.assert_allclose(y.numpy(), gamma * x_hat + beta, atol=TOL)
    np.testing.assert_allclose(x_hat, (xs - mu) / sigma, atol=TOL)  # unclipped: exactly the inference transform
    # the paper's backward pass, r and d treated as constants
    dx_hat = g * gamma
    dsigma_b = (dx_hat * (xs - mu_b) * (-r / sigma_b**2)).sum(0)
    dmu_b = (dx_hat * (-r / sigma_b)).sum(0)
    dx = dx_hat * r / sigma_b + dsigma_b * (xs - mu_b) / (m * sigma_b) + dmu_b / m
    np.testing.assert_allclose(grad_x.numpy(), dx, atol=TOL)
    np.testing.assert_allclose(grad_gamma.numpy(), (g * x_hat).sum(0), atol=TOL)
    np.testing.assert_allclose(grad_beta.numpy(), g.sum(0), atol=TOL)
    # the moving averages: torch's update with the unbiased batch variance
    np.testing.assert_allclose(layer.running_mean.numpy(), 0.9 * mu + 0.1 * mu_b, atol=TOL)
    np.testing.assert_allclose(layer.running_var.numpy(), 0.9 * var_running + 0.1 * xs.var(0, ddof=1), atol=TOL)


def test_batch_renorm_clips_r_and_d_and_works_on_images():
    layer = BatchRenorm2d(3, r_max=1.5, d_max=0.5, warmup_steps=0).double()
    with torch.no_grad():
        layer.running_mean.fill_(10.0)  # far from the batch: d clipped to -0.5
        layer.running_var.fill_(100.0)  # sigma_B / sigma about 0.2: r clipped to 1/1.5
    layer(randn(4, 3, 5, 5))
    torch.testing.assert_close(layer.last_d, torch.full((3,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(layer.last_r, torch.full((3,), 1 / 1.5, dtype=torch.float64))


def test_renorm_schedule_is_the_papers_scaled():
    # the paper's own numbers: plain BN until 5k, d_max = 5 at 25k, r_max = 3 at 40k
    assert renorm_limits(4_999, 3.0, 5.0, 5_000) == (1.0, 0.0)
    assert renorm_limits(25_000, 3.0, 5.0, 5_000)[1] == pytest.approx(5.0)
    assert renorm_limits(40_000, 3.0, 5.0, 5_000)[0] == pytest.approx(3.0)
    assert renorm_limits(15_000, 3.0, 5.0, 5_000)[1] == pytest.approx(2.5)  # linear halfway
    # scaled to a warm-up of 10 steps: d_max at 50, r_max at 80
    assert renorm_limits(9, 3.0, 5.0, 10) == (1.0, 0.0)
    assert renorm_limits(50, 3.0, 5.0, 10) == pytest.approx((1 + 2 * 40 / 70, 5.0))
    assert renorm_limits(80, 3.0, 5.0, 10) == pytest.approx((3.0, 5.0))
    # the module counts its own training passes
    layer = BatchRenorm1d(2, r_max=3.0, d_max=5.0, warmup_steps=2)
    for _ in range(3):
        layer(torch.randn(4, 2))
    layer.eval()
    layer(torch.randn(4, 2))
    assert int(layer.num_batches_tracked) == 3 and layer.current_limits() == renorm_limits(3, 3.0, 5.0, 2)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_ghost_bn_with_the_virtual_batch_equal_to_the_batch_is_torchs_batch_norm(momentum):
    ours = with_affine(GhostBatchNorm1d(5, virtual_batch_size=8, momentum=momentum).double())
    torch_bn = with_affine(nn.BatchNorm1d(5, momentum=momentum).double())
    x, grad_y = randn(8, 5), randn(8, 5, seed=1)
    for a, b in zip(forward_backward(ours, x, grad_y), forward_backward(torch_bn, x, grad_y)):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.running_mean, torch_bn.running_mean, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.running_var, torch_bn.running_var, atol=TOL, rtol=0)


def test_ghost_bn_with_smaller_virtual_batches_is_bn_on_each_chunk():
    ours = with_affine(GhostBatchNorm1d(5, virtual_batch_size=4).double())
    torch_bn = with_affine(nn.BatchNorm1d(5).double())
    x, grad_y = randn(12, 5), randn(12, 5, seed=1)
    ours_values = forward_backward(ours, x, grad_y)
    # torch's BN applied to each chunk of 4 in turn, one running update per chunk
    x_ref = x.clone().requires_grad_(True)
    y_ref = torch.cat([torch_bn(chunk) for chunk in x_ref.split(4)])
    y_ref.backward(grad_y)
    for a, b in zip(ours_values, (y_ref.detach(), x_ref.grad, torch_bn.weight.grad, torch_bn.bias.grad)):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.running_mean, torch_bn.running_mean, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.running_var, torch_bn.running_var, atol=TOL, rtol=0)
    assert ghost_batch_sizes(9, 4) == [4, 5] and ghost_batch_sizes(10, 4) == [4, 4, 2] and ghost_batch_sizes(3, 4) == [3]


def test_model_config_builds_the_new_norms_and_keeps_old_defaults():
    assert model_label("batch_renorm") == "Batch Renorm" and model_label("ghost_batch") == "ghost BN"
    model = build_model(ModelConfig(norm="batch_renorm", hidden=(8,), renorm_warmup_steps=3, renorm_r_max=2.0), seed=0)
    assert isinstance(model.blocks[0].norm, BatchRenorm1d) and model.blocks[0].norm.warmup_steps == 3
    model = build_model(ModelConfig(norm="ghost_batch", hidden=(8,), ghost_batch_size=4), seed=0)
    assert model.blocks[0].norm.virtual_batch_size == 4
    assert ModelConfig() == ModelConfig() and hash(ModelConfig()) == hash(ModelConfig())
    with pytest.raises(BnvizError):
        ModelConfig(norm="batch_renorm", renorm_r_max=0.5)
    with pytest.raises(BnvizError):
        ModelConfig(norm="ghost_batch", ghost_batch_size=1)


def test_sweep_config_is_bounded():
    with pytest.raises(BnvizError):
        SmallBatchesConfig(batch_sizes=(1, 8))
    with pytest.raises(BnvizError):
        SmallBatchesConfig(batch_sizes=tuple(range(2, 12)))
    with pytest.raises(BnvizError):
        SmallBatchesConfig(seeds=6)
    with pytest.raises(BnvizError):
        SmallBatchesConfig(steps=100_000)
    with pytest.raises(BnvizError):
        SmallBatchesConfig(r_max=20.0)
    with pytest.raises(BnvizError):
        SmallBatchesConfig(ghost_batch_size=1)
    assert SmallBatchesConfig(steps=320).warmup_steps == 10  # the paper's 5k of 160k


def test_small_sweep_layernorm_has_no_train_eval_mismatch_and_bn_has_some():
    config = SmallBatchesConfig(norms=("batch", "ghost_batch", "batch_renorm", "layer"), batch_sizes=(4, 16), seeds=1, steps=20, ghost_batch_size=4)
    result = small_batches.run(config)
    bn, ghost = result.accuracy("batch"), result.accuracy("ghost_batch")
    assert bn.shape == ghost.shape == (2, 1) and np.all((0 < ghost) & (ghost < 1))
    layer = result.mismatch("layer")
    assert np.all(layer[..., 2] == 0) and np.all(layer[..., 3] < 1e-5)  # LayerNorm: the same outputs in both modes
    assert result.mismatch("batch")[0, 0, 2] > 0  # BN at batch 4: some predictions change
    rows = result.summary_rows()
    assert len(rows) == 8 and {"test accuracy", "prediction changes"} <= set(rows[0])


def test_bessel_closed_form_and_its_measurement_on_a_deep_chain():
    assert closed_form_ratio(64, 20) == pytest.approx((63 / 64) ** 10) == pytest.approx(0.854, abs=5e-4)
    config = BesselConfig(depth=12, width=32, steps=5, probe_batch_sizes=(2, 4, 64), eps=1e-12)
    result = bessel_mismatch.run(config)
    assert result.measured.shape == (3, 12)
    # m >= 4: every layer within 1e-6 of ((m-1)/m)^(l/2); m = 2 the first two layers (deeper, a batch of two
    # makes the eval-mode chain amplify eps and rounding layer after layer: the page shows where)
    np.testing.assert_allclose(result.measured[1:], result.closed[1:], rtol=1e-6)
    np.testing.assert_allclose(result.measured[0, :2], result.closed[0, :2], rtol=1e-6)
    assert np.all(result.mean_gap[1:] < 1e-9)  # the batch means agree between the modes


def test_the_renorm_verdict_needs_a_margin_over_seeds():
    from types import SimpleNamespace

    from bnviz.experiments.small_batches import renorm_verdict

    def result(bn, renorm):
        table = {"batch": np.array([bn]), "batch_renorm": np.array([renorm])}
        return SimpleNamespace(accuracy=lambda norm: table[norm])

    assert renorm_verdict(result([0.80, 0.81, 0.79], [0.85, 0.86, 0.845])).word == "supported"
    assert renorm_verdict(result([0.80, 0.81, 0.79], [0.801, 0.812, 0.791])).word == "not supported"  # ahead on every seed, by 0.1 points
    assert renorm_verdict(result([0.80, float("nan"), 0.79], [0.85, 0.86, 0.84])).seeds == 2  # the diverged seed is left out
