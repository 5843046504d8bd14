"""The accelerator (bnviz.engine) and the stacked seeds (bnviz.stacking) give the plain
step's numbers: losses, weights, the optimiser's state and BN's running statistics, for
every configuration they accept (issues 11, 23)."""
import numpy as np
import pytest
import torch

from bnviz import engine, optim
from bnviz.models import ModelConfig, build_model
from bnviz.recorders import BatchNormStats
from bnviz.train import Run, RunGroup, TrainConfig, stack_groups, train_together

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
# the CNN: 3x3 convolutions, 2x2 max-pools while the image is 4 or more wide: 28 -> 14 -> 7 -> 3
CNN_CASES = {
    "CNN BN": ModelConfig(arch="cnn", hidden=(4, 8), norm="batch"),
    "CNN GroupNorm after relu": ModelConfig(arch="cnn", hidden=(4, 8, 8), norm="group", groups=2, activation="relu", placement="after"),
    "CNN LayerNorm tanh": ModelConfig(arch="cnn", hidden=(4, 6), norm="layer", activation="tanh"),
    "CNN no norm": ModelConfig(arch="cnn", hidden=(4,), activation="relu"),
}


def in_float64(run: Run) -> Run:
    """The same run in float64 (model and data), for comparisons that float32's rounding
    would blur: a ReLU net with BN after the activation is chaotic at lr 0.1 (a unit with one
    active example in the batch has a tiny variance, so a 1e-7 difference can flip it), and
    float32 runs that agree to 1e-7 at step 1 differ by 1e-2 at step 35."""
    run.model.double()
    for name in ("train_x", "eval_x", "test_x"):
        setattr(run, name, getattr(run, name).double())
    return run


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Bit for bit (a NaN equals a NaN)."""
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, equal_nan=True, msg=name)


def accelerated(run: Run) -> bool:
    return run._accelerated()


@pytest.mark.parametrize("model_cfg", [*CASES.values(), *CNN_CASES.values()], ids=[*CASES.keys(), *CNN_CASES.keys()])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_the_accelerator_matches_the_plain_step_over_a_run(mnist, model_cfg, optimizer):
    train_cfg = TrainConfig(steps=60, batch_size=60, lr=0.01 if optimizer == "adam" else 0.1, optimizer=optimizer, seed=2, eval_every=30, eval_examples=200)
    fast, slow = in_float64(Run(model_cfg, train_cfg, mnist)), in_float64(Run(model_cfg, train_cfg, mnist, accelerate=False))
    assert accelerated(fast) and not accelerated(slow)
    fast_result, slow_result = train_together([fast, slow])
    assert not slow_result.diverged
    np.testing.assert_allclose(fast_result.step_loss, slow_result.step_loss, rtol=1e-6, atol=1e-7)  # step_loss is stored as float32
    np.testing.assert_allclose(fast_result.test_acc, slow_result.test_acc, atol=1e-9)
    np.testing.assert_allclose(fast_result.train_acc, slow_result.train_acc, atol=1e-9)
    for (name, mine), (_, theirs) in zip(fast.model.named_parameters(), slow.model.named_parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-9, msg=name)
        assert mine.grad is None  # the accelerator: forward, backward and update in one call, no .grad
        assert fast.optimizer.state[mine].keys() == slow.optimizer.state[theirs].keys()
        for key, value in slow.optimizer.state[theirs].items():  # the optimiser's state as torch.optim keeps it
            # (moments of gradients ~1e-3 that Batch Renorm's closed-form backward and autograd's op-by-op chain round differently)
            torch.testing.assert_close(fast.optimizer.state[mine][key], value, rtol=1e-6, atol=1e-10, msg=f"{key} of {name}")
    for (name, mine), (_, theirs) in zip(fast.model.named_buffers(), slow.model.named_buffers()):
        torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-10, msg=name)


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "group", "ghost_batch"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_the_accelerator_and_the_plain_step_agree_bit_for_bit(mnist, norm, optimizer):
    """A run whose recorders read gradients takes the plain step; the same run without them
    the accelerator. They must not drift apart, not even by one ulp (probes' 'leave no trace'
    tests compare such runs with torch.equal). (Batch Renorm agrees to rounding only: its
    closed-form backward, above.)"""
    model_cfg = ModelConfig(norm=norm, hidden=(32, 32), ghost_batch_size=6)
    train_cfg = TrainConfig(steps=20, batch_size=16, lr=0.003 if optimizer == "adam" else 0.1, optimizer=optimizer, seed=0, eval_every=10, eval_examples=100)
    fast, plain = Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist, accelerate=False)
    fast.advance(20), plain.advance(20)
    assert all(p.grad is None for p in fast.model.parameters()) and all(p.grad is not None for p in plain.model.parameters())
    assert fast.step_loss == plain.step_loss
    state_equal(fast.model, plain.model)
    for a, b in zip(fast.model.parameters(), plain.model.parameters()):
        assert fast.optimizer.state[a].keys() == plain.optimizer.state[b].keys()
        for key, value in plain.optimizer.state[b].items():
            assert torch.equal(fast.optimizer.state[a][key], value), key


@pytest.mark.parametrize("model_cfg", [CASES["no BN sigmoid"], CASES["BN sigmoid"]], ids=["no BN", "BN"])
def test_the_accelerator_matches_the_plain_step_in_float32(mnist, model_cfg):
    """In float32 (what pages run), the paper's sigmoid nets agree over 200 steps."""
    train_cfg = TrainConfig(steps=200, batch_size=60, lr=0.1, seed=2, eval_every=100, eval_examples=200)
    fast, slow = train_together([Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist, accelerate=False)])
    np.testing.assert_allclose(fast.step_loss, slow.step_loss, rtol=1e-5, atol=1e-6)


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
def test_the_accelerator_declines_what_it_does_not_cover(model_cfg, batch_size):
    model = build_model(model_cfg, seed=0)
    assert not engine.can_run(model, optim.SGD(model.parameters(), lr=0.1), batch_size)


