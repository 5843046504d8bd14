"""bnviz's RMSNorm against torch.nn.RMSNorm (float64, forward and backward), and in a trained model."""
import pytest
import torch
from torch import nn

from bnviz import norms
from bnviz.models import ModelConfig, build_model

TOL = 1e-10


@pytest.mark.parametrize("shape", [(4, 10), (3, 6, 5, 5)])
def test_rms_norm_matches_torch_forward_and_backward(shape):
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    layer = norms.RMSNorm(shape[1], eps=1e-5).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
    reference = nn.RMSNorm(shape[1:], eps=1e-5, dtype=torch.float64)
    with torch.no_grad():  # torch's weight is elementwise over (C, H, W): bnviz's per-channel gain broadcast
        reference.weight.copy_(layer.weight.reshape((-1,) + (1,) * (len(shape) - 2)).expand(shape[1:]))
    out, out_ref = layer(x), reference(x_ref)
    torch.testing.assert_close(out, out_ref, atol=TOL, rtol=0)
    grad = torch.randn(shape, dtype=torch.float64)
    out.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=TOL, rtol=0)
    expected_weight_grad = reference.weight.grad.sum(dim=tuple(range(1, len(shape) - 1))) if len(shape) > 2 else reference.weight.grad
    torch.testing.assert_close(layer.weight.grad, expected_weight_grad, atol=TOL, rtol=0)


def test_rms_norm_is_not_invariant_to_a_shift_but_layer_norm_is():
    torch.manual_seed(1)
    x = torch.randn(8, 20, dtype=torch.float64)
    shifted = x + 3.0  # the same constant on every feature of every example
    assert torch.allclose(norms.layer_norm(x), norms.layer_norm(shifted), atol=1e-6)
    assert (norms.rms_norm(x) - norms.rms_norm(shifted)).abs().max() > 0.1
    # both ignore a re-scaling of an example (eps aside)
    assert torch.allclose(norms.rms_norm(x), norms.rms_norm(2.0 * x), atol=1e-4)


def test_mlp_and_cnn_with_rms_norm_train_mode_equals_eval_mode():
    for arch, hidden in (("mlp", (16, 16)), ("cnn", (4, 8))):
        model = build_model(ModelConfig(arch=arch, hidden=hidden, activation="relu", norm="rms"), seed=0)
        assert all(isinstance(n, norms.RMSNorm) for n in model.norm_layers())
        x = torch.randn(5, 1, 28, 28)
        with torch.no_grad():
            train_out = model.train()(x)
            torch.testing.assert_close(model.eval()(x), train_out)
            torch.testing.assert_close(model(x[:1]), train_out[:1], atol=1e-5, rtol=0)  # independent of batch-mates
