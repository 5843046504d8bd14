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


def train_one_at_a_time(make_runs: dict, progress=None, chunk_fraction: float = 0.25) -> dict:
    """Train ``{key: (label, make_run)}`` one run after another (memory stays small), each
    run built only when its turn comes; ``progress`` names the run and its step. Returns
    ``{key: TrainResult}``. For sweeps of many short runs (seeds x batch sizes x models)."""
    from ..train import train_together

    total, results = len(make_runs), {}
    for index, (key, (label, make_run)) in enumerate(make_runs.items()):
        if progress is not None:
            progress(index / total, f"run {index + 1} of {total}: {label}", None)
        run = make_run()
        within = None
        if progress is not None:
            def within(fraction, message, partial, index=index, label=label):
                progress((index + fraction) / total, f"run {index + 1} of {total} ({label}): {message}", None)
        results[key] = train_together([run], within, chunk=max(int(run.train_cfg.steps * chunk_fraction), 1))[0]
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
    imports only its own experiment, not every other page's."""
    try:
        module = importlib.import_module(f"{__name__}.{name}")
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
