"""The hand-written MLP step (bnviz.engine) gives autograd's numbers: losses, gradients,
weights and BN's running statistics, for every configuration it accepts (issue 11)."""
import numpy as np
import pytest
import torch

from bnviz.engine import MLPStep, engine_for
from bnviz.models import ModelConfig, build_model
from bnviz.recorders import BatchNormStats
from bnviz.train import Run, TrainConfig, train_together

CASES = {
    "no BN sigmoid": ModelConfig(),
    "BN sigmoid": ModelConfig(norm="batch"),
    "BN after relu": ModelConfig(norm="batch", activation="relu", placement="after"),
    "BN tanh, momentum None": ModelConfig(norm="batch", activation="tanh", bn_momentum=None, hidden=(32, 16)),
    "identity, N(0,1) init": ModelConfig(norm="batch", activation="identity", init="normal", hidden=(20,)),
    "relu no BN": ModelConfig(activation="relu", hidden=(64, 64)),
    "LayerNorm relu": ModelConfig(norm="layer", activation="relu", hidden=(48, 32)),
    "GroupNorm after tanh": ModelConfig(norm="group", groups=4, activation="tanh", placement="after", hidden=(32, 16)),
    "ghost BN of 4, momentum None": ModelConfig(norm="ghost_batch", ghost_batch_size=4, bn_momentum=None, hidden=(32, 16)),
    "ghost BN of 16 after tanh": ModelConfig(norm="ghost_batch", ghost_batch_size=16, activation="tanh", placement="after", hidden=(32,)),
    # limits relax from step 5 (plain BN before) to r_max 2 at step 40, d_max 1 at 25: every regime within a 60-step run
    "Batch Renorm, warm-up 5": ModelConfig(norm="batch_renorm", renorm_r_max=2.0, renorm_d_max=1.0, renorm_warmup_steps=5, hidden=(32, 16)),
    "Batch Renorm after relu, no warm-up": ModelConfig(norm="batch_renorm", renorm_r_max=1.5, renorm_d_max=0.5, renorm_warmup_steps=0, activation="relu", placement="after", hidden=(24,)),
}


def in_float64(run: Run) -> Run:
    """The same run in float64 (model, data, engine), for comparisons that float32's
    rounding would blur: a ReLU net with BN after the activation is chaotic at lr 0.1 (a
    unit with one active example in the batch has a tiny variance, so a 1e-7 difference
    can flip it), and float32 runs that agree to 1e-7 at step 1 differ by 1e-2 at step 35."""
    run.model.double()
    for name in ("train_x", "eval_x", "test_x"):
        setattr(run, name, getattr(run, name).double())
    if run.engine is not None:
        run.engine = engine_for(run.model, run.sampler.batch_size)
    return run


# the CNN: fused calls only (3x3 convolutions, 2x2 max-pools while the image is 4 or more wide: 28 -> 14 -> 7 -> 3)
CNN_CASES = {
    "CNN BN": ModelConfig(arch="cnn", hidden=(4, 8), norm="batch"),
    "CNN GroupNorm after relu": ModelConfig(arch="cnn", hidden=(4, 8, 8), norm="group", groups=2, activation="relu", placement="after"),
    "CNN LayerNorm tanh": ModelConfig(arch="cnn", hidden=(4, 6), norm="layer", activation="tanh"),
    "CNN no norm": ModelConfig(arch="cnn", hidden=(4,), activation="relu"),
}


