"""MLPs, small CNNs and small recurrent networks built from one frozen :class:`ModelConfig`.

Each hidden block is ``linear -> norm -> activation`` (BN *before* the
nonlinearity, as in Ioffe & Szegedy 2015) or ``linear -> activation -> norm``
(*after*). Blocks are kept in ``model.blocks`` so recorders can hook the input
of each nonlinearity (``block.act``) and each norm layer (``block.norm``).
The recurrent net (``arch="rnn"``) reads the image row by row (sequential
MNIST: 28 steps of 28 pixels); its blocks are :class:`RecurrentBlock`.
Torch's own norm layers are used for speed; :mod:`bnviz.norms` holds the
step-by-step versions that the tests hold equal to them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import Config, check
from .data import IMAGE_SHAPE, NUM_CLASSES
from .norms import PYTORCH_DEFAULT_EPS, PYTORCH_DEFAULT_MOMENTUM, RMSNorm
from .renorm import PAPER_D_MAX, PAPER_R_MAX, PAPER_WARMUP_STEPS, BatchRenorm1d, BatchRenorm2d, GhostBatchNorm1d, GhostBatchNorm2d

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}
NORMS = ("none", "batch", "layer", "group", "instance")
# Santurkar et al. 2018's noisy BN, and the same noise with no normalisation (for contrast)
NORMS += ("noisy_batch", "noise")
# Batch Renorm (Ioffe 2017) and ghost BN (Hoffer et al. 2017): bnviz.renorm
NORMS += ("batch_renorm", "ghost_batch")
NORMS += ("rms",)  # RMSNorm (Zhang & Sennrich 2019): bnviz.norms.RMSNorm
PLACEMENTS = ("before", "after")
INITS = ("default", "normal")
ARCHS = ("mlp", "cnn", "rnn")

# The paper's MNIST network: 3 fully connected hidden layers of 100 sigmoid
# units (Ioffe & Szegedy 2015, Sec. 4.1).
PAPER_HIDDEN = (100, 100, 100)


@dataclass(frozen=True)
class ModelConfig(Config):
    """Everything a model depends on.

    ``hidden``: widths of the hidden layers (MLP), conv channels (CNN) or
    stacked recurrent layers' state sizes (RNN).
    ``init``: "default" is PyTorch's; "normal" draws every weight from
    N(0, ``init_std``²) and zeroes biases: ``init_std`` 1 is the article's
    notebook (it saturates sigmoids), a small ``init_std`` is the paper's
    "small random Gaussian values" (Ioffe & Szegedy 2015, Sec. 4.1).
    ``bn_momentum`` follows PyTorch (weight of the new batch; None = cumulative
    average). ``groups`` is GroupNorm's number of groups.
    """

    arch: str = "mlp"
    hidden: tuple[int, ...] = PAPER_HIDDEN
    activation: str = "sigmoid"
    norm: str = "none"
    placement: str = "before"
    init: str = "default"
    init_std: float = 1.0  # init="normal" only: the weights' standard deviation
    bn_momentum: float | None = PYTORCH_DEFAULT_MOMENTUM
    bn_eps: float = PYTORCH_DEFAULT_EPS
    groups: int = 4
    noise_strength: float = 1.0  # noisy_batch / noise: multiplies Algorithm 1's ranges (1 = the paper's)
    # batch_renorm only (Ioffe 2017): final clipping limits and the warm-up (plain BN) steps
    renorm_r_max: float = PAPER_R_MAX
    renorm_d_max: float = PAPER_D_MAX
    renorm_warmup_steps: int = PAPER_WARMUP_STEPS
    ghost_batch_size: int = 16  # ghost_batch only: examples per virtual batch

    def __post_init__(self):
        check(self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}.")
        check(1 <= len(self.hidden) <= 30, "Choose between 1 and 30 hidden layers.")
        check(all(1 <= w <= 4096 for w in self.hidden), "Layer widths must be between 1 and 4096.")
        check(self.activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}.")
        check(self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}.")
        check(self.placement in PLACEMENTS, "placement must be 'before' or 'after' the activation.")
        check(self.init in INITS, f"init must be one of {INITS}.")
        check(0.0 < self.init_std <= 10.0, "The initial weights' standard deviation must be in (0, 10].")
        check(self.bn_momentum is None or 0.0 <= self.bn_momentum <= 1.0, "BN momentum must be in [0, 1] or None.")
        check(self.bn_eps >= 0.0, "eps must be non-negative.")
        check(0.0 <= self.noise_strength <= 10.0, "noise strength must be between 0 and 10.")
        check(1.0 <= self.renorm_r_max <= 10.0, "Batch Renorm's r_max must be between 1 and 10.")
        check(0.0 <= self.renorm_d_max <= 10.0, "Batch Renorm's d_max must be between 0 and 10.")
        check(0 <= self.renorm_warmup_steps <= 200_000, "Batch Renorm's warm-up must be between 0 and 200,000 steps.")
        check(2 <= self.ghost_batch_size <= 4096, "The ghost (virtual) batch size must be between 2 and 4096.")
        if self.norm in ("batch_renorm", "ghost_batch"):
            check(self.arch != "rnn", "Batch Renorm and ghost BN are built for the MLP and the CNN.")
        check(1 <= self.groups <= 4096, "GroupNorm's groups must be between 1 and 4,096.")
        if self.norm == "group":
            check(all(w % self.groups == 0 for w in self.hidden), f"Every width must divide into {self.groups} groups.")
        if self.arch == "rnn":
            check(len(self.hidden) <= 4, "The recurrent net takes 1 to 4 stacked layers.")
        if self.norm == "instance":
            check(self.arch == "cnn", "InstanceNorm needs spatial positions: use it with the CNN.")

    @property
    def label(self) -> str:
        return model_label(self.norm, self.placement)


def model_label(norm: str, placement: str = "before") -> str:
    """The name a chart legend uses for a model; colours are keyed on it."""
    names = {"none": "no BN", "batch": "BN", "layer": "LayerNorm", "group": "GroupNorm", "instance": "InstanceNorm", "noisy_batch": "noisy BN", "noise": "no BN + noise"}
    names |= {"batch_renorm": "Batch Renorm", "ghost_batch": "ghost BN", "rms": "RMSNorm"}
    return names[norm]


# Santurkar et al. 2018 (arXiv 1805.11604), Sec. 2.1 and Algorithm 1: noisy BN injects a
# time-varying covariate shift after each BN layer. Per unit j, redrawn at every step:
# mu_j ~ U(-0.5, 0.5), sigma_j ~ U(1, 1.25); per example i: m_ij ~ U(mu_j - 0.1, mu_j + 0.1),
# s_ij ~ N(sigma_j, 0.1); the layer's output becomes s_ij * y_ij + m_ij.
NOISE_MEAN_RANGE = 0.5
NOISE_SCALE_RANGE = 0.25
NOISE_MEAN_JITTER = 0.1
NOISE_SCALE_JITTER = 0.1


class CovariateNoise(nn.Module):
    """Deliberate covariate shift, ``y_ij = s_ij * x_ij + m_ij``, in training mode only.

    Santurkar et al. 2018, Algorithm 1, with every range multiplied by
    ``strength`` (1 = the paper's values, 0 = identity). A fresh (s, m) is
    drawn at every training forward from the layer's own generator (on the
    CPU, so a seed gives the same noise on every device); eval mode adds no
    noise. ``frozen`` (set by probes) reuses the last draw and leaves the
    generator untouched, so a probe sees the noise of the step it probes.

    Shape: (N, C) or (N, C, H, W); one (s, m) per example and channel.
    """

    def __init__(self, width: int, strength: float = 1.0, seed: int = 0):
        super().__init__()
        self.width, self.strength = width, strength
        self.generator = torch.Generator().manual_seed(seed)
        self.frozen = False
        self.last_draw: tuple[torch.Tensor, torch.Tensor] | None = None

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def draw(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (batch, width)."""
        g, k = self.generator, self.strength
        unit_mean = (torch.rand(self.width, generator=g) * 2 - 1) * NOISE_MEAN_RANGE * k
        unit_scale = 1 + torch.rand(self.width, generator=g) * NOISE_SCALE_RANGE * k
        shift = unit_mean + (torch.rand(batch, self.width, generator=g) * 2 - 1) * NOISE_MEAN_JITTER * k
        scale = unit_scale + torch.randn(batch, self.width, generator=g) * NOISE_SCALE_JITTER * k
        return scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.strength == 0:
            return x
        if self.frozen and self.last_draw is not None and self.last_draw[0].shape[0] == x.shape[0]:
            scale, shift = self.last_draw
        elif self.frozen:  # a probe on a batch of another size: draw without moving the stream
            state = self.generator.get_state()
            scale, shift = (t.to(x.device) for t in self.draw(x.shape[0]))
            self.generator.set_state(state)
        else:
            scale, shift = (t.to(x.device) for t in self.draw(x.shape[0]))
            self.last_draw = (scale, shift)
        shape = (x.shape[0], self.width) + (1,) * (x.dim() - 2)
        return x * scale.view(shape) + shift.view(shape)


