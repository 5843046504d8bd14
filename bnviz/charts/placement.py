"""Charts of the placement page: curves with a band across seeds, the learning-rate sweep,
and what the nonlinearity receives under each placement."""
from __future__ import annotations

from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
from ..experiments.placement import LABELS, PlacementResult
from ..train import TrainResult
from . import CHART_HEIGHT, METRIC_TITLES, color_scale, finite_or_none, model_color, palette, thin_rows, value_axis, value_format


def band_records(runs: Sequence[TrainResult], metric: str) -> pd.DataFrame:
    """Per (model, step): the mean of ``metric`` over seeds, its lowest and highest seed, and how many seeds.

    A seed whose run diverged (or has not got that far yet) is left out of the
    steps it never reached.
    """
    rows = [
        pd.DataFrame({"model": run.label, "seed": run.train.seed, "step": run.eval_step, "value": finite_or_none(getattr(run, metric))})
        for run in runs
    ]
    if not rows:
        return pd.DataFrame(columns=["model", "step", "mean", "low", "high", "seeds"])
    tidy = pd.concat(rows, ignore_index=True).dropna(subset=["value"])
    grouped = tidy.groupby(["model", "step"], sort=False)["value"]
    table = grouped.agg(mean="mean", low="min", high="max", seeds="count").reset_index()
    return table.sort_values(["model", "step"], key=lambda c: c.map(LABELS.index) if c.name == "model" else c, ignore_index=True)


def band_chart(runs: Sequence[TrainResult], metric: str = "test_acc", title: str | None = None, total_steps: int | None = None) -> alt.LayerChart:
    """Mean curve per model and a band from its lowest to its highest seed.

    Step 0 (the untrained model, at chance) is left out so the y axis spans what training reached.
    """
    data = band_records(runs, metric)
    data = thin_rows(data[data["step"] > 0], ["model"])
    labels = [label for label in LABELS if label in set(data["model"])] or list(LABELS)
    y_title = METRIC_TITLES.get(metric, metric)
    x = alt.X("step:Q", title="training step", scale=alt.Scale(domain=[0, total_steps]) if total_steps else alt.Scale())
    # the band's opacity must not fade the legend's symbols
    color = alt.Color("model:N", title="model", scale=color_scale(labels), legend=alt.Legend(orient="top", symbolOpacity=1))
    base = alt.Chart(data, title=title or y_title)
    band = base.mark_area(opacity=0.22).encode(x=x, y=alt.Y("low:Q", title=y_title, scale=alt.Scale(zero=False), axis=value_axis(metric)), y2="high:Q", color=color)
    line = base.mark_line(strokeWidth=2.5, point=alt.OverlayMarkDef(size=18)).encode(
        x=x,
        y=alt.Y("mean:Q"),
        color=color,
        tooltip=[
            alt.Tooltip("model:N"),
            alt.Tooltip("step:Q"),
            alt.Tooltip("mean:Q", title=f"mean {y_title}", format=value_format(metric)),
            alt.Tooltip("low:Q", title="lowest seed", format=value_format(metric)),
            alt.Tooltip("high:Q", title="highest seed", format=value_format(metric)),
            alt.Tooltip("seeds:Q"),
        ],
    )
    return (band + line).properties(height=CHART_HEIGHT)


def sweep_records(result: PlacementResult) -> pd.DataFrame:
    """Per (model, learning rate): final full-test accuracy mean, standard deviation, range over seeds, divergences."""
    rows = []
    for lr in sorted(result.config.lrs):
        accuracy, diverged = result.final_accuracy(lr), result.diverged(lr)
        for label in LABELS:
            values = accuracy[label]
            rows.append({
                "model": label,
                "lr": lr,
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "low": float(values.min()),
                "high": float(values.max()),
                "seeds": len(values),
                "diverged": int(diverged[label].sum()),
            })
    return pd.DataFrame(rows)