@pytest.mark.parametrize("model_cfg", [*CASES.values(), *CNN_CASES.values()], ids=[*CASES.keys(), *CNN_CASES.keys()])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_engine_matches_autograd_over_a_run(mnist, model_cfg, optimizer):
    train_cfg = TrainConfig(steps=60, batch_size=60, lr=0.01 if optimizer == "adam" else 0.1, optimizer=optimizer, seed=2, eval_every=30, eval_examples=200)
    fast, slow = in_float64(Run(model_cfg, train_cfg, mnist)), in_float64(Run(model_cfg, train_cfg, mnist, use_engine=False))
    assert isinstance(fast.engine, MLPStep) and slow.engine is None
    fast_result, slow_result = train_together([fast, slow])
    assert not slow_result.diverged
    np.testing.assert_allclose(fast_result.step_loss, slow_result.step_loss, rtol=1e-6, atol=1e-7)  # step_loss is stored as float32
    np.testing.assert_allclose(fast_result.test_acc, slow_result.test_acc, atol=1e-9)
    np.testing.assert_allclose(fast_result.train_acc, slow_result.train_acc, atol=1e-9)
    for (name, mine), (_, theirs) in zip(fast.model.named_parameters(), slow.model.named_parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-9, msg=name)
        assert mine.grad is None  # the fused TorchScript step: forward, backward and update in one call, no .grad
        for key, value in slow.optimizer.state[theirs].items():  # the optimiser's state as torch.optim keeps it
            # (moments of gradients ~1e-3 that Batch Renorm's closed-form backward and autograd's op-by-op chain round differently)
            torch.testing.assert_close(fast.optimizer.state[mine][key], value, rtol=1e-6, atol=1e-10, msg=f"{key} of {name}")
    for (name, mine), (_, theirs) in zip(fast.model.named_buffers(), slow.model.named_buffers()):
        torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-10, msg=name)


@pytest.mark.parametrize("model_cfg", [CASES["no BN sigmoid"], CASES["BN sigmoid"]], ids=["no BN", "BN"])
def test_engine_matches_autograd_in_float32(mnist, model_cfg):
    """In float32 (what pages run), the paper's sigmoid nets agree to float tolerance over 200 steps."""
    train_cfg = TrainConfig(steps=200, batch_size=60, lr=0.1, seed=2, eval_every=100, eval_examples=200)
    fast, slow = train_together([Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist, use_engine=False)])
    np.testing.assert_allclose(fast.step_loss, slow.step_loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_cfg", CASES.values(), ids=CASES.keys())
def test_one_step_gradients_equal_autograd(model_cfg):
    torch.manual_seed(0)
    model, reference = build_model(model_cfg, seed=1), build_model(model_cfg, seed=1)
    x, y = torch.randn(9, 1, 28, 28), torch.randint(0, 10, (9,))
    engine = engine_for(model, 9)
    loss, _ = engine.forward(x, y)
    engine.backward()
    expected = torch.nn.functional.cross_entropy(reference(x), y)
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-6
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-7)
    for mine, theirs in zip(model.buffers(), reference.buffers()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "model_cfg, batch_size",
    [
        (ModelConfig(arch="rnn", hidden=(4,)), 8),
        (ModelConfig(arch="cnn", hidden=(4,), norm="instance"), 8),
        (ModelConfig(activation="gelu"), 8),
        (ModelConfig(norm="batch"), 1),  # BatchNorm1d's own error message for a batch of one
        (ModelConfig(norm="noisy_batch"), 8),
        (ModelConfig(norm="batch_renorm"), 1),
    ],
    ids=["rnn", "cnn instancenorm", "gelu", "BN batch of 1", "noisy BN", "batch renorm of 1"],
)
def test_engine_declines_what_it_does_not_cover(model_cfg, batch_size):
    assert engine_for(build_model(model_cfg, seed=0), batch_size) is None


def test_a_hook_that_replaces_an_output_is_refused(mnist):
    run = Run(ModelConfig(norm="batch"), TrainConfig(steps=5, eval_every=5, eval_examples=100), mnist)
    run.model.blocks[0].act.register_forward_hook(lambda module, inputs, output: output * 2)
    with pytest.raises(RuntimeError, match="replaced its output"):
        run.advance(1)


