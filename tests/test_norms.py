"""bnviz's step-by-step norms against torch.nn, in float64, to 1e-6."""
import pytest
import torch
from torch import nn

from bnviz import norms

TOL = 1e-6


def batch(shape, seed=0, scale=3.0, shift=2.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale + shift).requires_grad_(True)


@pytest.mark.parametrize("shape", [(64, 5), (2, 3), (8, 4, 5, 5)])
def test_batch_norm_forward_matches_torch_and_is_standardised(shape):
    x = batch(shape)
    steps = norms.batch_norm_steps(x, eps=1e-5)
    reference = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1], dtype=torch.float64)
    assert torch.allclose(steps.y, reference(x), atol=TOL)
    dims = (0,) + tuple(range(2, len(shape)))
    # eq. (3): each feature's normalised values have mean 0 and (biased) variance 1
    assert torch.allclose(steps.x_hat.mean(dim=dims), torch.zeros(shape[1], dtype=torch.float64), atol=TOL)
    assert torch.allclose(steps.x_hat.var(dim=dims, unbiased=False), torch.ones(shape[1], dtype=torch.float64), atol=1e-4)


def test_gamma_beta_set_the_output_mean_and_scale():
    x = batch((128, 3))
    gamma = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    beta = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    y = norms.batch_norm_steps(x, gamma, beta).y
    assert torch.allclose(y.mean(0), beta, atol=TOL)
    assert torch.allclose(y.std(0, unbiased=False), gamma, atol=1e-4)


@pytest.mark.parametrize("shape", [(32, 4), (2, 3), (6, 3, 4, 4)])
def test_batch_norm_backward_matches_autograd(shape):
    x = batch(shape, seed=1)
    gamma = torch.linspace(0.5, 1.5, shape[1], dtype=torch.float64).requires_grad_(True)
    beta = torch.linspace(-1, 1, shape[1], dtype=torch.float64).requires_grad_(True)
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    steps = norms.batch_norm_steps(x, gamma, beta)
    (steps.y * upstream).sum().backward()
    grad_x, grad_gamma, grad_beta = norms.batch_norm_backward(steps, upstream)
    assert torch.allclose(grad_x, x.grad, atol=TOL)
    assert torch.allclose(grad_gamma, gamma.grad, atol=TOL)
    assert torch.allclose(grad_beta, beta.grad, atol=TOL)
    dims = (0,) + tuple(range(2, len(shape)))
    assert torch.allclose(grad_x.sum(dim=dims), torch.zeros(shape[1], dtype=torch.float64), atol=TOL)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("batch_size", [2, 60])
def test_running_statistics_match_torch_step_by_step(momentum, batch_size):
    ours = norms.StepwiseBatchNorm(4, momentum=momentum).double()
    theirs = nn.BatchNorm1d(4, momentum=momentum).double()
    for step in range(7):
        x = batch((batch_size, 4), seed=10 + step, shift=step)
        assert torch.allclose(ours(x), theirs(x), atol=TOL)
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=TOL)
        assert torch.allclose(ours.running_var, theirs.running_var, atol=TOL)
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)
    ours.eval(), theirs.eval()
    x = batch((5, 4), seed=99)
    assert torch.allclose(ours(x), theirs(x), atol=TOL)


def test_eval_output_does_not_depend_on_batch_mates():
    layer = norms.StepwiseBatchNorm(3)
    for step in range(5):
        layer(batch((16, 3), seed=step).detach().float())
    layer.eval()
    sample = batch((1, 3), seed=50).detach().float()
    alone = layer(sample)
    for seed in range(3):
        mates = torch.cat([sample, batch((15, 3), seed=seed, scale=10).detach().float()])
        assert torch.equal(layer(mates)[:1], alone)


def test_constant_neuron_is_amplified_by_one_over_sqrt_eps():
    x = torch.zeros(8, 2, dtype=torch.float64)
    x[:, 1] = torch.arange(8)
    x[0, 0] = 1e-4  # a nearly constant neuron
    steps = norms.batch_norm_steps(x, eps=1e-5)
    assert steps.var[0] < 1e-8
    assert steps.inv_std[0] == pytest.approx(1 / (steps.var[0] + 1e-5) ** 0.5)
    assert steps.inv_std[0] > 300  # ~316 = 1/sqrt(1e-5)
    assert torch.isfinite(steps.y).all()


def test_bias_before_bn_is_cancelled():
    x = batch((32, 3))
    shifted = x + torch.tensor([5.0, -3.0, 100.0], dtype=torch.float64)
    assert torch.allclose(norms.batch_norm_steps(x).y, norms.batch_norm_steps(shifted).y, atol=TOL)


def test_training_with_one_value_per_channel_raises_like_torch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        norms.StepwiseBatchNorm(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(torch.randn(1, 3))


def test_keras_momentum_convention():
    assert norms.keras_to_pytorch_momentum(norms.KERAS_DEFAULT_MOMENTUM) == pytest.approx(0.01)
    assert nn.BatchNorm1d(1).momentum == norms.PYTORCH_DEFAULT_MOMENTUM
    assert nn.BatchNorm1d(1).eps == norms.PYTORCH_DEFAULT_EPS


@pytest.mark.parametrize("shape", [(4, 10), (3, 6, 5, 5)])
def test_layer_norm_matches_torch(shape):
    x = batch(shape)
    gamma = torch.rand(shape[1:], dtype=torch.float64)
    beta = torch.rand(shape[1:], dtype=torch.float64)
    reference = nn.LayerNorm(shape[1:], dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(gamma), reference.bias.copy_(beta)
    assert torch.allclose(norms.layer_norm(x, gamma, beta), reference(x), atol=TOL)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_and_instance_norm_match_torch(groups):
    x = batch((3, 6, 4, 4))
    reference = nn.GroupNorm(groups, 6, dtype=torch.float64)
    assert torch.allclose(norms.group_norm(x, groups, reference.weight, reference.bias), reference(x), atol=TOL)
    instance = nn.InstanceNorm2d(6, dtype=torch.float64)
    assert torch.allclose(norms.instance_norm(x), instance(x), atol=TOL)
