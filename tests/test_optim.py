"""bnviz.optim against torch.optim: the same parameters and state, bit for bit, step after step."""
import pytest
import torch
from torch import nn

from bnviz import optim
from fresh_process import assert_prints_ok


def _model(seed: int, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.Sigmoid(), nn.Linear(16, 5)).to(dtype)


def _train(model: nn.Module, optimizer, steps: int, dtype) -> list[float]:
    generator = torch.Generator().manual_seed(7)
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 12, generator=generator, dtype=dtype)
        y = torch.randint(0, 5, (32,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


CASES = {
    "sgd": (lambda p: optim.SGD(p, lr=0.3), lambda p: torch.optim.SGD(p, lr=0.3, foreach=False)),
    "momentum": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=False)),
    "adam": (lambda p: optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False)),
    "adam betas eps": (lambda p: optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
                       lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, foreach=False)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", CASES)
def test_each_optimizer_trains_bit_for_bit_as_torch_optim(name, dtype):
    mine_factory, theirs_factory = CASES[name]
    mine_model, theirs_model = _model(0, dtype), _model(0, dtype)
    mine, theirs = mine_factory(mine_model.parameters()), theirs_factory(theirs_model.parameters())
    assert _train(mine_model, mine, 60, dtype) == _train(theirs_model, theirs, 60, dtype)
    for a, b in zip(mine_model.state_dict().values(), theirs_model.state_dict().values()):
        assert torch.equal(a, b)
    for p, q in zip(mine_model.parameters(), theirs_model.parameters()):  # the state too, under torch.optim's names
        assert mine.state[p].keys() == theirs.state[q].keys()
        for key, value in theirs.state[q].items():
            assert torch.equal(mine.state[p][key], value) and mine.state[p][key].dtype == value.dtype, key


def test_parameters_without_a_gradient_are_left_alone_and_zero_grad_clears():
    used, unused = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    optimizer = optim.Adam([used, unused], lr=0.1)
    (used * torch.tensor([1.0, -2.0, 3.0])).sum().backward()
    optimizer.step()
    assert torch.equal(unused, torch.ones(2)) and unused not in optimizer.state
    assert torch.allclose(used, torch.tensor([0.9, 1.1, 0.9]))  # Adam's first step moves each weight by lr against its gradient's sign
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(used.grad, torch.zeros(3))
    optimizer.zero_grad()
    assert used.grad is None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        optim.SGD([torch.zeros(1, requires_grad=True)], lr=-1.0)
    with pytest.raises(ValueError):
        optim.Adam([torch.zeros(1, requires_grad=True)], betas=(0.9, 1.0))
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)


def test_training_with_bnviz_does_not_import_the_compiler():
    """The reason bnviz.optim exists: any torch.optim optimizer imports torch._dynamo (71 MiB
    resident with CPU-only torch). A run with each optimiser, in a fresh process, leaves it out."""
    script = (
        "import sys\n"
        "from bnviz.models import ModelConfig\n"
        "from bnviz.train import Run, TrainConfig\n"
        "from bnviz.data import load_mnist\n"
        "data = load_mnist('cpu')\n"
        "for name in ('sgd', 'momentum', 'adam'):\n"
        "    Run(ModelConfig(hidden=(16,), norm='batch'), TrainConfig(steps=20, batch_size=16, optimizer=name, eval_every=10, eval_examples=100), data).advance(20)\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
        "print('ok')\n"
    )
    assert_prints_ok(script)
