"""Charts never hit Altair's 5,000-row limit (``MaxRowsError`` from ``chart.to_dict()``, which
the pages' downloads call): long curves are thinned for display, the CSV keeps every point.

Long runs are built directly (a 3,000-step run's per-step records, 10,000 evaluations), so
nothing trains; the pages the issue named run for real, downloads included.
"""
from __future__ import annotations

from types import SimpleNamespace

import altair as alt
import numpy as np
import pandas as pd
import pytest

from apptest_helpers import open_page
from bnviz.charts import MAX_CHART_ROWS, chart_spec, curves_chart, thin_rows
from bnviz.charts.placement import band_chart
from bnviz.charts.train_vs_eval import statistics_chart, statistics_records
from bnviz.charts.why import beta_chart, drift_chart, drift_records, ics_chart, landscape_band_chart, unit_distribution_chart
from bnviz.models import ModelConfig
from bnviz.train import TrainConfig, TrainResult

STEPS = 10_000  # more than any control allows (3,000 steps of per-step records at most)
LAYERS = 3


def long_run(label: str, seed: int = 0, steps: int = STEPS) -> TrainResult:
    rng = np.random.default_rng(seed)
    step = np.arange(steps)
    curve = np.linspace(0.1, 0.95, steps) + 0.01 * rng.standard_normal(steps)
    records = {
        "drift_step": step, "drift_mean": rng.random((steps, LAYERS)), "drift_var": rng.random((steps, LAYERS)),
        "drift_unit_mean": rng.standard_normal(steps), "drift_unit_std": rng.random(steps),
        "ics_step": step, "ics_layer": np.arange(1, LAYERS + 2), "ics_l2": rng.random((steps, LAYERS + 1)), "ics_cosine": rng.random((steps, LAYERS + 1)),
        "landscape_step": step, "landscape_loss": rng.random((steps, 6)), "landscape_grad_change": rng.random((steps, 6)), "landscape_beta": rng.random(steps),
    }
    return TrainResult(
        label=label, model=ModelConfig(hidden=(100,) * LAYERS), train=TrainConfig(steps=steps, seed=seed, eval_every=1), eval_step=step,
        train_loss=1 - curve, train_acc=curve, test_loss=1 - curve, test_acc=curve, step_loss=1 - curve, final_test_acc=0.95,
        final_test_loss=0.05, diverged=False, diverged_step=None, seconds=1.0, device="cpu", records=records,
    )


def long_statistics_result(steps: int = STEPS):
    rng = np.random.default_rng(0)
    records = {"bn_step": np.arange(steps)}
    for statistic in ("mean", "var"):
        for estimate in ("batch", "population", "running", "cumulative"):
            records[f"bn_{estimate}_{statistic}"] = rng.random((steps, 3))
    return SimpleNamespace(run=SimpleNamespace(records=records))


RUNS = [long_run("no BN", 0), long_run("BN", 1), long_run("noisy BN", 2)]
SEEDED = [long_run(label, seed) for label in ("no BN", "BN before", "BN after") for seed in range(3)]
CHARTS = {
    "curves": lambda: curves_chart(RUNS, "test_acc"),
    "placement band": lambda: band_chart(SEEDED, "test_acc"),
    "train vs eval statistics": lambda: statistics_chart(long_statistics_result(), 0, "mean"),
    "why drift": lambda: drift_chart(RUNS, "change of a unit's mean", "drift"),
    "why unit": lambda: unit_distribution_chart(RUNS),
    "why ICS": lambda: ics_chart(RUNS, "l2"),
    "why landscape": lambda: landscape_band_chart(RUNS, "loss"),
    "why beta": lambda: beta_chart(RUNS),
}


def chart_rows(chart) -> int:
    data = chart.data if isinstance(chart.data, pd.DataFrame) else None
    return 0 if data is None else len(data)


@pytest.mark.parametrize("name", list(CHARTS))
def test_long_curves_are_thinned_and_serialise(name):
    chart = CHARTS[name]()
    assert 0 < chart_rows(chart) <= MAX_CHART_ROWS
    chart.to_dict()  # validated against the Vega-Lite schema (the app skips that: charts.chart_spec)


def test_the_tables_keep_every_point():
    assert len(statistics_records(long_statistics_result(), 0, "mean")) == 4 * STEPS
    assert len(drift_records(RUNS)) == 2 * 3 * STEPS


def test_thin_rows_keeps_each_series_ends_evenly():
    frame = pd.DataFrame({"model": ["a"] * 9_000 + ["b"] * 100, "step": list(range(9_000)) + list(range(100))})
    thinned = thin_rows(frame, ["model"], max_rows=1_000)
    assert len(thinned) <= 1_000
    a = thinned[thinned["model"] == "a"]["step"].to_numpy()
    assert a[0] == 0 and a[-1] == 8_999 and len(a) == 500
    assert np.ptp(np.diff(a)) <= 1  # evenly strided
    assert thinned[thinned["model"] == "b"]["step"].tolist() == list(range(100))  # a short series stays whole
    small = frame.head(10)
    assert thin_rows(small, ["model"]) is small


def test_a_chart_thin_rows_missed_still_draws():
    """Altair's own 5,000-row guard (MaxRowsError, a traceback on the page) is lifted on
    purpose: charts are thinned by ``thin_rows``, and one it missed is drawn whole, not refused."""
    frame = pd.DataFrame({"step": range(6_000), "value": 0.0})
    spec = chart_spec(alt.Chart(frame).mark_line().encode(x="step:Q", y="value:Q"))
    assert sum(len(rows) for rows in spec["datasets"].values()) == 6_000


def test_the_issue_view_draws_and_offers_every_chart_as_an_image():
    """``/train-vs-eval?steps=1300`` for real: 4 series of per-step statistics past 5,000 rows, downloads included."""
    at = open_page("app_pages/train_vs_eval.py", steps="1300").run()
    assert not at.exception, at.exception
    images = [button for button in at.get("download_button") if "(PNG)" in button.proto.label]
    assert len(images) >= 4
    assert not [c.value for c in at.caption if "too many points" in c.value]
