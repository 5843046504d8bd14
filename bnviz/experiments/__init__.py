"""One module per page-level experiment: a frozen config in, a plain result out.

Each module defines ``EXPERIMENT = Experiment(...)``. The registry discovers
them, so adding an experiment touches no shared file. ``order`` sorts the CLI's
list (the home page's experiment is first).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BnvizError


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    summary: str
    config_type: type
    run: Callable[..., Any]  # run(config, progress=None) -> result
    order: int = 100
    presets: dict[str, Any] = field(default_factory=dict)  # classroom scenarios; the default view is config_type()
    summarize: Callable[[Any], dict] | None = None  # a few numbers the CLI prints

    def default_config(self):
        return self.config_type()

    def configs_to_precompute(self) -> list:
        configs = [self.default_config()]
        configs += [c for c in self.presets.values() if c not in configs]
        return configs


def train_in_waves(make_runs: dict, progress=None, chunk_fraction: float = 0.25, wave: int = 16) -> dict:
    """Train ``{key: (label, make_run)}`` in waves of up to ``wave`` runs, each wave with
    :func:`bnviz.train.train_together` (seeds of one setting stacked, the rest spread over
    the cores); a run is built only when its wave comes, so memory stays bounded.
    ``progress`` names the wave and its step. Returns ``{key: TrainResult}``. For sweeps
    of many short runs (seeds x batch sizes x models)."""
    from ..train import train_together

    items = list(make_runs.items())
    total, results = len(items), {}
    for start in range(0, total, wave):
        batch = items[start : start + wave]
        if progress is not None:
            progress(start / total, f"runs {start + 1}-{start + len(batch)} of {total}: {batch[0][1][0]} ...", None)
        runs = [make_run() for _, (_, make_run) in batch]
        within = None
        if progress is not None:
            def within(fraction, message, partial, start=start, size=len(batch)):
                progress((start + fraction * size) / total, f"runs {start + 1}-{start + size} of {total}: {message}", None)
        chunk = max(int(max(run.train_cfg.steps for run in runs) * chunk_fraction), 1)
        results.update(zip([key for key, _ in batch], train_together(runs, within, chunk=chunk)))
    if progress is not None:
        progress(1.0, "done", None)
    return results


def all_experiments() -> dict[str, Experiment]:
    found = []
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        experiment = getattr(module, "EXPERIMENT", None)
        if isinstance(experiment, Experiment):
            found.append(experiment)
    return {e.name: e for e in sorted(found, key=lambda e: (e.order, e.name))}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; tries the module of that name first, so a page
    imports only its own experiment, not every other page's. A name that is not a
    Python identifier (``../etc/passwd``) is never imported, only looked up."""
    try:
        module = importlib.import_module(f"{__name__}.{name}") if name.isidentifier() else None
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    else:
        experiment = getattr(module, "EXPERIMENT", None)
        if isinstance(experiment, Experiment) and experiment.name == name:
            return experiment
    experiments = all_experiments()
    if name not in experiments:
        raise BnvizError(f"No experiment named {name!r}. Known: {', '.join(experiments)}.")
    return experiments[name]
