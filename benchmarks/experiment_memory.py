"""Every experiment's default view, one after another in one process, as a server runs them.

Each experiment runs at its default config on a worker thread (as bnviz.jobs runs it), with
the server's malloc settings; after each, a collection and ``malloc_trim`` (what the app does
after a job). Prints the process's own resident memory (RssAnon) before and after each, and
the modules it imported for the first time: a new package there (sympy, torch._dynamo) is
memory the server keeps for the rest of its life.

    BNVIZ_TRAIN_IMAGES=uint8 ENV/bin/python benchmarks/experiment_memory.py [NAME ...]

(ENV: CPU-only torch, as a hosted tier runs; without names, every experiment.)
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("BNVIZ_DEVICE", "cpu")


def own_memory_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon"):
            return int(line.split()[1]) >> 10
    return -1


def main() -> None:
    from bnviz.data import load_mnist
    from bnviz.experiments import all_experiments
    from bnviz.malloc import limit_malloc_arenas, release_freed_memory
    from bnviz.train import configure_torch_threads

    import altair  # noqa: F401  (the server has them: their modules are not the experiments')
    import pandas  # noqa: F401
    import streamlit  # noqa: F401

    configure_torch_threads()
    limit_malloc_arenas()
    load_mnist("cpu")
    gc.collect()
    release_freed_memory()
    experiments = all_experiments()
    names = sys.argv[1:] or list(experiments)
    print(f"start: {own_memory_mib()} MiB own, {len(sys.modules)} modules", flush=True)
    for name in names:
        experiment = experiments[name]
        loaded, before, started = set(sys.modules), own_memory_mib(), time.perf_counter()
        worker = threading.Thread(target=lambda: experiment.run(experiment.default_config()))
        worker.start()
        worker.join()
        gc.collect()
        release_freed_memory()
        new = sorted({module.split(".")[0] for module in set(sys.modules) - loaded})
        print(f"{name:28s} {time.perf_counter() - started:6.1f} s  {before} -> {own_memory_mib()} MiB  new packages: {', '.join(new) or '-'}", flush=True)


if __name__ == "__main__":
    main()
