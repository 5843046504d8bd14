"""The normalization-math experiment: eq. (1)-(4), running statistics and backward on one
batch, against torch and closed forms, including a batch of 2 and a constant neuron."""
import math

import numpy as np
import pytest
import torch

from bnviz.experiments.normalization_math import (
    EXPERIMENT,
    NormalizationMathConfig,
    eps_cases,
    framework_conventions,
    max_difference,
    nonlinearity_regimes,
    run,
    synthetic_batch,
)
from bnviz.errors import BnvizError

TOL = 1e-6


def synthetic(**changes):
    return NormalizationMathConfig(source="synthetic", **changes)


@pytest.mark.parametrize("changes", [{}, {"batch_size": 2}, {"eps": 1e-3, "gamma": 2.5, "beta": -1.0, "momentum": None}, {"skew": 6.0, "outliers": 0.1, "batch_size": 512}])
def test_every_step_matches_torch_and_is_standardised(changes):
    result = run(synthetic(**changes))
    assert result.torch_refusal is None
    assert set(result.checks) == {"forward y", "running mean", "running variance", "dL/dx", "dL/dγ", "dL/dβ"}
    assert all(difference <= TOL for difference in result.checks.values()), result.checks
    # eq. (3): mean 0 and variance var / (var + eps) (1 up to eps) for every neuron
    assert np.abs(result.all_x_hat_mean).max() < TOL
    expected_var = result.all_var / (result.all_var + result.config.eps)
    assert np.allclose(result.all_x_hat_var, expected_var, atol=TOL)
    # eq. (4): the output's mean is beta and its std gamma * sqrt(x_hat variance)
    assert np.allclose(result.all_y_mean, result.config.beta, atol=TOL)
    assert np.allclose(result.all_y_std, result.config.gamma * np.sqrt(result.all_x_hat_var), atol=TOL)
    # the gradient w.r.t. BN's input sums to zero over the batch; a bias before BN changes nothing
    assert result.grad_sum < TOL
    assert result.bias_x_hat_difference < TOL
    assert np.allclose(result.bias_mean_shift, result.bias, atol=TOL)


def test_shown_values_are_the_steps_of_the_chosen_neurons():
    config = synthetic(first_neuron=10, batch_size=16)
    x, _ = synthetic_batch(config)
    result = run(config)
    assert list(result.neurons) == [10, 11, 12]
    assert np.array_equal(result.x, x[:, 10:13].numpy())
    mean = x[:, 10:13].mean(0)
    var = x[:, 10:13].var(0, unbiased=False)
    assert np.allclose(result.mean, mean, atol=TOL) and np.allclose(result.var, var, atol=TOL)
    assert np.allclose(result.x_hat, ((x[:, 10:13] - mean) / torch.sqrt(var + config.eps)).numpy(), atol=TOL)
    # PyTorch's running update from (0, 1) with momentum 0.1 and the unbiased variance
    assert np.allclose(result.running_mean, 0.1 * mean, atol=TOL)
    assert np.allclose(result.running_var, 0.9 + 0.1 * x[:, 10:13].var(0, unbiased=True), atol=TOL)


def test_batch_of_two_normalises_to_plus_minus_one():
    result = run(synthetic(batch_size=2, eps=1e-8))
    assert np.allclose(np.abs(result.x_hat), 1.0, atol=1e-4)
    assert np.allclose(result.x_hat.sum(axis=0), 0.0, atol=TOL)
    assert np.allclose(result.unbiased_var, 2 * result.var)
    pair = result.eps_cases[1]
    assert pair["batch size"] == 2 and pair["max |x̂| (ε = 0)"] == pytest.approx(1.0)


def test_constant_neuron_with_eps_is_zero_and_without_eps_is_nan():
    with_eps = run(synthetic(constant_neuron=True, eps=1e-5, beta=0.7))
    assert with_eps.var[0] == 0.0
    assert with_eps.inv_std[0] == pytest.approx(1 / math.sqrt(1e-5))
    assert np.all(with_eps.x_hat[:, 0] == 0.0) and np.allclose(with_eps.y[:, 0], 0.7)
    assert not with_eps.diverged and all(d <= TOL for d in with_eps.checks.values())
    without = run(synthetic(constant_neuron=True, eps=0.0))
    assert without.diverged and np.isnan(without.x_hat[:, 0]).all()
    assert "eps" in without.torch_refusal and without.checks == {}
    # the other neurons are untouched by the constant one
    assert np.isfinite(without.x_hat[:, 1:]).all()


def test_eps_cases_amplification():
    values = torch.tensor([1.0, 3.0, 2.0, 6.0], dtype=torch.float64)
    rows = {row["case"]: row for row in eps_cases(values, 1e-3)}
    this = rows["this neuron, this batch"]
    assert this["batch variance"] == pytest.approx(values.var(unbiased=False).item())
    assert this["amplification (ε)"] == pytest.approx(1 / math.sqrt(values.var(unbiased=False).item() + 1e-3))
    constant = rows["constant neuron"]
    assert constant["amplification (ε)"] == pytest.approx(1 / math.sqrt(1e-3))
    assert constant["max |x̂| (ε)"] == 0.0


