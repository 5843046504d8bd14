"""Results are data: dataclasses of numpy arrays, turned into JSON here.

Non-finite floats (a diverged run) become ``null`` so the JSON is strict.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .train import TrainResult


def to_jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict") and not isinstance(value, Comparison):
            return value.to_dict()  # a Config
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(result, path: Path | str | None) -> str:
    text = json.dumps(to_jsonable(result), indent=1, allow_nan=False)
    if path is not None:
        Path(path).write_text(text)
    return text


@dataclass
class Comparison:
    """Several runs of one experiment side by side (e.g. no BN vs BN)."""

    runs: list[TrainResult]

    def by_label(self, label: str) -> TrainResult:
        for run in self.runs:
            if run.label == label:
                return run
        raise KeyError(label)

    def summary(self) -> dict[str, dict[str, float | bool | None]]:
        return {
            run.label: {"final_test_acc": run.final_test_acc, "diverged": run.diverged, "seconds": round(run.seconds, 2)}
            for run in self.runs
        }


@dataclass
class SeededComparison(Comparison):
    """Several models over several seeds: ``runs`` holds the first seed's (the charts
    draw those), ``seed_runs`` every seed's (the verdicts use those; empty: ``runs``)."""

    seed_runs: list[TrainResult] = field(default_factory=list)

    def arm(self, label: str) -> list[TrainResult]:
        """Every seed's run of one model, ordered by seed."""
        return sorted((r for r in (self.seed_runs or self.runs) if r.label == label), key=lambda r: r.train.seed)

    @property
    def seeds(self) -> int:
        return len(self.arm(self.runs[0].label))

    @classmethod
    def from_seeds(cls, results: list[TrainResult], models_per_seed: int, **fields):
        """``results`` ordered seed by seed, ``models_per_seed`` runs each."""
        return cls(results[:models_per_seed], seed_runs=list(results), **fields)


def first_seed_progress(progress, models_per_seed: int):
    """A progress relay whose partial results are the first seed's runs (what a live chart
    draws), for :func:`bnviz.train.train_together` over runs ordered seed by seed."""
    if progress is None:
        return None
    return lambda fraction, message, partial: progress(fraction, message, list(partial)[:models_per_seed])
