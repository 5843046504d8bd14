"""Training speed: a straightforward PyTorch loop against bnviz's trainer, on the same work.

Times, in one run on this machine (issue 11):

1. one model (the paper's 784-100-100-100-10 sigmoid MLP, batch 60, SGD lr 0.1), no BN and BN;
   and with LayerNorm and Adam (lr 0.001), the optimiser of the norm-comparison sweeps;
2. the paper's experiment shape: the BN and no-BN models trained together, extrapolated
   to 50,000 steps each, on one core and as the app runs it (a worker thread per core);
   and the time to the paper page's first curves;
3. a 5-seed x 3-placement sweep (no BN, BN before, BN after; ReLU) at a few hundred steps,
   extrapolated to 2,000 steps: runs one by one, seeds stacked by torch.func, as the app;
5. on CUDA, when present: the paper's experiment on the GPU, and 5 seeds stacked or not.

Parts 1 and 2 also time bnviz with every step on the plain path (``accelerate=False``): what
the accelerator (``bnviz.engine``) is worth.

The straightforward loop is ``nn.Sequential`` + ``torch.optim.SGD``, a batch drawn by
indexing a tensor, ``loss.item()`` every step, no evaluation. bnviz's trainer
(:class:`bnviz.train.Run` / :func:`bnviz.train.train_together`) also records every step's
accuracy, evaluates the first 2,000 test images every ``--eval-every`` steps (default
1,000) and the full test set at the end; its times include all of that. The process has
the server's malloc settings (``bnviz.malloc``), as the app has.

The compute floor: FLOPs per step from the layer shapes (matmuls only), divided by the
sustained GFLOP/s of a (60x784)@(784x100) matmul loop on one thread. Forward + backward is
counted two ways: "~3x forward" and the exact count (the first layer needs no input
gradient). Timing belongs here, not in the tests; ``tests/test_training_equivalence.py``
holds the loop and the trainer to the same losses.

    .venv/bin/python benchmarks/bench_training.py [--steps 2000] [--sweep-steps 300]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BNVIZ_DEVICE", "cpu")

from bnviz.malloc import limit_malloc_arenas  # noqa: E402
from bnviz.data import BatchSampler, load_mnist  # noqa: E402
from bnviz.models import ACTIVATIONS, PAPER_HIDDEN, ModelConfig, build_model  # noqa: E402
from bnviz.train import PAPER_BATCH_SIZE, PAPER_STEPS, Run, TrainConfig, evaluate, train_together, training_threads  # noqa: E402

IN_FEATURES = 28 * 28
CLASSES = 10
LR = 0.1
ADAM_LR = 0.001
SWEEP_SEEDS = 5
SWEEP_MODELS = (("no BN", "none", "before"), ("BN before", "batch", "before"), ("BN after", "batch", "after"))


# ------------------------------------------------------------------ the straightforward loop
def sequential_model(cfg: ModelConfig, seed: int) -> nn.Sequential:
    """``nn.Sequential`` with the same layers and the same initial weights as bnviz's
    ``build_model(cfg, seed)`` (MLP, norm "none", "batch" or "layer"): its parameters and
    buffers are copied over in order."""
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = IN_FEATURES
    for width in cfg.hidden:
        layers.append(nn.Linear(width_in, width))
        act = ACTIVATIONS[cfg.activation]()
        norm = {"batch": [nn.BatchNorm1d(width, eps=cfg.bn_eps, momentum=cfg.bn_momentum)], "layer": [nn.LayerNorm(width, eps=cfg.bn_eps)], "none": []}[cfg.norm]
        layers += norm + [act] if cfg.placement == "before" else [act] + norm
        width_in = width
    layers.append(nn.Linear(width_in, CLASSES))
    model = nn.Sequential(*layers)
    reference = build_model(cfg, seed, "cpu")
    with torch.no_grad():
        ours, theirs = list(model.parameters()), list(reference.parameters())
        assert [p.shape for p in ours] == [p.shape for p in theirs]
        for mine, source in zip(ours, theirs):
            mine.copy_(source)
        for mine, source in zip(model.buffers(), reference.buffers()):
            mine.copy_(source)
    return model


def straight_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sampler: BatchSampler, steps: int, lr: float = LR, optimizer: str = "sgd") -> list[float]:
    """The loop everyone writes first (SGD, or ``optimizer="adam"``); returns every step's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam" else torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        indices = sampler.next_indices()
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[indices]), y[indices])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def loop_seconds(cfg: ModelConfig, seed: int, steps: int, data, lr: float = LR, optimizer: str = "sgd") -> float:
    """Wall time of the straightforward loop (model construction included, as bnviz's is)."""
    started = time.perf_counter()
    model = sequential_model(cfg, seed)
    straight_loop(model, data.train_x, data.train_y, BatchSampler(len(data.train_y), PAPER_BATCH_SIZE, seed=seed + 1), steps, lr, optimizer)
    return time.perf_counter() - started


