"""The work one view may start: a cost estimate per config, and the bound the app enforces.

A link can hold any values the controls allow, in any combination; without a bound one
request could hold a core for an hour (placement's 10 learning rates x 10 seeds x 3
models x 3,000 steps of a 6 x 400 network). Every experiment config states its
``cost()`` in **reference steps**: one training step of the paper's MLP
(784-100-100-100-10, sigmoid, batch 60), about 2 ms on one core of a 2-core laptop.
Its ``__post_init__`` calls :func:`check_view_cost`, so a config over
``VIEW_COST_LIMIT`` cannot be built by a page, a preset or a link; the message says
what to reduce and that heavier runs belong to the command line, which lifts the bound
with ``python -m bnviz run NAME --allow-heavy`` (:func:`allow_heavy`).

The estimate of one step, from multiply-adds per example x batch size (a step's
forward and backward passes are about 3x the forward's, for every model alike)::

    step_cost = OVERHEAD + (1 - OVERHEAD) * ARCH_FACTOR[arch] * (MACs(model) * batch) / (MACs(paper MLP) * 60)

``OVERHEAD``: the part of a reference step that does not scale with the work (Python,
the optimiser's kernel launches). ``ARCH_FACTOR``: measured time per multiply-add
against the MLP's (a 3x3 convolution with its pooling and norms runs far below a
matrix multiply's rate on a CPU; the RNN runs 28 small steps per example). Measured on
the 2-core development machine (torch 2.14.1, one intra-op thread): the reference step
2.0 ms; a 6 x 400 MLP at batch 60 14x and at batch 256 30x it (the formula: 11x, 43x);
the CNN at batch 64 92x (93x); the 128-unit RNN at batch 64 77x (78x). An estimate to
bound the work, not a promise of seconds.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from .errors import BnvizError

IMAGE_SIDE = 28
NUM_CLASSES = 10
REFERENCE_HIDDEN = (100, 100, 100)  # the paper's MNIST network (Ioffe & Szegedy 2015, Sec. 4.1)
REFERENCE_BATCH = 60
REFERENCE_STEP_SECONDS = 0.002  # measured, see the module docstring
OVERHEAD = 0.1
ARCH_FACTOR = {"mlp": 1.0, "cnn": 30.0, "rnn": 13.0}
# About five minutes of one core: the paper's full 50,000-step Figure 1 (two models,
# 100,000 reference steps) fits, as every preset must; an hour-long view does not.
VIEW_COST_LIMIT = 150_000

_heavy_allowed = False


def multiply_adds(arch: str, hidden: tuple[int, ...]) -> int:
    """Multiply-adds of one example's forward pass through ``bnviz.models.Net``.

    MLP: sum of in x out over the linear layers. CNN: per block a 3x3 convolution over
    the current side^2 positions, then a 2x2 max-pool while the side is 4 or more. RNN:
    28 time steps (image rows) of input and recurrent matrices per layer.
    """
    if arch == "mlp":
        widths = (IMAGE_SIDE * IMAGE_SIDE, *hidden, NUM_CLASSES)
        return sum(a * b for a, b in zip(widths, widths[1:]))
    if arch == "cnn":
        total, channels_in, side = 0, 1, IMAGE_SIDE
        for channels in hidden:
            total += side * side * 9 * channels_in * channels
            channels_in, side = channels, side // 2 if side >= 4 else side
        return total + channels_in * side * side * NUM_CLASSES
    total, width_in = 0, IMAGE_SIDE
    for width in hidden:
        total += IMAGE_SIDE * (width_in * width + width * width)
        width_in = width
    return total + width_in * NUM_CLASSES


REFERENCE_MACS = multiply_adds("mlp", REFERENCE_HIDDEN)


def step_cost(model, batch_size: int) -> float:
    """Reference steps one training step of ``model`` (a ``ModelConfig``) on ``batch_size`` examples costs."""
    work = multiply_adds(model.arch, tuple(model.hidden)) * batch_size / (REFERENCE_MACS * REFERENCE_BATCH)
    return OVERHEAD + (1 - OVERHEAD) * ARCH_FACTOR[model.arch] * work


def training_cost(runs: Iterable[tuple]) -> float:
    """Reference steps of training every ``(model, train_config)`` pair (a ``TrainConfig``'s steps and batch size).

    A pair may carry a key or label first, ``(key, model, train_config)``: an experiment's
    ``runs()``, the list its ``run()`` trains, so its ``cost()`` is ``training_cost(self.runs())``."""
    return sum(train.steps * step_cost(model, train.batch_size) for *_key, model, train in runs)


def check_view_cost(config, fewer: str) -> None:
    """Refuse ``config`` (its ``cost()``) above ``VIEW_COST_LIMIT`` unless :func:`allow_heavy` is in force.

    ``fewer``: what to reduce, in the page's words ("fewer seeds, learning rates or steps").
    """
    if _heavy_allowed:
        return
    cost = config.cost()
    if cost > VIEW_COST_LIMIT:
        minutes = cost * REFERENCE_STEP_SECONDS / 60
        raise BnvizError(
            f"This view would train about {cost:,.0f} reference steps (about {minutes:,.0f} minutes of a CPU core), more than the "
            f"{VIEW_COST_LIMIT:,} one view may start: choose {fewer}. Heavier runs belong to the command line: "
            f"`python -m bnviz run NAME --allow-heavy --set ...` (or `python -m bnviz precompute`)."
        )


# The memory one view's computation may hold above the server's own. The views whose working
# memory grows with a control (the deep-chain gradients: width x batch x depth; at 512 units x
# 512 images they held ~0.5 GB) are sized by their ``view_memory_bytes`` and refused above
# this; the page's heaviest choice needs ~170 MiB. Every other computation is bounded by
# construction instead: evaluations and probes go 2,000 images at a time, training batches
# 2,048 images per chunk, training subsets stay uint8 and shared; measured in one process,
# each default view's job peaks 1-91 MiB above the process (README, Deploy). A hosted tier's
# 690 MB (658 MiB) less the ~615 MiB a server holds after the default views leaves less than
# this: such a view can take a 1 GB host, not a 690 MB one (stated on the README).
VIEW_MEMORY_LIMIT = 192 << 20


def check_view_memory(nbytes: int, fewer: str) -> None:
    """Refuse a view whose computation would hold ``nbytes`` (its estimate) above
    ``VIEW_MEMORY_LIMIT``, unless :func:`allow_heavy` is in force (the command line)."""
    if not _heavy_allowed and nbytes > VIEW_MEMORY_LIMIT:
        raise BnvizError(
            f"This view would hold about {nbytes / 2**20:,.0f} MiB of tensors at once, more than the {VIEW_MEMORY_LIMIT >> 20} MiB "
            f"one view may use on a shared server: choose {fewer}. The command line has no such bound: "
            f"`python -m bnviz run NAME --allow-heavy --set ...`."
        )


def allow_heavy(allowed: bool = True) -> None:
    """Lift (or restore) the per-view bound for this process: the command line's ``--allow-heavy``."""
    global _heavy_allowed
    _heavy_allowed = allowed


@contextlib.contextmanager
def heavy_allowed() -> Iterator[None]:
    """The bound lifted inside a ``with`` block (tests, scripts)."""
    before = _heavy_allowed
    allow_heavy(True)
    try:
        yield
    finally:
        allow_heavy(before)
