"""Noisy BN, the probes (ICS, landscape, first-layer change), activation drift and the scoreboard."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.errors import BnvizError
from bnviz.experiments import why_noisy_bn, why_probes
from bnviz.experiments.why_noisy_bn import NoisyBNConfig
from bnviz.experiments.why_probes import ProbesConfig, measures, scoreboard
from bnviz.models import NOISE_MEAN_JITTER, NOISE_MEAN_RANGE, CovariateNoise, ModelConfig, NoisyBatchNorm1d, build_model
from bnviz.probes import InternalCovariateShift, LossLandscape, LowerLayerChange, loss_and_gradients, parameters, probing
from bnviz.recorders import ActivationDrift
from bnviz.results import SeededComparison
from bnviz.train import Run, TrainConfig, TrainResult
from bnviz.verdicts import judge

SMALL = (16, 12, 8)


def small_run(mnist, norm, recorders=(), steps=6, seed=0, lr=0.1):
    model = ModelConfig(hidden=SMALL, activation="relu", norm=norm)
    return Run(model, TrainConfig(steps=steps, lr=lr, seed=seed, eval_every=steps, eval_examples=200, train_examples=600), mnist, recorders)


# ---------------------------------------------------------------- noisy BN
def test_covariate_noise_follows_algorithm_1_in_training_mode_only():
    torch.manual_seed(0)
    noise = CovariateNoise(50, strength=1.0, seed=3)
    x = torch.zeros(4000, 50)
    shift = noise(x)  # x = 0: the output is the shift m_ij alone
    unit_mean = shift.mean(dim=0)
    assert unit_mean.abs().max() <= NOISE_MEAN_RANGE + 1e-6
    assert ((shift - unit_mean).abs().max()) <= NOISE_MEAN_JITTER + 0.01  # m_ij within mu_j +- 0.1
    scale = noise(torch.ones(4000, 50)) - noise.last_draw[1]  # x = 1: s_ij
    assert 0.95 < scale.mean(dim=0).min() and scale.mean(dim=0).max() < 1.30  # sigma_j in [1, 1.25]
    assert scale.std(dim=0).mean() == pytest.approx(0.1, abs=0.01)  # s_ij ~ N(sigma_j, 0.1)
    noise.eval()
    assert torch.equal(noise(x + 2.0), x + 2.0)
    assert torch.equal(CovariateNoise(5, strength=0.0)(torch.ones(3, 5)), torch.ones(3, 5))


def test_frozen_noise_repeats_the_last_draw_and_keeps_the_stream():
    noise = CovariateNoise(6, seed=1)
    x = torch.randn(10, 6)
    first = noise(x)
    state = noise.generator.get_state()
    noise.frozen = True
    assert torch.equal(noise(x), first)
    noise(torch.randn(3, 6))  # another batch size: drawn without moving the stream
    assert torch.equal(noise.generator.get_state(), state)
    noise.frozen = False
    assert not torch.equal(noise(x), first)


def test_noisy_bn_keeps_bns_running_statistics_and_eval_output():
    torch.manual_seed(0)
    plain, noisy = nn.BatchNorm1d(7), NoisyBatchNorm1d(7)
    noisy.noise = CovariateNoise(7)
    for _ in range(3):
        x = torch.randn(20, 7) * 3 + 1
        plain(x), noisy(x)
    assert torch.equal(plain.running_mean, noisy.running_mean) and torch.equal(plain.running_var, noisy.running_var)
    plain.eval(), noisy.eval()
    x = torch.randn(5, 7)
    assert torch.equal(plain(x), noisy(x))


def test_model_labels_and_noise_seeded_by_the_model_seed():
    cfg = ModelConfig(hidden=SMALL, norm="noisy_batch")
    assert cfg.label == "noisy BN" and cfg.replace(norm="noise").label == "no BN + noise"
    x = torch.randn(8, 1, 28, 28)
    a, b, c = build_model(cfg, 5), build_model(cfg, 5), build_model(cfg, 6)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    with pytest.raises(BnvizError):
        ModelConfig(noise_strength=-1.0)


# ---------------------------------------------------------------- probes leave no trace
@pytest.mark.parametrize("norm", ["none", "batch", "noisy_batch"])
def test_probes_leave_training_exactly_unchanged(mnist, norm):
    probes = [InternalCovariateShift(2), LossLandscape(0.1, 2), LowerLayerChange(2)]
    probed, plain = small_run(mnist, norm, probes), small_run(mnist, norm)
    probed.advance(6), plain.advance(6)
    assert probed.step_loss == plain.step_loss
    for (name, a), (_, b) in zip(probed.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(a, b), name  # weights and BN buffers (running mean/var, batches tracked)
    records = probed.result().records
    assert len(records["ics_step"]) == len(records["landscape_step"]) == len(records["lower_change_step"]) == 3


@pytest.mark.parametrize("norm", ["batch", "noisy_batch"])
def test_one_probe_leaves_weights_buffers_grads_and_noise_state_unchanged(mnist, norm):
    run = small_run(mnist, norm)
    run.advance(2)
    model, x, y = run.model, mnist.train_x[:60], mnist.train_y[:60]
    nn.functional.cross_entropy(model(x), y).backward()
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    noise_states = [m.generator.get_state() for m in model.modules() if isinstance(m, CovariateNoise)]
    landscape, ics, lower = LossLandscape(0.1, every=1), InternalCovariateShift(every=1), LowerLayerChange(every=1)
    for probe in (landscape, ics, lower):
        probe.on_batch(3, x, y)
    ics.attach(model)
    landscape.after_backward(3, model)
    ics.after_backward(3, model)
    ics.after_step(3, model)
    lower.after_step(3, model)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    after = [m.generator.get_state() for m in model.modules() if isinstance(m, CovariateNoise)]
    assert len(after) == (len(SMALL) if norm == "noisy_batch" else 0)
    assert all(torch.equal(a, b) for a, b in zip(after, noise_states))
    assert not getattr(model, "bnviz_probing")


# ---------------------------------------------------------------- ICS (Definition 2.1)
@pytest.mark.parametrize("norm", ["none", "batch", "noisy_batch"])
def test_ics_is_exactly_zero_when_the_layers_below_do_not_move(mnist, norm):
    recorder = InternalCovariateShift(every=1)
    run = small_run(mnist, norm, [recorder], steps=3)
    run.model.blocks[0].requires_grad_(False)  # no gradient, so SGD leaves the first block as it is
    run.advance(3)
    records = run.result().records
    assert list(records["ics_layer"]) == [2, 3, 4]
    assert np.all(records["ics_l2"][:, 0] == 0.0)  # layer 2: only block 1 is below it
    assert np.allclose(records["ics_cosine"][:, 0], 1.0, atol=1e-12)
    assert np.all(records["ics_l2"][:, 1:] > 0)  # the layers above do see block 2's update


def test_ics_matches_a_direct_torch_computation(mnist):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=SMALL, norm="batch"), seed=1)
    x, y = mnist.train_x[:60], mnist.train_y[:60]
    recorder = InternalCovariateShift(every=1)
    recorder.attach(model)
    before = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    recorder.on_batch(1, x, y)
    nn.functional.cross_entropy(model(x), y).backward()
    recorder.after_backward(1, model)
    optimizer.step()
    recorder.after_step(1, model)
    after = copy.deepcopy(model)
    records = recorder.finish()
    for column, layer in enumerate([2, 3, 4]):  # 1-based: blocks 1, 2, then the head
        reference = copy.deepcopy(before)
        reference.train()
        with torch.no_grad():
            for index in range(layer - 1):  # the blocks below take their step
                for p_ref, p_new in zip(reference.blocks[index].parameters(), after.blocks[index].parameters()):
                    p_ref.copy_(p_new)
        weight = (reference.blocks[layer - 1].linear if layer <= len(SMALL) else reference.head).weight
        g_shifted = torch.autograd.grad(nn.functional.cross_entropy(reference(x), y), weight)[0]
        original = copy.deepcopy(before)
        weight0 = (original.blocks[layer - 1].linear if layer <= len(SMALL) else original.head).weight
        g = torch.autograd.grad(nn.functional.cross_entropy(original(x), y), weight0)[0]
        assert records["ics_l2"][0, column] == pytest.approx((g - g_shifted).norm().item(), rel=1e-4)
        assert records["ics_grad_norm"][0, column] == pytest.approx(g.norm().item(), rel=1e-5)


# ---------------------------------------------------------------- landscape
def test_landscape_losses_match_moving_the_weights_by_hand(mnist):
    model = build_model(ModelConfig(hidden=SMALL, norm="batch"), seed=2)
    x, y = mnist.train_x[:60], mnist.train_y[:60]
    probe = LossLandscape(lr=0.2, every=1, multipliers=(0.5, 2.0))
    probe.on_batch(1, x, y)
    nn.functional.cross_entropy(model(x), y).backward()
    probe.after_backward(1, model)
    records = probe.finish()
    assert list(records["landscape_eta"]) == pytest.approx([0.1, 0.4])
    g_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    changes = []
    for column, eta in enumerate([0.1, 0.4]):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p_moved, p in zip(moved.parameters(), model.parameters()):
                p_moved -= eta * p.grad
        moved.zero_grad()
        loss = nn.functional.cross_entropy(moved(x), y)
        loss.backward()
        change = torch.cat([(pm.grad - p.grad).flatten() for pm, p in zip(moved.parameters(), model.parameters())]).norm().item()
        assert records["landscape_loss"][0, column] == pytest.approx(loss.item(), rel=1e-5)
        assert records["landscape_grad_change"][0, column] == pytest.approx(change, rel=1e-4)
        changes.append(change / (eta * g_norm))
    assert records["landscape_beta"][0] == pytest.approx(max(changes), rel=1e-4)


def test_loss_and_gradients_equal_torch_backward(mnist):
    model = build_model(ModelConfig(hidden=SMALL, norm="batch"), seed=3)
    x, y = mnist.train_x[:60], mnist.train_y[:60]
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    with probing(model):
        value, grads = loss_and_gradients(model, parameters(model), x, y, [n for n, _ in model.named_parameters()])
    assert value == pytest.approx(loss.item(), rel=1e-6)
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


# ---------------------------------------------------------------- hypothesis (2)
def test_bn_hides_a_change_of_the_first_layer_and_no_bn_does_not(mnist):
    changed = {}
    for norm in ("batch", "none"):
        probe = LowerLayerChange(every=2)
        run = small_run(mnist, norm, [probe], steps=2)
        run.advance(2)
        changed[norm] = run.result().records["lower_change_rel"][-1]
    assert changed["batch"].max() < 1e-4
    assert changed["none"].min() > 1e-3


# ---------------------------------------------------------------- drift
def test_drift_under_bn_is_the_drift_of_beta_and_noise_shakes_it(mnist):
    drifts = {}
    for norm in ("batch", "noisy_batch"):
        run = small_run(mnist, norm, [ActivationDrift()], steps=8)
        beta = []
        run.recorders.append(type("BetaRecorder", (), {"on_batch": lambda self, step, x, y, m=run.model: beta.append(m.blocks[-1].norm.bias[0].item())})())
        run.advance(8)
        records = run.result().records
        assert records["drift_mean"].shape == (7, len(SMALL))
        if norm == "batch":  # BN before the nonlinearity: a unit's batch mean is its beta
            assert np.allclose(records["drift_unit_mean"], beta[1:], atol=1e-5)
        drifts[norm] = np.median(records["drift_mean"])
    assert drifts["noisy_batch"] > 20 * drifts["batch"]


# ---------------------------------------------------------------- experiments and scoreboard
def test_configs_validate_at_the_boundary():
    with pytest.raises(BnvizError):
        ProbesConfig(hidden=(100,))
    with pytest.raises(BnvizError):
        ProbesConfig(max_multiplier=3.0)
    with pytest.raises(BnvizError):
        NoisyBNConfig(noise_strength=9.0)
    assert ProbesConfig(max_multiplier=2.0).multipliers == (0.5, 1.0, 2.0)


def test_experiments_and_scoreboard_words_come_from_the_numbers():
    noisy = why_noisy_bn.run(NoisyBNConfig(hidden=SMALL, steps=40, eval_every=20, seeds=2))
    probes = why_probes.run(ProbesConfig(hidden=SMALL, steps=40, probe_every=20, seeds=2))
    assert [r.label for r in noisy.runs] == ["no BN", "BN", "noisy BN", "no BN + noise"]
    assert [r.label for r in probes.runs] == ["no BN", "BN"] and probes.seeds == 2 and [r.train.seed for r in probes.arm("BN")] == [0, 1]
    rows = scoreboard(noisy, probes)
    assert len(rows) == 4 and all(set(row) == {"hypothesis", "if true", "measured", "verdict"} for row in rows)
    bn, plain = measures(probes.by_label("BN")), measures(probes.by_label("no BN"))
    assert f"{bn['ics_relative']:.3f}" in rows[1]["measured"] and f"{plain['ics_relative']:.3f}" in rows[1]["measured"]
    expected = judge("x", [measures(r)["ics_relative"] for r in probes.arm("BN")], [measures(r)["ics_relative"] for r in probes.arm("no BN")], margin=why_probes.SIMILAR, scale="ratio", higher_is_better=False)
    assert rows[1]["verdict"] == expected.label
    assert rows[2]["verdict"] == "holds by construction" and "not evidence" in rows[2]["measured"]
    assert "effective β" in rows[3]["measured"] and rows[3]["verdict"] in ("supported", "not supported", "inconclusive at 2 seeds")
    # noise strength 0: noisy BN is BN, so hypothesis (1) is not tested at all
    quiet = why_noisy_bn.run(NoisyBNConfig(hidden=SMALL, steps=40, eval_every=20, noise_strength=0.0, seeds=1))
    assert scoreboard(quiet, probes)[0]["verdict"] == "not tested"


def _probe_run(label: str, seed: int, beta: float) -> TrainResult:
    """A probed run whose records give effective β ``beta`` (the other probe numbers fixed)."""
    steps = np.array([10, 20])
    records = {
        "ics_step": steps, "ics_l2": np.full((2, 2), 0.1), "ics_grad_norm": np.ones((2, 2)), "ics_cosine": np.full((2, 2), 0.9),
        "landscape_loss": np.ones((2, 3)), "landscape_grad_change": np.ones((2, 3)), "landscape_beta": np.full(2, beta),
        "lower_change_rel": np.full((1, 3), 1e-7 if label == "BN" else 0.3),
    }
    return TrainResult(
        label=label, model=ModelConfig(norm="batch" if label == "BN" else "none"), train=TrainConfig(steps=20, seed=seed), eval_step=steps,
        train_loss=np.zeros(2), train_acc=np.zeros(2), test_loss=np.zeros(2), test_acc=np.full(2, 0.9), step_loss=np.zeros(20),
        final_test_acc=0.9, final_test_loss=0.3, diverged=False, diverged_step=None, seconds=0.0, device="cpu", records=records,
    )


@pytest.mark.parametrize(("plain_betas", "expected"), [((8.0, 8.4, 7.9), "supported"), ((4.4, 4.6, 4.5), "not supported")])
def test_hypothesis_3_is_judged_on_effective_beta_and_a_ratio_near_1_is_no_support(plain_betas, expected):
    """BN's β about 4: no BN's twice as large is 'supported'; 1.1x (inside the 1.25x margin) is not."""
    bn_betas = (4.0, 4.1, 4.05)
    probes = SeededComparison.from_seeds([_probe_run(label, seed, beta) for seed, pair in enumerate(zip(plain_betas, bn_betas)) for label, beta in zip(("no BN", "BN"), pair)], 2)
    noisy = why_noisy_bn.run(NoisyBNConfig(hidden=SMALL, steps=20, eval_every=20, seeds=1))
    row = scoreboard(noisy, probes)[3]
    assert row["verdict"] == expected, row
