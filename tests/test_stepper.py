"""The training stepper (play / pause / step) against a plain PyTorch loop and the trainer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.data import BatchSampler, class_subset, first_examples
from bnviz.errors import BnvizError
from bnviz.jobs import JobState
from bnviz.models import ModelConfig, build_model
from bnviz.stepper import StepperRegistry, TrainingStepper
from bnviz.train import Run, TrainConfig

MODEL = ModelConfig(hidden=(20, 20), activation="sigmoid", norm="batch")
TRAIN = TrainConfig(steps=40, batch_size=16, lr=0.5, seed=3, eval_every=10, eval_examples=100, train_examples=2000)
STEPS = 12


def plain_loop(data, steps: int) -> list[dict]:
    """The same seed, model and batches, trained by hand: per step, BN layer 0 and 1's input
    statistics over the batch, then its running estimates, gamma and beta (units 0-2)."""
    x_all, y_all = class_subset(data.train_x, data.train_y, TRAIN.classes)
    x_all, y_all = first_examples(x_all, y_all, TRAIN.train_examples, seed=TRAIN.seed)
    model = build_model(MODEL, TRAIN.seed, "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=TRAIN.lr)
    sampler = BatchSampler(len(y_all), TRAIN.batch_size, seed=TRAIN.seed + 1)
    norms = model.norm_layers()
    seen = {}
    for index, norm in enumerate(norms):
        norm.register_forward_pre_hook(lambda module, inputs, index=index: seen.__setitem__(index, inputs[0].detach()[:, :3].double()))
    out = []
    for _ in range(steps):
        indices = sampler.next_indices()
        x, y = x_all[indices], y_all[indices]
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        out.append({
            "loss": loss.item(),
            "batch_mean": np.stack([seen[i].mean(0).numpy() for i in range(len(norms))]),
            "batch_var": np.stack([seen[i].var(0, unbiased=False).numpy() for i in range(len(norms))]),
            "running_mean": np.stack([n.running_mean[:3].double().numpy() for n in norms]),
            "running_var": np.stack([n.running_var[:3].double().numpy() for n in norms]),
            "gamma": np.stack([n.weight[:3].detach().double().numpy() for n in norms]),
            "beta": np.stack([n.bias[:3].detach().double().numpy() for n in norms]),
        })
    return out


def test_each_step_equals_the_plain_loop_batch_by_batch(mnist):
    stepper = TrainingStepper(MODEL, TRAIN, mnist)
    assert stepper.status() is JobState.PAUSED and stepper.records == []
    first = stepper.step()  # one batch
    rest = stepper.step(STEPS - 1)
    records = first + rest
    assert [r.step for r in records] == list(range(1, STEPS + 1))
    expected = plain_loop(mnist, STEPS)
    for record, plain in zip(records, expected):
        assert record.loss == pytest.approx(plain["loss"], abs=1e-6)
        for field in ("batch_mean", "batch_var", "running_mean", "running_var", "gamma", "beta"):
            np.testing.assert_allclose(getattr(record, field), plain[field], atol=1e-6, err_msg=f"step {record.step}, {field}")
    # the numbers move from step to step (a frozen display would pass the test above trivially at step 1 only)
    assert not np.allclose(records[0].batch_mean, records[1].batch_mean)
    assert not np.allclose(records[0].gamma, records[-1].gamma)


def test_running_estimates_follow_pytorchs_update_from_the_batch_statistics(mnist):
    stepper = TrainingStepper(MODEL, TRAIN, mnist)
    records = stepper.step(5)
    momentum, m = 0.1, TRAIN.batch_size
    mean, var = np.zeros((2, 3)), np.ones((2, 3))
    for record in records:
        mean = (1 - momentum) * mean + momentum * record.batch_mean
        var = (1 - momentum) * var + momentum * record.batch_var * m / (m - 1)  # unbiased in the EMA
        np.testing.assert_allclose(record.running_mean, mean, atol=1e-6)
        np.testing.assert_allclose(record.running_var, var, atol=1e-5)


def test_stepping_to_the_end_matches_the_trainers_own_run_and_reset_starts_over(mnist):
    stepper = TrainingStepper(MODEL, TRAIN, mnist)
    stepper.playing = True
    while not stepper.done:
        stepper.step(7)
    assert stepper.status() is JobState.DONE and not stepper.playing and len(stepper.records) == TRAIN.steps
    trained = Run(MODEL, TRAIN, mnist)  # the trainer as experiments use it (its fast step where it has one)
    trained.advance(TRAIN.steps)
    for layer, norm in enumerate(trained.model.norm_layers()):
        np.testing.assert_allclose(stepper.records[-1].running_mean[layer], norm.running_mean[:3].double().numpy(), atol=1e-5)
        np.testing.assert_allclose(stepper.records[-1].gamma[layer], norm.weight[:3].detach().double().numpy(), atol=1e-5)
    stepper.reset()
    assert stepper.records == [] and stepper.status() is JobState.PAUSED
    again = stepper.step(1)
    np.testing.assert_array_equal(again[0].batch_mean, plain_loop(mnist, 1)[0]["batch_mean"])


def test_a_model_without_bn_is_refused_with_a_message(mnist):
    with pytest.raises(BnvizError, match="norm='batch'"):
        TrainingStepper(MODEL.replace(norm="none"), TRAIN, mnist)


def test_registry_keeps_paused_steppers_for_a_while_and_reclaims_them():
    clock = [0.0]
    registry = StepperRegistry(keep_seconds=60, max_steppers=2, clock=lambda: clock[0])
    made = []

    def make(name):
        return lambda: made.append(name) or name

    assert registry.get("a", make("a")) == "a" and registry.get("a", make("a2")) == "a" and made == ["a"]
    clock[0] = 30
    registry.get("b", make("b"))
    registry.get("c", make("c"))  # three kept at most two: the least recently touched (a) goes
    assert len(registry) == 2 and registry.get("a", make("a3")) == "a3"
    clock[0] = 200  # untouched for longer than keep_seconds: all reclaimed
    registry.get("d", make("d"))
    assert len(registry) == 1
