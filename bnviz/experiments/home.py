"""The 30-second idea: the same small MLP trained with and without BN on MNIST."""
from __future__ import annotations

from dataclasses import dataclass

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import ModelConfig
from ..results import Comparison
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, pick_device, train_together
from . import Experiment


@dataclass(frozen=True)
class HomeConfig(Config):
    """Sigmoid MLP, plain SGD: the setting where BN's head start is plainest.

    lr 0.1 is one both models can use; BN tolerates much larger ones (see the
    paper page). 600 steps of 60 examples is 0.6 epochs: seconds on a CPU.
    """

    hidden: tuple[int, ...] = (100, 100)
    activation: str = "sigmoid"
    steps: int = 600
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = 0.1
    seed: int = 0
    eval_every: int = 25

    def __post_init__(self):
        check(1 <= len(self.hidden) <= 6, "Choose 1 to 6 hidden layers.")
        check(10 <= self.steps <= 20_000, "steps must be between 10 and 20,000.")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.models(), self.train_config()
        check_view_cost(self, "fewer steps")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        return training_cost((model, self.train_config()) for model in self.models())

    def models(self) -> list[ModelConfig]:
        base = ModelConfig(hidden=self.hidden, activation=self.activation)
        return [base, base.replace(norm="batch")]

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed, eval_every=self.eval_every)


def run(config: HomeConfig, progress: ProgressFn | None = None) -> Comparison:
    data = load_mnist(str(pick_device()))
    runs = [Run(model, config.train_config(), data) for model in config.models()]
    return Comparison(train_together(runs, progress))


def summarize(result: Comparison) -> dict:
    return result.summary()


EXPERIMENT = Experiment(
    name="home",
    title="BN in 30 seconds: the same MLP with and without BN",
    summary="A small sigmoid MLP trained on MNIST with and without batch normalization; loss and accuracy curves.",
    config_type=HomeConfig,
    run=run,
    order=0,
    presets={
        "ReLU network": HomeConfig(activation="relu"),
        "Large learning rate (1.0)": HomeConfig(lr=1.0),
        "Small learning rate (0.01)": HomeConfig(lr=0.01),
    },
    summarize=summarize,
)