def test_runs_on_parallel_threads_give_the_same_results_as_in_sequence(mnist):
    """train_together's worker threads change the wall time, not one number."""
    train_cfg = TrainConfig(steps=40, batch_size=30, seed=5, eval_every=10, eval_examples=200)
    configs = [ModelConfig(), ModelConfig(norm="batch"), ModelConfig(norm="batch", placement="after", activation="relu"), ModelConfig(norm="layer")]
    seen = []
    parallel = train_together([Run(c, train_cfg, mnist) for c in configs], progress=lambda f, m, partial: seen.append((f, [len(p.step_loss) for p in partial])), threads=3)
    sequential = train_together([Run(c, train_cfg, mnist) for c in configs], threads=1)
    for a, b in zip(parallel, sequential):
        np.testing.assert_array_equal(a.step_loss, b.step_loss)
        np.testing.assert_array_equal(a.test_acc, b.test_acc)
        assert a.final_test_acc == b.final_test_acc
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(len(steps) == len(configs) for _, steps in seen)


@pytest.mark.parametrize("placement", ["before", "after"])
def test_recorders_with_forward_hooks_see_what_autograd_shows_them(mnist, placement):
    """Recorders that hook a forward pass (BN's batch statistics, the nonlinearity inputs,
    running averages of their own) record the same numbers through the engine."""
    from bnviz.recorders import ActivationDrift, NonlinearityInputs, ShadowRunningStats

    def recorders():
        return [BatchNormStats(block=1), ShadowRunningStats(block=0, momentum=None), ActivationDrift(block=1), NonlinearityInputs()]

    model_cfg = ModelConfig(norm="batch", placement=placement, activation="relu", hidden=(32, 32))
    train_cfg = TrainConfig(steps=30, batch_size=20, seed=4, eval_every=10, eval_examples=100)
    fast, slow = in_float64(Run(model_cfg, train_cfg, mnist, recorders())), in_float64(Run(model_cfg, train_cfg, mnist, recorders(), use_engine=False))
    assert fast.engine is not None and slow.engine is None
    fast_result, slow_result = train_together([fast, slow], threads=1)
    np.testing.assert_allclose(fast_result.step_loss, slow_result.step_loss, rtol=1e-6)
    assert fast_result.records.keys() == slow_result.records.keys() and fast_result.records
    for key in fast_result.records:
        np.testing.assert_allclose(np.asarray(fast_result.records[key], dtype=float), np.asarray(slow_result.records[key], dtype=float), rtol=1e-6, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("model_cfg", [CASES["no BN sigmoid"], CASES["BN sigmoid"], CASES["BN after relu"], CASES["BN tanh, momentum None"]], ids=["no BN", "BN", "BN after relu", "BN momentum None"])
def test_runs_that_differ_only_in_seed_train_as_one_stack(mnist, model_cfg):
    """Stacked (one batched model for all seeds) = each seed alone through autograd."""
    from bnviz.train import RunGroup, stack_groups

    seeds = (0, 1, 2)
    def runs(**kwargs):
        return [in_float64(Run(model_cfg, TrainConfig(steps=40, batch_size=30, seed=seed, eval_every=20, eval_examples=200), mnist, **kwargs)) for seed in seeds]

    stacked_runs, alone = runs(), runs(use_engine=False)
    units = stack_groups(stacked_runs)
    assert len(units) == 1 and isinstance(units[0], RunGroup)
    stacked = train_together(stacked_runs, threads=1)
    reference = train_together(alone, threads=1, stack=False)
    for mine, theirs, run_mine, run_theirs in zip(stacked, reference, stacked_runs, alone):
        np.testing.assert_allclose(mine.step_loss, theirs.step_loss, rtol=1e-6)
        np.testing.assert_allclose(mine.test_acc, theirs.test_acc, atol=1e-9)
        assert mine.final_test_acc == theirs.final_test_acc
        for (name, a), (_, b) in zip(run_mine.model.state_dict().items(), run_theirs.model.state_dict().items()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)  # BN after ReLU: a near-dead unit amplifies float64 rounding to ~1e-7


def test_a_diverging_seed_stops_alone_inside_a_stack(mnist):
    """N(0,1)-initialised ReLU nets at lr 5 blow up; in a stack each stops at the step, with
    the weights, it would alone, and the others go on."""
    model_cfg = ModelConfig(activation="relu", init="normal", hidden=(50, 50))
    stacked = train_together([Run(model_cfg, TrainConfig(steps=30, batch_size=30, lr=5.0, seed=s, eval_every=10, eval_examples=200), mnist) for s in (0, 1, 2)], threads=1)
    alone = train_together([Run(model_cfg, TrainConfig(steps=30, batch_size=30, lr=5.0, seed=s, eval_every=10, eval_examples=200), mnist, use_engine=False) for s in (0, 1, 2)], threads=1, stack=False)
    assert any(r.diverged for r in alone), "the setting should make at least one seed diverge"
    for mine, theirs in zip(stacked, alone):
        assert mine.diverged == theirs.diverged and mine.diverged_step == theirs.diverged_step
        assert len(mine.step_loss) == len(theirs.step_loss)
        assert mine.final_test_acc == pytest.approx(theirs.final_test_acc, abs=0.01)


def test_without_torchscript_the_python_step_gives_the_same_run(mnist, monkeypatch):
    """The fused TorchScript step and the Python step (used when scripting is unavailable,
    or ``BNVIZ_TORCHSCRIPT=0``) train the same numbers."""
    import bnviz.engine

    model_cfg, train_cfg = ModelConfig(norm="batch", hidden=(64, 32)), TrainConfig(steps=50, batch_size=40, seed=7, eval_every=25, eval_examples=200)
    fused = in_float64(Run(model_cfg, train_cfg, mnist))
    fused_result = train_together([fused], threads=1)[0]
    assert all(p.grad is None for p in fused.model.parameters())  # the fused step ran
    monkeypatch.setattr(bnviz.engine, "scripted_step", lambda: None)
    python = in_float64(Run(model_cfg, train_cfg, mnist))
    python_result = train_together([python], threads=1)[0]
    assert all(p.grad is not None for p in python.model.parameters())  # the Python step ran
    np.testing.assert_allclose(fused_result.step_loss, python_result.step_loss, rtol=1e-6)
    for (name, a), (_, b) in zip(fused.model.state_dict().items(), python.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


def test_without_torchscript_the_python_stack_gives_the_same_runs(mnist, monkeypatch):
    """Without TorchScript the stacked step is the same function, run by Python."""
    import bnviz.engine

    def stacked_runs():
        runs = [in_float64(Run(ModelConfig(norm="batch", placement="after", activation="tanh", hidden=(32,)), TrainConfig(steps=30, batch_size=20, seed=s, eval_every=15, eval_examples=100), mnist)) for s in (0, 1)]
        return runs, train_together(runs, threads=1)

    fused_runs, fused = stacked_runs()
    monkeypatch.setattr(bnviz.engine, "scripted_stacked_step", lambda: None)
    monkeypatch.setattr(bnviz.engine, "scripted_stacked_steps", lambda: None)
    python_runs, python = stacked_runs()
    for a, b, run_a, run_b in zip(fused, python, fused_runs, python_runs):
        np.testing.assert_allclose(a.step_loss, b.step_loss, rtol=1e-6)
        np.testing.assert_allclose(a.train_acc, b.train_acc, atol=1e-9)
        for (name, p), (_, q) in zip(run_a.model.state_dict().items(), run_b.model.state_dict().items()):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "group", "ghost_batch", "batch_renorm"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fused_and_python_steps_agree_bit_for_bit(mnist, monkeypatch, norm, optimizer):
    """A run whose recorders read gradients takes the Python step (and ``optimizer.step()``);
    the same run without them takes the fused one. They must not drift apart, not even by
    one ulp (probes' 'leave no trace' tests compare such runs with torch.equal)."""
    import bnviz.engine

    model_cfg = ModelConfig(norm=norm, hidden=(32, 32), ghost_batch_size=6, renorm_warmup_steps=4)
    train_cfg = TrainConfig(steps=20, batch_size=16, lr=0.003 if optimizer == "adam" else 0.1, optimizer=optimizer, seed=0, eval_every=10, eval_examples=100)
    fused = Run(model_cfg, train_cfg, mnist)
    fused.advance(20)
    assert all(p.grad is None for p in fused.model.parameters())  # the fused step ran
    monkeypatch.setattr(bnviz.engine, "scripted_step", lambda: None)
    python = Run(model_cfg, train_cfg, mnist)
    python.advance(20)
    assert all(p.grad is not None for p in python.model.parameters())  # the Python step ran
    assert fused.step_loss == python.step_loss
    state_equal(fused.model, python.model)
    for a, b in zip(fused.model.parameters(), python.model.parameters()):
        assert fused.optimizer.state[a].keys() == python.optimizer.state[b].keys()
        for key, value in python.optimizer.state[b].items():
            assert torch.equal(fused.optimizer.state[a][key], value), key


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_a_run_can_switch_between_fused_and_python_steps(mnist, optimizer):
    """Both paths keep torch.optim's state, so a run that takes the Python step for a while
    (a probe watching a forward pass) goes on as if it had never left either path."""
    model_cfg = ModelConfig(norm="batch", hidden=(32, 32))
    train_cfg = TrainConfig(steps=30, batch_size=16, lr=0.003 if optimizer == "adam" else 0.1, optimizer=optimizer, seed=1, eval_every=30, eval_examples=100)
    mixed, fused = Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist)
    mixed.advance(10)
    handle = mixed.model.blocks[0].norm.register_forward_hook(lambda *args: None)  # the Python path for 10 steps
    mixed.advance(10)
    handle.remove()
    mixed.advance(10)
    fused.advance(30)
    assert mixed.step_loss == fused.step_loss
    state_equal(mixed.model, fused.model)


def uint8_and_float_stores(mnist):
    """The training images as the app holds them: uint8 pixels standardised per batch, or a float copy."""
    from bnviz.data import MNIST, StandardisedImages

    return {store: MNIST(StandardisedImages(mnist.train_x.pixels, float_copy=store == "float"), mnist.train_y, mnist.test_x, mnist.test_y) for store in ("uint8", "float")}


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Bit for bit (a NaN equals a NaN)."""
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.mark.parametrize("store", ["uint8", "float"])
@pytest.mark.parametrize("model_cfg", [CASES["no BN sigmoid"], CASES["BN after relu"], CASES["BN tanh, momentum None"], CASES["LayerNorm relu"]], ids=["no BN", "BN after relu", "BN momentum None", "LayerNorm"])
def test_many_steps_in_one_call_equal_one_call_per_step(mnist, model_cfg, store):
    """Up to each evaluation the steps run as one engine call that gathers its own batches
    (from uint8 pixels or the float copy); bit for bit the run one call per step gives."""
    data = uint8_and_float_stores(mnist)[store]
    train_cfg = TrainConfig(steps=45, batch_size=24, seed=3, eval_every=20, eval_examples=100)
    chunked, stepwise = Run(model_cfg, train_cfg, data), Run(model_cfg, train_cfg, data)
    stepwise._chunkable = False
    calls = []
    original = chunked._advance_fused
    chunked._advance_fused = lambda steps: calls.append(steps) or original(steps)
    for run in (chunked, stepwise):
        run.advance(30)  # two chunks: to the evaluation at 20, then 10 more
        run.advance(100)
    assert calls == [20, 10, 10, 5]
    a, b = chunked.result(), stepwise.result()
    assert a.step_loss.tolist() == b.step_loss.tolist() and len(a.step_loss) == 45
    np.testing.assert_array_equal(a.train_acc, b.train_acc)  # step 0's is NaN: no step yet
    assert a.test_acc.tolist() == b.test_acc.tolist()
    assert a.eval_step.tolist() == [0, 20, 40, 45]
    state_equal(chunked.model, stepwise.model)


@pytest.mark.parametrize("policy", ["stop", "skip", "rollback"])
def test_non_finite_losses_inside_a_call_are_handled_as_step_by_step(mnist, policy):
    """N(0,1)-initialised ReLU nets at lr 5 (no BN) or 10 (BN after ReLU) blow up. The trainer's ``on_nonfinite_loss``:
    "stop" ends the run there; "skip" and "rollback" skip the update and go on (rollback also
    restores BN's running statistics). One call per chunk records what one per step does."""
    model_cfg = ModelConfig(activation="relu", init="normal", hidden=(50, 50), norm="none" if policy == "stop" else "batch", placement="after")
    train_cfg = TrainConfig(steps=30, batch_size=30, lr=5.0 if policy == "stop" else 10.0, seed=0, eval_every=20, eval_examples=100, on_nonfinite_loss=policy)
    chunked, stepwise = Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist)
    stepwise._chunkable = False
    for run in (chunked, stepwise):
        run.advance(30)
    a, b = chunked.result(), stepwise.result()
    if policy == "stop":
        assert a.diverged and a.diverged_step == b.diverged_step < 20
    else:
        assert not a.diverged and len(a.step_loss) == 30 and len(b.skipped_steps) > 0
        assert a.skipped_steps.tolist() == b.skipped_steps.tolist()
    np.testing.assert_array_equal(a.step_loss, b.step_loss)
    np.testing.assert_array_equal(a.train_acc, b.train_acc)
    np.testing.assert_array_equal(a.test_acc, b.test_acc)
    state_equal(chunked.model, stepwise.model)


def test_a_stack_gathers_its_batches_in_one_call_as_it_would_step_by_step(mnist):
    """The stacked many-step call from uint8 pixels = its one-step-per-call path."""
    from bnviz.train import RunGroup

    data = uint8_and_float_stores(mnist)["uint8"]
    def group():
        return RunGroup([Run(ModelConfig(norm="batch", hidden=(32, 32)), TrainConfig(steps=25, batch_size=20, seed=s, eval_every=10, eval_examples=100), data) for s in (0, 1, 2)])

    chunked, stepwise = group(), group()
    stepwise._shared_data = False  # one gather per run and step, as for runs with their own data
    chunked.advance(25), stepwise.advance(25)
    for a, b in zip(chunked.runs, stepwise.runs):
        assert a.result().step_loss.tolist() == b.result().step_loss.tolist()
        np.testing.assert_array_equal(a.result().train_acc, b.result().train_acc)
        state_equal(a.model, b.model)


def test_a_cnn_with_a_hook_trains_through_autograd(mnist):
    """The CNN has no Python step: with a forward hook on it, the run takes autograd's path."""
    model_cfg, train_cfg = CNN_CASES["CNN BN"], TrainConfig(steps=6, batch_size=20, seed=0, eval_every=3, eval_examples=100)
    hooked, plain = Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist, use_engine=False)
    seen = []
    hooked.model.blocks[0].norm.register_forward_hook(lambda module, inputs, output: seen.append(module.training))
    hooked.advance(6), plain.advance(6)
    assert seen.count(True) == 6 and all(p.grad is not None for p in hooked.model.parameters())
    np.testing.assert_allclose(hooked.step_loss, plain.step_loss, rtol=1e-5)


def test_the_fused_functions_compile():
    """A scripting error would silently send every run down the slower Python path."""
    import os

    from bnviz.engine import _compile, _fused_stacked_sgd_steps, _fused_step, _fused_steps

    if os.environ.get("BNVIZ_TORCHSCRIPT") == "0":
        pytest.skip("TorchScript switched off")

    for function in (_fused_step, _fused_steps, _fused_stacked_sgd_steps):
        assert _compile(function) is not None, function.__name__
