"""The pitfalls page's core numbers: BN buffers under no_grad, d2l's grad-switched BN,
label-shifted batches and TENT, and gradient growth at initialization."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.errors import BnvizError
from bnviz.experiments.distribution_shift import ShiftConfig
from bnviz.experiments.forward_pass_pitfall import (EVAL_PASS, GRAD_PASS, NO_GRAD_PASS, ForwardPassConfig, GradSwitchedBatchNorm, accidental_pass,
                                                    accuracy_verdict, pass_batches, running_statistics, stats_verdict, train_mode_accuracy)
from bnviz.experiments.forward_pass_pitfall import run as run_forward_pass
from bnviz.experiments.init_gradients import RELU_BN_GROWTH_ESTIMATE, InitGradientsConfig, growth_factor, growth_verdict, layer_gradient_norms
from bnviz.experiments.init_gradients import run as run_init_gradients
from bnviz.experiments.label_shift import LabelShiftConfig, compare, entropy, label_shifted_batches, tent_predict
from bnviz.experiments.label_shift import run as run_label_shift
from bnviz.models import ModelConfig, build_model
from fresh_process import assert_prints_ok


@pytest.fixture(scope="module")
def bn_model():
    return build_model(ModelConfig(hidden=(32, 32), activation="relu", norm="batch"), seed=0)


def test_train_mode_pass_moves_running_stats_under_no_grad_and_eval_mode_does_not(mnist, bn_model):
    batches = pass_batches(mnist.test_x[:400], mnist.test_y[:400], "test set", 100)
    original = running_statistics(bn_model)
    for train_mode, no_grad, should_move in ((True, True, True), (True, False, True), (False, True, False), (False, False, False)):
        model = copy.deepcopy(bn_model)
        accidental_pass(model, batches, train_mode, no_grad)
        after = running_statistics(model)
        moved = any(not torch.equal(a, b) for pair_a, pair_b in zip(original, after) for a, b in zip(pair_a, pair_b))
        assert moved == should_move, (train_mode, no_grad)
        assert not model.training  # accidental_pass leaves the model in eval mode


def test_one_digit_at_a_time_orders_the_pass_by_digit(mnist):
    batches = pass_batches(mnist.test_x[:500], mnist.test_y[:500], "one digit at a time", 32)
    digits = [int(y[0]) for _, y in batches]
    assert digits == sorted(digits) and all(len(set(y.tolist())) == 1 for _, y in batches)
    assert sum(len(y) for _, y in batches) == 500


def test_grad_switched_bn_follows_grad_mode_not_train_mode():
    torch.manual_seed(0)
    x = torch.randn(64, 8, dtype=torch.float64) * 3 + 1
    reference = nn.BatchNorm1d(8).double()
    with torch.no_grad():
        reference.running_mean.uniform_(-1, 1)
        reference.running_var.uniform_(0.5, 2)
    layer = GradSwitchedBatchNorm.like(reference).double()
    # gradients on: batch statistics (as torch's train mode), whatever the module's mode
    for mode in (True, False):
        layer.train(mode)
        expected = nn.functional.batch_norm(x, None, None, training=True, eps=layer.eps)
        torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=0)
    # the moving statistics moved twice, with the biased variance
    momentum, mean, var = layer.momentum, x.mean(dim=0), x.var(dim=0, unbiased=False)
    expected_mean = (1 - momentum) ** 2 * reference.running_mean + momentum * (1 - momentum) * mean + momentum * mean
    torch.testing.assert_close(layer.moving_mean, expected_mean, atol=1e-10, rtol=0)
    expected_var = (1 - momentum) ** 2 * reference.running_var + momentum * (1 - momentum) * var + momentum * var
    torch.testing.assert_close(layer.moving_var, expected_var, atol=1e-10, rtol=0)
    # no_grad: the moving statistics, even in train mode, and no update
    layer.train()
    frozen = layer.moving_mean.clone()
    with torch.no_grad():
        out = layer(x)
    eval_bn = copy.deepcopy(reference).eval()
    with torch.no_grad():
        eval_bn.running_mean.copy_(layer.moving_mean)
        eval_bn.running_var.copy_(layer.moving_var)
        torch.testing.assert_close(out, eval_bn(x), atol=1e-10, rtol=0)
    assert torch.equal(layer.moving_mean, frozen)


def test_train_mode_refuses_a_batch_of_one_with_pytorchs_message(mnist, bn_model):
    accuracy, message = train_mode_accuracy(bn_model, mnist.test_x[:20], mnist.test_y[:20], 1)
    assert math.isnan(accuracy) and "Expected more than 1 value per channel" in message
    accuracy, message = train_mode_accuracy(bn_model, mnist.test_x[:20], mnist.test_y[:20], 10)
    assert 0 <= accuracy <= 1 and message == ""


def test_accuracy_and_growth_and_compare_rules_need_every_seed_beyond_the_margin():
    assert accuracy_verdict([-0.02, -0.01]) == "drops"
    assert accuracy_verdict([-0.02, 0.001]) == "inconclusive"
    assert accuracy_verdict([0.001, -0.002]) == "within margin"
    assert accuracy_verdict([0.02, 0.03]) == "rises"
    assert accuracy_verdict([float("nan"), 0.03]) == "inconclusive"
    assert growth_verdict([1.2, 1.21]) == "grows" and growth_verdict([1.0, 1.01]) == "flat"
    assert growth_verdict([1.2, 1.0]) == "inconclusive" and growth_verdict([0.5, 0.6]) == "shrinks"
    assert compare([0.05, 0.02]) == "helps" and compare([-0.5, -0.2]) == "hurts" and compare([0.05, -0.02]) == "inconclusive"


def test_forward_pass_experiment_small_config():
    result = run_forward_pass(ForwardPassConfig(steps=20, seeds=1, width=32, pass_batch_size=200, test_batch_sizes=(1, 100)))
    assert stats_verdict(result) == "moves under no_grad"
    assert result.same_buffers_with_and_without_grad
    assert result.stat_change[EVAL_PASS][0] == 0 and result.stat_change[NO_GRAD_PASS][0] > 0
    assert result.accuracy_after[EVAL_PASS][0] == result.accuracy_before[0]
    assert result.accuracy_after[NO_GRAD_PASS][0] == result.accuracy_after[GRAD_PASS][0]
    assert 1 in result.refused_batch_sizes and math.isnan(result.train_mode_accuracy[0, 0])
    rows = {(r["layer"], r["mode"], r["no_grad"]): r for r in result.grad_switched}
    # PyTorch: the mode decides; d2l's layer: grad mode decides
    assert rows[("nn.BatchNorm1d", "train mode", True)]["moved"] and not rows[("nn.BatchNorm1d", "eval mode", False)]["moved"]
    assert not rows[("d2l's from-scratch BN", "train mode", True)]["moved"] and rows[("d2l's from-scratch BN", "eval mode", False)]["moved"]
    assert not rows[("d2l's from-scratch BN", "train mode", True)]["uses_batch_stats"] and rows[("nn.BatchNorm1d", "train mode", True)]["uses_batch_stats"]


def test_forward_pass_config_bounds():
    with pytest.raises(BnvizError, match="batch of 1"):
        ForwardPassConfig(pass_batch_size=1)
    with pytest.raises(BnvizError, match="pass_over"):
        ForwardPassConfig(pass_over="train set")


# ------------------------------------------------------------------ label shift
def test_label_shifted_batches_hold_the_asked_number_of_digits(mnist):
    y = mnist.test_y[:2000]
    for k in (1, 2, 5):
        batches = label_shifted_batches(y, k, 50, 6, seed=k)
        assert len(batches) == 6 and all(len(b) == 50 for b in batches)
        assert all(len(set(y[b].tolist())) <= k for b in batches)
        assert all(len(torch.unique(b)) == 50 for b in batches)  # no image twice in a batch
    assert all(len(set(y[b].tolist())) == 1 for b in label_shifted_batches(y, 1, 50, 6, seed=0))


def test_entropy_and_tent_touch_only_bn_affine_parameters(mnist, bn_model):
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    assert entropy(logits).item() == pytest.approx((math.log(2) + 0.0) / 2, abs=1e-6)
    before = copy.deepcopy(bn_model.state_dict())
    predictions_before, predictions_after = tent_predict(bn_model, mnist.test_x[:64], steps=2, lr=1e-2)
    assert predictions_before.shape == predictions_after.shape == (64,)
    for key, value in bn_model.state_dict().items():  # the model itself is untouched (TENT works on a copy)
        assert torch.equal(value, before[key]), key


def test_label_shift_small_run_batch_stats_hurt_on_one_digit_batches():
    config = LabelShiftConfig(model=ShiftConfig(steps=60, train_examples=5000, test_examples=1000, width=32, depth=2), seeds=1,
                              class_counts=(1, 10), batches=3, batch_size=50)
    result = run_label_shift(config)
    accuracy = result.accuracy["clean digits"]
    assert accuracy["batch statistics"][0, 0] < accuracy["eval mode"][0, 0] - 0.2
    assert compare(result.difference("clean digits", "batch statistics")[:, 0]) == "hurts"
    assert np.all((accuracy["AdaBN"] >= 0) & (accuracy["AdaBN"] <= 1))


# ------------------------------------------------------------------ gradients at initialization
def test_bn_chain_gradient_grows_per_layer_and_skipinit_does_not(mnist):
    x, y = mnist.test_x[:256].flatten(1), mnist.test_y[:256]
    bn = layer_gradient_norms("BN", 30, 256, x, y, seed=0)
    skip = layer_gradient_norms("SkipInit", 30, 256, x, y, seed=0)
    plain = layer_gradient_norms("no BN", 30, 256, x, y, seed=0)
    assert growth_factor(bn) > 1.1
    assert abs(growth_factor(bn) - RELU_BN_GROWTH_ESTIMATE) < 0.05  # the sqrt(pi/(pi-1)) estimate, wide and large batch
    assert growth_factor(skip) == pytest.approx(1.0, abs=1e-12)
    assert abs(growth_factor(plain) - 1) < 0.1


def test_gradient_norms_read_on_the_way_equal_retained_gradients(mnist):
    """layer_gradient_norms hooks each dL/dh_l as it passes (no weight gradients, nothing kept):
    the numbers of a plain backward with every gradient retained, bit for bit."""
    from bnviz.experiments.init_gradients import VARIANTS, DeepChain

    x, y = mnist.test_x[:32].flatten(1), mnist.test_y[:32]
    for variant in VARIANTS:
        torch.manual_seed(4)
        model = DeepChain(variant, 6, 24, x.shape[1]).train()
        logits, hidden = model(x.float())
        for h in hidden:
            h.retain_grad()
        nn.functional.cross_entropy(logits, y).backward()
        retained = np.array([h.grad.norm().item() for h in hidden])
        assert np.array_equal(layer_gradient_norms(variant, 6, 24, x, y, seed=4), retained)


def test_init_gradients_run_and_bounds():
    result = run_init_gradients(InitGradientsConfig(depths=(2, 8), width=32, batch_size=32, seeds=2))
    assert result.norms["BN"][8].shape == (2, 8) and result.norms["BN"][2].shape == (2, 2)
    assert growth_verdict(result.growth["SkipInit"]) == "flat"
    assert np.all(result.first_to_last("BN", 8) > 1)
    with pytest.raises(BnvizError, match="at least 3"):
        InitGradientsConfig(depths=(2,))
    with pytest.raises(BnvizError, match="increasing"):
        InitGradientsConfig(depths=(10, 5))


def test_init_gradients_do_not_import_sympy():
    """A vector-Jacobian product with a ``grad_outputs`` tensor imports torch.fx's symbolic
    shapes and sympy (~35 MiB resident for the rest of a server's life): the chain's
    gradients are taken as the gradient of a scalar instead. In a fresh process."""
    script = (
        "import sys\n"
        "from bnviz.experiments.init_gradients import InitGradientsConfig, run\n"
        "run(InitGradientsConfig(depths=(2, 3), width=16, batch_size=8, seeds=1))\n"
        "assert 'sympy' not in sys.modules, 'sympy was imported'\n"
        "print('ok')\n"
    )
    assert_prints_ok(script)


# ------------------------------------------------------------------ the textbook's switches
def test_partial_batch_norm_keeps_only_its_step():
    from bnviz.experiments.bn_switches import PartialBatchNorm

    torch.manual_seed(0)
    x = torch.randn(32, 6, dtype=torch.float64) * 3 + 2
    for keep in ("mean", "variance"):
        layer = PartialBatchNorm(nn.BatchNorm1d(6).double(), keep).train()
        y = layer(x)
        if keep == "mean":
            torch.testing.assert_close(y, x - x.mean(dim=0))
        else:
            torch.testing.assert_close(y, x / torch.sqrt(x.var(dim=0, unbiased=False) + 1e-5))
        # running statistics as torch's own BN updates them
        reference = nn.BatchNorm1d(6).double().train()
        reference(x)
        torch.testing.assert_close(layer.layer.running_mean, reference.running_mean)
        torch.testing.assert_close(layer.layer.running_var, reference.running_var)


def test_switches_run_paired_and_their_rules():
    from bnviz.experiments.bn_switches import FULL_BN, SwitchesConfig, paired_verdict
    from bnviz.experiments.bn_switches import run as run_switches

    assert paired_verdict([0.8, 0.85], [0.9, 0.9]) == "worse" and paired_verdict([0.905, 0.9], [0.9, 0.9]) == "within margin"
    assert paired_verdict([0.95, 0.85], [0.9, 0.9]) == "inconclusive" and paired_verdict([float("nan"), 0.95], [0.9, 0.9]) == "inconclusive"
    config = SwitchesConfig(depth=2, width=32, steps=30, seeds=2,
                            switches=(FULL_BN, "frozen γ = 1, β = 0", "no linear bias", "dropout before BN", "only γ/β trained"))
    result = run_switches(config)
    assert all(np.isfinite(v).all() for v in result.accuracy.values())
    assert result.variance_shift.shape == (2, 1) and np.all(result.variance_shift > 1)  # dropout inflates the train-mode variance
    with pytest.raises(BnvizError, match="paired"):
        SwitchesConfig(seeds=1)


def test_only_gamma_beta_trained_leaves_every_linear_weight_at_its_initial_value(mnist):
    from bnviz.experiments.bn_switches import ApplySwitch, SwitchesConfig
    from bnviz.train import Run, train_together

    config = SwitchesConfig(depth=2, width=16, steps=10, seeds=2)
    run = Run(config.model("only γ/β trained"), config.train_config(0), mnist, recorders=[ApplySwitch("only γ/β trained")], accelerate=False)
    initial = copy.deepcopy(run.model.state_dict())
    train_together([run])
    for key, value in run.model.state_dict().items():
        changed = not torch.equal(value, initial[key])
        assert changed == (".norm." in key and (key.endswith("weight") or key.endswith("bias") or "running" in key or "num_batches" in key)), key
