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