def test_the_accelerator_declines_other_optimisers_and_frozen_weights():
    model = build_model(ModelConfig(norm="batch"), seed=0)
    for covered in (optim.SGD(model.parameters(), lr=0.1), optim.SGD(model.parameters(), lr=0.1, momentum=0.9), optim.Adam(model.parameters())):
        assert engine.can_run(model, covered, 8)
    assert not engine.can_run(model, torch.optim.SGD(model.parameters(), lr=0.1), 8)  # not bnviz.optim's: its settings could be any
    assert not engine.can_run(model, optim.SGD(list(model.parameters())[:-1], lr=0.1), 8)  # not every parameter
    model.head.bias.requires_grad_(False)
    assert not engine.can_run(model, optim.SGD(model.parameters(), lr=0.1), 8)


def test_a_hook_on_the_model_sends_the_run_to_the_plain_step(mnist):
    """The accelerator cannot call hooks: with one on the model (here a hook that changes the
    output), the run takes the plain step, and the hook acts as it would in any loop."""
    model_cfg, train_cfg = ModelConfig(norm="batch", hidden=(32,)), TrainConfig(steps=6, batch_size=20, seed=0, eval_every=3, eval_examples=100)
    hooked, plain = Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist, accelerate=False)
    for run in (hooked, plain):
        run.model.blocks[0].act.register_forward_hook(lambda module, inputs, output: output * 2)
    assert not accelerated(hooked)
    hooked.advance(6), plain.advance(6)
    assert hooked.step_loss == plain.step_loss
    assert all(p.grad is not None for p in hooked.model.parameters())


def test_the_accelerator_leaves_torchscripts_executor_setting_as_it_found_it(mnist):
    run = Run(ModelConfig(norm="batch", hidden=(16,)), TrainConfig(steps=4, batch_size=8, eval_every=4, eval_examples=100), mnist)
    before = torch._C._get_graph_executor_optimize()
    run.advance(4)
    assert accelerated(run) and torch._C._get_graph_executor_optimize() == before


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
def test_recorders_that_watch_training_see_every_step(mnist, placement):
    """Recorders that hook a training forward pass (BN's batch statistics, the nonlinearity
    inputs, running averages of their own) take the plain step, and record what they record
    on a run that is never accelerated."""
    from bnviz.recorders import ActivationDrift, NonlinearityInputs, ShadowRunningStats

    def recorders():
        return [BatchNormStats(block=1), ShadowRunningStats(block=0, momentum=None), ActivationDrift(block=1), NonlinearityInputs()]

    model_cfg = ModelConfig(norm="batch", placement=placement, activation="relu", hidden=(32, 32))
    train_cfg = TrainConfig(steps=30, batch_size=20, seed=4, eval_every=10, eval_examples=100)
    watched, plain = Run(model_cfg, train_cfg, mnist, recorders()), Run(model_cfg, train_cfg, mnist, recorders(), accelerate=False)
    assert watched.steps_in_python and not accelerated(watched)
    a, b = train_together([watched, plain], threads=1)
    assert a.step_loss.tolist() == b.step_loss.tolist() and a.records.keys() == b.records.keys() and a.records
    for key in a.records:
        np.testing.assert_array_equal(np.asarray(a.records[key], dtype=float), np.asarray(b.records[key], dtype=float), err_msg=key)