def bnviz_seconds(models: list[tuple[ModelConfig, int]], steps: int, data, eval_every: int, threads: int | None = None, stack: bool | None = None,
                  lr: float = LR, optimizer: str = "sgd", accelerate: bool = True) -> float:
    """Wall time of bnviz's trainer on ``models`` (config, seed) trained together, from
    building the runs to the final full-test-set evaluation. ``threads=None``, ``stack=None``:
    as the app runs it (one worker thread per usable core; seeds stacked where
    ``bnviz.train.stacking_pays``); ``stack=True``: seeds of one setting trained as one model
    batched by torch.func; ``accelerate=False``: every step on the plain path (no bnviz.engine)."""
    started = time.perf_counter()
    runs = [Run(cfg, TrainConfig(steps=steps, batch_size=PAPER_BATCH_SIZE, lr=lr, optimizer=optimizer, seed=seed, eval_every=eval_every), data, accelerate=accelerate)
            for cfg, seed in models]
    train_together(runs, threads=threads, stack=stack)
    return time.perf_counter() - started


def first_curve_seconds(steps: int) -> float:
    """Seconds from starting the paper page's experiment (``paper_figure1``, data loaded)
    to its first progress report with curves to draw."""
    from bnviz.experiments.paper_figure1 import PaperFigure1Config, run

    started, first = time.perf_counter(), []

    def progress(fraction, message, partial):
        if partial and not first:
            first.append(time.perf_counter() - started)

    run(PaperFigure1Config(steps=steps), progress)
    return first[0]


def evaluation_seconds(data, steps: int, eval_every: int, runs: int) -> float:
    """The part of bnviz's time spent evaluating (not training): per run, the subset at
    step 0 and every ``eval_every`` steps (and the last), plus the full test set once."""
    model = build_model(ModelConfig(norm="batch"), 0)
    evaluate(model, data.test_x[:2000], data.test_y[:2000])
    started = time.perf_counter()
    evaluate(model, data.test_x[:2000], data.test_y[:2000])
    subset = time.perf_counter() - started
    started = time.perf_counter()
    evaluate(model, data.test_x, data.test_y)
    full = time.perf_counter() - started
    evaluations = 1 + steps // eval_every + (steps % eval_every != 0)
    return runs * (evaluations * subset + full)


# ------------------------------------------------------------------ compute floor
def matmul_flops(hidden=PAPER_HIDDEN, batch: int = PAPER_BATCH_SIZE) -> tuple[float, float]:
    """(forward, exact forward + backward) matmul FLOPs of one step. Backward = a weight
    gradient for every layer (same FLOPs as its forward) + an input gradient for every layer
    but the first."""
    widths = (IN_FEATURES, *hidden, CLASSES)
    layer = [2 * batch * a * b for a, b in zip(widths[:-1], widths[1:])]
    forward = sum(layer)
    return float(forward), float(forward + forward + sum(layer[1:]))


def sustained_gflops(windows: int = 5, seconds: float = 0.25) -> float:
    """GFLOP/s of a (60x784)@(784x100) matmul loop: the best of a few short windows, so
    that other processes on a shared CPU lower it less."""
    a, b = torch.randn(PAPER_BATCH_SIZE, IN_FEATURES), torch.randn(IN_FEATURES, PAPER_HIDDEN[0])
    out = torch.empty(PAPER_BATCH_SIZE, PAPER_HIDDEN[0])
    for _ in range(200):
        torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(windows):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(100):
                torch.mm(a, b, out=out)
            count += 100
        best = max(best, 2 * PAPER_BATCH_SIZE * IN_FEATURES * PAPER_HIDDEN[0] * count / (time.perf_counter() - started) / 1e9)
    return best


