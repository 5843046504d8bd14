"""The straightforward PyTorch loop of ``benchmarks/bench_training.py`` and bnviz's trainer,
given the same initial weights and the same batches, produce the same losses (issue 11):
what the benchmark compares is the same work."""
import numpy as np
import pytest
import torch

from benchmarks.bench_training import sequential_model, straight_loop
from bnviz.data import BatchSampler
from bnviz.models import ModelConfig
from bnviz.train import Run, TrainConfig, train_together
from tests.test_engine import in_float64

STEPS = 200


CASES = [(ModelConfig(), torch.float32, "sgd"), (ModelConfig(norm="batch"), torch.float32, "sgd"),
         (ModelConfig(activation="relu", norm="batch", placement="after"), torch.float64, "sgd"), (ModelConfig(norm="layer"), torch.float32, "adam")]


@pytest.mark.parametrize("model_cfg, dtype, optimizer", CASES, ids=["no BN", "BN", "BN after relu (float64)", "LayerNorm, Adam"])
def test_loop_and_trainer_give_the_same_losses(mnist, model_cfg, dtype, optimizer):
    """bnviz trains through its accelerator (bnviz.engine) here. The ReLU net with BN
    after the activation is compared in float64: it is chaotic at lr 0.1, so float32
    rounding alone (the same sums in another order) grows to 1e-2 within ~35 steps."""
    seed = 3
    lr = 0.001 if optimizer == "adam" else 0.1
    train_cfg = TrainConfig(steps=STEPS, batch_size=60, lr=lr, optimizer=optimizer, seed=seed, eval_every=100, eval_examples=500)
    run = Run(model_cfg, train_cfg, mnist)
    assert run._accelerated()
    if dtype == torch.float64:
        in_float64(run)
    engine = train_together([run])[0].step_loss

    model = sequential_model(model_cfg, seed).to(dtype)
    sampler = BatchSampler(len(mnist.train_y), 60, seed=seed + 1)  # the trainer's batch order
    loop = np.asarray(straight_loop(model, mnist.train_x.to(dtype), mnist.train_y, sampler, STEPS, lr=lr, optimizer=optimizer), dtype=np.float32)

    assert engine.shape == loop.shape == (STEPS,)
    np.testing.assert_allclose(loop, engine, rtol=1e-5, atol=1e-6)
    assert loop[-20:].mean() < loop[:20].mean()  # it trained
    # and the weights after 200 steps agree too
    trained = [p.detach() for p in run.model.parameters()]
    for mine, theirs in zip(model.parameters(), trained):
        torch.testing.assert_close(mine.detach(), theirs, rtol=1e-4, atol=1e-5)