def test_evaluation_only_recorders_keep_the_accelerator(mnist):
    """NonlinearityInputs hooks evaluation passes only: training stays accelerated, with the
    records a plain run gives."""
    from bnviz.recorders import NonlinearityInputs, UnitPercentiles

    model_cfg, train_cfg = ModelConfig(norm="batch", hidden=(32, 32)), TrainConfig(steps=30, batch_size=20, seed=4, eval_every=10, eval_examples=100)
    fast = Run(model_cfg, train_cfg, mnist, [NonlinearityInputs(), UnitPercentiles()])
    plain = Run(model_cfg, train_cfg, mnist, [NonlinearityInputs(), UnitPercentiles()], accelerate=False)
    assert not fast.steps_in_python and accelerated(fast)
    a, b = train_together([fast, plain], threads=1)
    for key in a.records:
        np.testing.assert_array_equal(np.asarray(a.records[key], dtype=float), np.asarray(b.records[key], dtype=float), err_msg=key)


STACK_CASES = {"no BN": CASES["no BN sigmoid"], "BN": CASES["BN sigmoid"], "BN after relu": CASES["BN after relu"], "identity, N(0,1) init": CASES["identity, N(0,1) init"],
               "LayerNorm": CASES["LayerNorm relu"], "GroupNorm": CASES["GroupNorm after tanh"], "CNN BN": ModelConfig(arch="cnn", hidden=(4,), norm="batch")}


def test_what_cannot_be_stacked_trains_alone(mnist):
    """BN's cumulative average (momentum None), ghost BN, an optimiser other than plain SGD."""
    def runs(model_cfg, **train):
        return [Run(model_cfg, TrainConfig(steps=4, batch_size=8, seed=s, eval_every=4, eval_examples=100, **train), mnist) for s in (0, 1)]

    for group in (runs(CASES["BN tanh, momentum None"]), runs(CASES["ghost BN of 4, momentum None"]), runs(CASES["BN sigmoid"], optimizer="adam")):
        assert stack_groups(group) == group
    assert isinstance(stack_groups(runs(CASES["BN sigmoid"]))[0], RunGroup)


@pytest.mark.parametrize("model_cfg", STACK_CASES.values(), ids=STACK_CASES.keys())
def test_runs_that_differ_only_in_seed_train_as_one_stack(mnist, model_cfg):
    """Stacked by torch.func (one batched model for all seeds) = each seed alone, the plain way."""
    seeds = (0, 1, 2)

    def runs(**kwargs):
        return [in_float64(Run(model_cfg, TrainConfig(steps=24, batch_size=30, seed=seed, eval_every=12, eval_examples=200), mnist, **kwargs)) for seed in seeds]

    stacked_runs, alone = runs(), runs(accelerate=False)
    units = stack_groups(stacked_runs)
    assert len(units) == 1 and isinstance(units[0], RunGroup)
    stacked = train_together(stacked_runs, threads=1, stack=True)
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

    def runs(**kwargs):
        return [in_float64(Run(model_cfg, TrainConfig(steps=30, batch_size=30, lr=5.0, seed=s, eval_every=10, eval_examples=200), mnist, **kwargs)) for s in (0, 1, 2)]

    stacked_runs, alone_runs = runs(), runs(accelerate=False)
    stacked = train_together(stacked_runs, threads=1, stack=True)
    alone = train_together(alone_runs, threads=1, stack=False)
    assert any(r.diverged for r in alone) and not all(r.diverged for r in alone), "the setting should make some seeds diverge"
    for mine, theirs, run_mine, run_theirs in zip(stacked, alone, stacked_runs, alone_runs):
        assert mine.diverged == theirs.diverged and mine.diverged_step == theirs.diverged_step
        np.testing.assert_allclose(mine.step_loss, theirs.step_loss, rtol=1e-5)
        for (name, a), (_, b) in zip(run_mine.model.state_dict().items(), run_theirs.model.state_dict().items()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)


def uint8_and_float_stores(mnist):
    """The training images as the app holds them: uint8 pixels standardised per batch, or a float copy."""
    from bnviz.data import MNIST, StandardisedImages

    return {store: MNIST(StandardisedImages(mnist.train_x.pixels, float_copy=store == "float"), mnist.train_y, mnist.test_x, mnist.test_y) for store in ("uint8", "float")}