def test_synthetic_batch_has_the_asked_mean_spread_and_skew():
    x, _ = synthetic_batch(synthetic(batch_size=512, mean=-3.0, spread=2.0, skew=8.0))
    assert abs(x.mean().item() + 3.0) < 0.05
    assert abs(x.std().item() - 2.0) < 0.05
    centred = x - x.mean()
    assert (centred**3).mean().item() > 0.5 * x.std().item() ** 3  # right-skewed
    with_outliers, _ = synthetic_batch(synthetic(batch_size=512, outliers=0.1))
    far = ((with_outliers - 2.0).abs() > 9 * 3.0).double().mean().item()
    assert 0.07 < far < 0.13


def test_nonlinearity_regimes_match_closed_forms():
    fractions, bounds = nonlinearity_regimes(torch.tensor([-5.0, -2.0, -0.5, 0.0, 0.5, 2.0, 5.0, 0.1], dtype=torch.float64))
    # sigmoid slope s(1 - s) is 0.8 * 0.25 at s = (1 + sqrt(0.2)) / 2, 0.1 * 0.25 at s = (1 + sqrt(0.9)) / 2
    logit = lambda s: math.log(s / (1 - s))  # noqa: E731
    assert bounds["sigmoid"]["linear"] == pytest.approx(logit((1 + math.sqrt(0.2)) / 2), abs=1e-3)
    assert bounds["sigmoid"]["saturated"] == pytest.approx(logit((1 + math.sqrt(0.9)) / 2), abs=1e-3)
    # tanh slope 1 - t^2
    assert bounds["tanh"]["linear"] == pytest.approx(math.atanh(math.sqrt(0.2)), abs=1e-3)
    assert fractions["sigmoid"] == {"linear": 4 / 8, "curved": 2 / 8, "saturated": 2 / 8}
    assert set(fractions["relu"]) == {"linear", "dead"}
    assert fractions["relu"]["dead"] == pytest.approx(4 / 8)  # y <= 0: slope 0
    for shares in fractions.values():
        assert sum(shares.values()) == pytest.approx(1.0)


def test_gamma_and_beta_move_values_into_saturation():
    gentle = run(synthetic(gamma=0.5))
    strong = run(synthetic(gamma=5.0))
    shifted = run(synthetic(beta=5.0))
    assert strong.regimes["sigmoid"]["saturated"] > gentle.regimes["sigmoid"]["saturated"]
    assert gentle.regimes["sigmoid"]["linear"] > 0.9
    assert shifted.regimes["relu"]["dead"] < gentle.regimes["relu"]["dead"]


def test_framework_conventions_are_read_from_torch():
    rows = {row["setting"]: row for row in framework_conventions()}
    pytorch = next(key for key in rows["eps"] if key.startswith("PyTorch"))
    assert rows["eps"][pytorch] == f"{torch.nn.BatchNorm1d(1).eps:g}"
    assert "weight of the new batch" in rows["momentum"][pytorch] and "0.1" in rows["momentum"][pytorch]
    assert rows["variance that normalises the batch"][pytorch].startswith("biased")
    assert rows["variance fed to the running estimate"][pytorch].startswith("unbiased")
    assert "spatial" in rows["“per feature” in BatchNorm2d"][pytorch]


def test_max_difference_treats_matching_nans_as_agreement():
    nan = float("nan")
    assert max_difference(torch.tensor([1.0, nan]), torch.tensor([1.5, nan])) == pytest.approx(0.5)
    assert max_difference(torch.tensor([1.0, nan]), torch.tensor([1.0, 2.0])) == math.inf
    assert math.isnan(max_difference(torch.tensor([nan]), torch.tensor([nan])))


def test_mnist_batch_from_the_shared_trainer_matches_torch(mnist):
    config = NormalizationMathConfig(train_steps=0, batch_size=8, layer=2, first_neuron=5)
    result = run(config)
    assert result.x.shape == (8, 3) and result.all_mean.shape == (100,)
    assert all(difference <= TOL for difference in result.checks.values())
    assert result.model_test_acc is not None and "layer 2" in result.description
    other = run(config.replace(batch_seed=1))
    assert not np.allclose(other.x, result.x)


def test_config_validation_and_summary():
    with pytest.raises(BnvizError, match="at least 2"):
        NormalizationMathConfig(batch_size=1)
    with pytest.raises(BnvizError, match="first_neuron"):
        NormalizationMathConfig(first_neuron=98)
    summary = EXPERIMENT.summarize(run(synthetic(batch_size=4)))
    assert summary["sum of dL/dx over the batch (max over neurons)"] < TOL