def sweep_chart(result: PlacementResult) -> alt.LayerChart:
    """Final test accuracy against the learning rate (log axis), one line per model, bars from lowest to highest seed."""
    data = sweep_records(result)
    data["any_diverged"] = np.where(data["diverged"] > 0, "some seeds diverged", "no seed diverged")
    # full width: both legends on the right, so the plot keeps the chart's height (a legend above and
    # one below left a plot ~130 px tall, shorter than its own axis title)
    color = alt.Color("model:N", title="model", scale=color_scale(LABELS), legend=alt.Legend(orient="right", symbolOpacity=1))
    x = alt.X("lr:Q", title="learning rate (log scale)", scale=alt.Scale(type="log"), axis=alt.Axis(values=sorted(result.config.lrs), format="~g"))
    base = alt.Chart(data, title="Final test accuracy vs learning rate")
    bars = base.mark_rule(strokeWidth=2.5, opacity=0.6).encode(x=x, y=alt.Y("low:Q", title="final test accuracy", scale=alt.Scale(zero=False), axis=alt.Axis(format=PERCENT_AXIS_FORMAT)), y2="high:Q", color=color)
    line = base.mark_line(strokeWidth=2.5).encode(x=x, y="mean:Q", color=color)
    points = base.mark_point(size=90, filled=True).encode(
        x=x,
        y="mean:Q",
        color=color,
        shape=alt.Shape("any_diverged:N", title=None, scale=alt.Scale(domain=["no seed diverged", "some seeds diverged"], range=["circle", "cross"]), legend=alt.Legend(orient="right")),
        tooltip=[
            alt.Tooltip("model:N"),
            alt.Tooltip("lr:Q", title="learning rate", format="~g"),
            alt.Tooltip("mean:Q", title="mean accuracy", format=".4f"),
            alt.Tooltip("std:Q", title="std over seeds", format=".4f"),
            alt.Tooltip("low:Q", title="lowest seed", format=".4f"),
            alt.Tooltip("high:Q", title="highest seed", format=".4f"),
            alt.Tooltip("diverged:Q", title="seeds diverged"),
        ],
    )
    return (bars + line + points).properties(height=CHART_HEIGHT)


def histogram_records(result: PlacementResult, lr: float, layer: int) -> pd.DataFrame:
    """Share of the nonlinearity's inputs per bin for hidden layer ``layer``, averaged over seeds, per model.

    ``flat``: whether the activation's slope at the bin's centre is under the
    recorder's threshold (saturated or inactive there).
    """
    histograms = result.histograms(lr)
    edges = result.histogram_edges
    flat = np.where(result.flat_at((edges[:-1] + edges[1:]) / 2), "flat (saturated or inactive)", "working")
    rows = [
        pd.DataFrame({"model": label, "low": edges[:-1], "high": edges[1:], "share": histograms[label][:, layer].mean(axis=0), "region": flat})
        for label in LABELS
    ]
    return pd.concat(rows, ignore_index=True)


def histogram_chart(result: PlacementResult, lr: float, layer: int, activation_name: str | None = None) -> alt.FacetChart:
    """Distribution of one layer's nonlinearity input, one panel per model (named by its header, so
    no colour legend); flat-slope bins faded."""
    data = histogram_records(result, lr, layer)
    edges = result.histogram_edges
    return (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X("low:Q", title=f"input of the {activation_name or result.config.activation}", scale=alt.Scale(domain=[float(edges[0]), float(edges[-1])])),
            x2="high:Q",
            y=alt.Y("share:Q", title="share of inputs", axis=alt.Axis(format=PERCENT_AXIS_FORMAT)),
            y2=alt.datum(0),
            color=alt.Color("model:N", scale=color_scale(LABELS), legend=None),
            opacity=alt.Opacity("region:N", title=None, scale=alt.Scale(domain=["working", "flat (saturated or inactive)"], range=[1.0, 0.3]), legend=alt.Legend(orient="top")),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("low:Q", title="from", format=".2f"), alt.Tooltip("high:Q", title="to", format=".2f"), alt.Tooltip("share:Q", format=PERCENT_FORMAT), alt.Tooltip("region:N")],
        )
        .properties(height=220, width=260)
        .facet(column=alt.Column("model:N", title=None, sort=list(LABELS), header=alt.Header(labelFontSize=16)))
    )


def layer_records(result: PlacementResult, lr: float, key: str) -> pd.DataFrame:
    """A per-layer statistic at the end of training, per model: mean, lowest and highest seed."""
    values = result.layer_statistic(lr, key)
    rows = []
    for label in LABELS:
        for layer in range(values[label].shape[1]):
            column = values[label][:, layer]
            rows.append({"model": label, "layer": f"layer {layer + 1}", "mean": float(np.nanmean(column)), "low": float(np.nanmin(column)), "high": float(np.nanmax(column))})
    return pd.DataFrame(rows)


def layer_chart(result: PlacementResult, lr: float, key: str, title: str, y_title: str, percent: bool = False) -> alt.LayerChart:
    """Grouped bars per hidden layer (one per model, seed mean) with the seed range as a tick line."""
    data = layer_records(result, lr, key)
    color = model_color("model", list(LABELS))
    axis = alt.Axis(format=PERCENT_AXIS_FORMAT) if percent else alt.Axis()
    base = alt.Chart(data, title=title).encode(x=alt.X("layer:N", title=None, axis=alt.Axis(labelAngle=0)), xOffset=alt.XOffset("model:N", sort=list(LABELS)))
    bars = base.mark_bar().encode(
        y=alt.Y("mean:Q", title=y_title, axis=axis),
        color=color,
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("layer:N"), alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("low:Q", title="lowest seed", format=".3f"), alt.Tooltip("high:Q", title="highest seed", format=".3f")],
    )
    ranges = base.mark_rule(color=palette().ink, strokeWidth=1.5).encode(y="low:Q", y2="high:Q")
    return (bars + ranges).properties(height=CHART_HEIGHT)