@pytest.mark.parametrize("store", ["uint8", "float"])
@pytest.mark.parametrize("model_cfg", [CASES["no BN sigmoid"], CASES["BN after relu"], CASES["BN tanh, momentum None"], CASES["LayerNorm relu"]], ids=["no BN", "BN after relu", "BN momentum None", "LayerNorm"])
def test_many_steps_in_one_call_equal_the_plain_run(mnist, model_cfg, store):
    """Up to each evaluation the steps run as one accelerator call on batches gathered at once
    (from uint8 pixels or the float copy); bit for bit the plain run."""
    data = uint8_and_float_stores(mnist)[store]
    train_cfg = TrainConfig(steps=45, batch_size=24, seed=3, eval_every=20, eval_examples=100)
    chunked, plain = Run(model_cfg, train_cfg, data), Run(model_cfg, train_cfg, data, accelerate=False)
    calls = []
    original = chunked._accelerated_steps
    chunked._accelerated_steps = lambda steps: calls.append(steps) or original(steps)
    for run in (chunked, plain):
        run.advance(30)  # two chunks: to the evaluation at 20, then 10 more
        run.advance(100)
    assert calls == [20, 10, 10, 5]
    a, b = chunked.result(), plain.result()
    assert a.step_loss.tolist() == b.step_loss.tolist() and len(a.step_loss) == 45
    np.testing.assert_array_equal(a.train_acc, b.train_acc)  # step 0's is NaN: no step yet
    assert a.test_acc.tolist() == b.test_acc.tolist()
    assert a.eval_step.tolist() == [0, 20, 40, 45]
    state_equal(chunked.model, plain.model)


@pytest.mark.parametrize("policy", ["stop", "skip", "rollback"])
def test_non_finite_losses_inside_a_call_are_handled_as_on_the_plain_path(mnist, policy):
    """N(0,1)-initialised ReLU nets at lr 5 (no BN) or 10 (BN after ReLU) blow up. The trainer's ``on_nonfinite_loss``:
    "stop" ends the run there; "skip" and "rollback" skip the update and go on (rollback also
    restores BN's running statistics, on the plain path). The accelerated run records what the plain one does."""
    model_cfg = ModelConfig(activation="relu", init="normal", hidden=(50, 50), norm="none" if policy == "stop" else "batch", placement="after")
    train_cfg = TrainConfig(steps=30, batch_size=30, lr=5.0 if policy == "stop" else 10.0, seed=0, eval_every=20, eval_examples=100, on_nonfinite_loss=policy)
    fast, plain = Run(model_cfg, train_cfg, mnist), Run(model_cfg, train_cfg, mnist, accelerate=False)
    assert accelerated(fast) == (policy != "rollback")
    for run in (fast, plain):
        run.advance(30)
    a, b = fast.result(), plain.result()
    if policy == "stop":
        assert a.diverged and a.diverged_step == b.diverged_step < 20
    else:
        assert not a.diverged and len(a.step_loss) == 30 and len(b.skipped_steps) > 0
        assert a.skipped_steps.tolist() == b.skipped_steps.tolist()
    np.testing.assert_array_equal(a.step_loss, b.step_loss)
    np.testing.assert_array_equal(a.train_acc, b.train_acc)
    np.testing.assert_array_equal(a.test_acc, b.test_acc)
    state_equal(fast.model, plain.model)


def test_a_stack_gathers_its_batches_in_one_call_as_it_would_one_by_one(mnist):
    """A stack reading one shared uint8 store = the same stack gathering each run's batch alone."""
    data = uint8_and_float_stores(mnist)["uint8"]

    def group():
        return RunGroup([Run(ModelConfig(norm="batch", hidden=(32, 32)), TrainConfig(steps=25, batch_size=20, seed=s, eval_every=10, eval_examples=100), data) for s in (0, 1, 2)])

    shared, separate = group(), group()
    separate._shared_data = False  # one gather per run and step, as for runs with their own data
    shared.advance(25), separate.advance(25)
    for a, b in zip(shared.runs, separate.runs):
        assert a.result().step_loss.tolist() == b.result().step_loss.tolist()
        np.testing.assert_array_equal(a.result().train_acc, b.result().train_acc)
        state_equal(a.model, b.model)


def test_the_accelerator_compiles():
    """A scripting error would silently send every run down the slower plain path."""
    assert engine._compile(engine._fused_steps) is not None