# ------------------------------------------------------------------ report
def line(name: str, loop_s: float, engine_s: float, steps: int, eval_s: float) -> None:
    loop_ms, engine_ms = 1000 * loop_s / steps, 1000 * engine_s / steps
    print(f"  {name:<34} loop {loop_ms:6.3f} ms/step ({steps / loop_s:6.0f} steps/s)   "
          f"bnviz {engine_ms:6.3f} ms/step ({steps / engine_s:6.0f} steps/s)   loop/bnviz {loop_s / engine_s:4.2f}   "
          f"(bnviz's evaluations ~{1000 * eval_s / steps:.3f} ms/step of it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per model for parts 1 and 2")
    parser.add_argument("--sweep-steps", type=int, default=300, help="steps per run for the sweep")
    parser.add_argument("--eval-every", type=int, default=1000, help="bnviz's evaluation interval")
    args = parser.parse_args()
    steps, sweep_steps = args.steps, args.sweep_steps

    torch.set_num_threads(1)
    # the server's malloc settings (bnviz.malloc; process-wide, so the loop runs under them too):
    # without them a 6.4 MB tensor per chunk cost nothing here and 46 page faults per step there
    limit_malloc_arenas()
    data = load_mnist("cpu")
    load1, load5, load15 = os.getloadavg()
    print(f"bnviz training benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {load1:.2f} {load5:.2f} {load15:.2f}")
    print(f"MLP 784-{'-'.join(map(str, PAPER_HIDDEN))}-10, batch {PAPER_BATCH_SIZE}, SGD lr {LR}; 1 torch thread; "
          f"bnviz evaluates 2,000 test images every {args.eval_every:,} steps and all 10,000 at the end\n")
    # warm up both paths (first-call allocations, lazy imports)
    loop_seconds(ModelConfig(norm="batch"), 0, 50, data)
    bnviz_seconds([(ModelConfig(norm="batch"), 0)], 50, data, args.eval_every)

    plain, bn = ModelConfig(), ModelConfig(norm="batch")
    print(f"1. One model, {steps:,} steps")
    singles = {}
    for name, cfg in (("no BN", plain), ("BN", bn)):
        singles[name] = (loop_seconds(cfg, 0, steps, data), bnviz_seconds([(cfg, 0)], steps, data, args.eval_every, threads=1))
        line(name, *singles[name], steps, evaluation_seconds(data, steps, args.eval_every, 1))
        line(f"{name}, plain steps (no accelerator)", singles[name][0], bnviz_seconds([(cfg, 0)], steps, data, args.eval_every, threads=1, accelerate=False),
             steps, evaluation_seconds(data, steps, args.eval_every, 1))
    layer_norm = ModelConfig(norm="layer")
    line("LayerNorm, Adam lr 0.001", loop_seconds(layer_norm, 0, steps, data, ADAM_LR, "adam"),
         bnviz_seconds([(layer_norm, 0)], steps, data, args.eval_every, threads=1, lr=ADAM_LR, optimizer="adam"), steps, evaluation_seconds(data, steps, args.eval_every, 1))
    torch.set_num_threads(2)
    two = loop_seconds(plain, 0, steps, data)
    torch.set_num_threads(1)
    print(f"  {'no BN, loop on 2 threads (ref.)':<34} loop {1000 * two / steps:6.3f} ms/step ({steps / two:6.0f} steps/s)   "
          f"1 thread / 2 threads {singles['no BN'][0] / two:4.2f}")

    print(f"\n2. The paper's experiment (no BN and BN trained together), {steps:,} steps each")
    loop_s = loop_seconds(plain, 0, steps, data) + loop_seconds(bn, 0, steps, data)
    eval_s = evaluation_seconds(data, steps, args.eval_every, 2)
    line("bnviz on 1 core (ms per step of both)", loop_s, bnviz_seconds([(plain, 0), (bn, 0)], steps, data, args.eval_every, threads=1), steps, eval_s)
    engine_s = bnviz_seconds([(plain, 0), (bn, 0)], steps, data, args.eval_every)
    line(f"bnviz on {training_threads(2)} cores, as the app runs", loop_s, engine_s, steps, eval_s)
    line(f"bnviz on {training_threads(2)} cores, plain steps", loop_s, bnviz_seconds([(plain, 0), (bn, 0)], steps, data, args.eval_every, accelerate=False), steps, eval_s)
    scale = PAPER_STEPS / steps
    engine_full = (engine_s - eval_s) * scale + evaluation_seconds(data, PAPER_STEPS, args.eval_every, 2)
    print(f"  per {PAPER_STEPS:,} steps each: loop {loop_s * scale:5.1f} s, bnviz {engine_full:5.1f} s, loop/bnviz {loop_s * scale / engine_full:4.2f} "
          f"(training scaled, evaluations counted for {PAPER_STEPS:,} steps; issue 11 target: <= 15 s, about 3x)")
    print(f"  the paper page's experiment (5,000 steps, its recorders): first curves after {first_curve_seconds(5000):.2f} s (target: within 1 s)")

    print(f"\n3. Sweep: {SWEEP_SEEDS} seeds x {len(SWEEP_MODELS)} placements (ReLU), {sweep_steps:,} steps each")
    sweep = [(ModelConfig(activation="relu", norm=norm, placement=placement), seed) for seed in range(SWEEP_SEEDS) for _, norm, placement in SWEEP_MODELS]
    loop_s = sum(loop_seconds(cfg, seed, sweep_steps, data) for cfg, seed in sweep)
    eval_s = evaluation_seconds(data, sweep_steps, args.eval_every, len(sweep))
    line("bnviz 1 core, runs one by one", loop_s, bnviz_seconds(sweep, sweep_steps, data, args.eval_every, threads=1, stack=False), sweep_steps, eval_s)
    line("bnviz 1 core, seeds stacked (torch.func)", loop_s, bnviz_seconds(sweep, sweep_steps, data, args.eval_every, threads=1, stack=True), sweep_steps, eval_s)
    engine_s = bnviz_seconds(sweep, sweep_steps, data, args.eval_every)
    line(f"bnviz {training_threads(len(sweep))} cores, as the app", loop_s, engine_s, sweep_steps, eval_s)
    scale = 2000 / sweep_steps
    engine_full = (engine_s - eval_s) * scale + evaluation_seconds(data, 2000, args.eval_every, len(sweep))
    print(f"  per 2,000 steps each: loop {loop_s * scale:5.1f} s, bnviz {engine_full:5.1f} s, loop/bnviz {loop_s * scale / engine_full:4.2f} "
          f"(training scaled, evaluations counted for 2,000 steps; issue 11 target: <= 10 s)")

    forward, exact = matmul_flops()
    gflops = sustained_gflops()
    print("\n4. Compute floor (matmuls only, 1 thread)")
    print(f"  FLOPs per step: forward {forward / 1e6:.1f} M; forward + backward ~3x forward {3 * forward / 1e6:.1f} M, "
          f"exact {exact / 1e6:.1f} M (no input gradient for layer 1)")
    print(f"  sustained (60x784)@(784x100) matmul: {gflops:.1f} GFLOP/s")
    floor_3x, floor_exact = 1000 * 3 * forward / (gflops * 1e9), 1000 * exact / (gflops * 1e9)
    print(f"  floor: {floor_3x:.3f} ms/step (3x), {floor_exact:.3f} ms/step (exact); "
          f"no BN loop is {singles['no BN'][0] * 1000 / steps / floor_exact:.1f}x the exact floor, "
          f"bnviz {singles['no BN'][1] * 1000 / steps / floor_exact:.1f}x")
    print(f"  paper's experiment at the floor: {2 * PAPER_STEPS * floor_exact / 1000:.1f} s for 2 x {PAPER_STEPS:,} steps on one core, "
          f"{PAPER_STEPS * floor_exact / 1000:.1f} s on two")
    if torch.cuda.is_available():
        print("\n5. CUDA: the paper's experiment on", torch.cuda.get_device_name())
        cuda_data = load_mnist("cuda")
        bnviz_seconds([(plain, 0), (bn, 0)], 200, cuda_data, args.eval_every)  # warm-up
        cuda_s = bnviz_seconds([(plain, 0), (bn, 0)], steps, cuda_data, args.eval_every)
        print(f"  {steps:,} steps each: {cuda_s:.2f} s; per {PAPER_STEPS:,} steps each: {cuda_s * PAPER_STEPS / steps:.1f} s (target: <= 3 s)")
        seeds = [(bn, seed) for seed in range(SWEEP_SEEDS)]
        for stack in (False, True):
            seconds = bnviz_seconds(seeds, sweep_steps, cuda_data, args.eval_every, stack=stack)
            print(f"  {SWEEP_SEEDS} BN seeds, {sweep_steps:,} steps each, {'stacked (torch.func)' if stack else 'one by one'}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