class _NoiseAfterNorm:
    """BN, then :class:`CovariateNoise` in ``self.noise``: running statistics are BN's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise(super().forward(x))


class NoisyBatchNorm1d(_NoiseAfterNorm, nn.BatchNorm1d):
    pass


class NoisyBatchNorm2d(_NoiseAfterNorm, nn.BatchNorm2d):
    pass


def make_norm(cfg: ModelConfig, width: int, spatial: bool) -> nn.Module:
    if cfg.norm == "noisy_batch":
        layer = (NoisyBatchNorm2d if spatial else NoisyBatchNorm1d)(width, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        layer.noise = CovariateNoise(width, cfg.noise_strength)
        return layer
    if cfg.norm == "noise":
        return CovariateNoise(width, cfg.noise_strength)
    if cfg.norm == "batch_renorm":
        layer = BatchRenorm2d if spatial else BatchRenorm1d
        return layer(width, r_max=cfg.renorm_r_max, d_max=cfg.renorm_d_max, warmup_steps=cfg.renorm_warmup_steps, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
    if cfg.norm == "ghost_batch":
        layer = GhostBatchNorm2d if spatial else GhostBatchNorm1d
        return layer(width, virtual_batch_size=cfg.ghost_batch_size, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
    if cfg.norm == "batch":
        layer = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        return layer(width, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
    if cfg.norm == "layer":
        # LayerNorm over all of an example's features: (C,) for an MLP, (C, H, W) via GroupNorm(1) for a CNN
        return nn.GroupNorm(1, width, eps=cfg.bn_eps) if spatial else nn.LayerNorm(width, eps=cfg.bn_eps)
    if cfg.norm == "group":
        return nn.GroupNorm(cfg.groups, width, eps=cfg.bn_eps)
    if cfg.norm == "rms":
        return RMSNorm(width, eps=cfg.bn_eps)
    if cfg.norm == "instance":
        return nn.GroupNorm(width, width, eps=cfg.bn_eps)
    return nn.Identity()


class PerStepNorm(nn.Module):
    """A recurrent layer's norm, called at every time step as ``norm(x, step)``; x is (N, H).

    BN keeps one ``BatchNorm1d`` per time step, each with its own batch
    statistics and running averages ("recurrent BN", Cooijmans et al. 2016,
    Sec. 3). It has statistics only for the steps it was trained on: beyond
    the last one it reuses that step's, as Cooijmans et al. do. LN and GN
    pool over one example's features, so one layer serves every step.
    """

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return self.layers[min(step, len(self.layers) - 1)](x)


def make_recurrent_norm(cfg: ModelConfig, width: int) -> PerStepNorm:
    if cfg.norm == "batch":
        return PerStepNorm([make_norm(cfg, width, False) for _ in range(IMAGE_SHAPE[1])])
    return PerStepNorm([make_norm(cfg, width, False)])


class RecurrentBlock(nn.Module):
    """One Elman layer read over time, the norm on the summed input at each step::

        h_t = act(norm_t(W x_t + U h_{t-1} + b)),   h_0 = 0      (placement "before")

    as layer-normalised RNNs do (Ba et al. 2016, Sec. 3.1). Shape: (N, T, F) -> (N, T, H).
    ``linear`` is W (with b), ``recurrent`` is U; ``act`` runs once per step.
    """

    def __init__(self, linear: nn.Linear, recurrent: nn.Linear, norm: PerStepNorm, act: nn.Module, placement: str):
        super().__init__()
        self.linear, self.recurrent, self.norm, self.act = linear, recurrent, norm, act
        self.norm_first = placement == "before"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed_inputs = self.linear(x)  # every step's W x_t + b at once
        h = summed_inputs.new_zeros(x.shape[0], self.recurrent.out_features)
        states = []
        for step in range(x.shape[1]):
            pre = summed_inputs[:, step] + self.recurrent(h)
            h = self.act(self.norm(pre, step)) if self.norm_first else self.norm(self.act(pre), step)
            states.append(h)
        return torch.stack(states, dim=1)


class Block(nn.Module):
    """One hidden layer: linear (or conv), norm and activation in the configured order."""

    def __init__(self, linear: nn.Module, norm: nn.Module, act: nn.Module, placement: str, pool: nn.Module | None = None):
        super().__init__()
        self.linear, self.norm, self.act = linear, norm, act
        self.norm_first = placement == "before"
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        x = self.act(self.norm(x)) if self.norm_first else self.norm(self.act(x))
        return self.pool(x) if self.pool is not None else x


class Net(nn.Module):
    """A stack of :class:`Block` (or :class:`RecurrentBlock`) and a linear classifier head.

    Input (N, 1, 28, 28); the RNN also takes (N, 1, T, 28) for any T rows.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        blocks = []
        if cfg.arch == "mlp":
            width_in = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
            for width in cfg.hidden:
                blocks.append(Block(nn.Linear(width_in, width), make_norm(cfg, width, False), ACTIVATIONS[cfg.activation](), cfg.placement))
                width_in = width
            head_in = width_in
        elif cfg.arch == "rnn":
            width_in = IMAGE_SHAPE[2]  # one image row per time step
            for width in cfg.hidden:
                blocks.append(RecurrentBlock(nn.Linear(width_in, width), nn.Linear(width, width, bias=False), make_recurrent_norm(cfg, width), ACTIVATIONS[cfg.activation](), cfg.placement))
                width_in = width
            head_in = width_in
        else:
            channels_in, side = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
            for channels in cfg.hidden:
                # 3x3 conv then 2x2 max-pool while the image is big enough to halve
                pool = nn.MaxPool2d(2) if side >= 4 else None
                blocks.append(Block(nn.Conv2d(channels_in, channels, 3, padding=1), make_norm(cfg, channels, True), ACTIVATIONS[cfg.activation](), cfg.placement, pool))
                channels_in, side = channels, side // 2 if pool is not None else side
            head_in = channels_in * side * side
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(head_in, NUM_CLASSES)
        if cfg.init == "normal":
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    nn.init.normal_(module.weight, 0.0, cfg.init_std)
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.arch == "mlp":
            x = x.flatten(1)
        elif self.cfg.arch == "rnn":
            x = x.flatten(1, 2)  # (N, 1, rows, 28) -> (N, rows, 28): any number of rows (time steps)
        for block in self.blocks:
            x = block(x)
        if self.cfg.arch == "rnn":
            x = x[:, -1]  # classify from the last step's state
        return self.head(x.flatten(1))

    def norm_layers(self) -> list[nn.Module]:
        return [block.norm for block in self.blocks]


def build_model(cfg: ModelConfig, seed: int, device: torch.device | str = "cpu") -> Net:
    """The model for ``cfg`` with weights drawn from ``seed`` (same on every device)."""
    torch.manual_seed(seed)
    model = Net(cfg)
    # each noise layer draws its own stream, fixed by the model's seed
    for index, module in enumerate(m for m in model.modules() if isinstance(m, CovariateNoise)):
        module.reseed(seed * 1000 + index + 1)
    return model.to(device)
