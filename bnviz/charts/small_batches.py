"""Charts of the small-batches page: accuracy and train/eval mismatch by batch size,
Batch Renorm's schedule, and the Bessel factor (closed form and measured)."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
from ..experiments.bessel_mismatch import BesselResult, closed_form_ratio
from ..experiments.small_batches import SmallBatchesConfig, SmallBatchesResult
from ..models import model_label
from ..renorm import renorm_limits
from . import CHART_HEIGHT, color_scale, font_size, series_scale


def summary_frame(result: SmallBatchesResult) -> pd.DataFrame:
    return pd.DataFrame(result.summary_rows())


def seed_frame(result: SmallBatchesResult) -> pd.DataFrame:
    """One row per run: model, batch size, seed, final test accuracy (None if diverged)."""
    rows = []
    for (norm, batch_size, seed), run in result.runs.items():
        rows.append({"model": model_label(norm), "batch size": batch_size, "seed": seed, "test accuracy": None if run.diverged else run.final_test_acc})
    return pd.DataFrame(rows)


def _batch_axis(result: SmallBatchesResult) -> alt.X:
    sizes = list(result.config.batch_sizes)
    return alt.X("batch size:Q", scale=alt.Scale(type="log", base=2, domain=[min(sizes), max(sizes)]), axis=alt.Axis(values=sizes, title="batch size (log scale)"))


def _labels(result: SmallBatchesResult) -> list[str]:
    return [model_label(n) for n in result.config.norms]


def accuracy_chart(result: SmallBatchesResult) -> alt.LayerChart:
    """Final test accuracy vs batch size: mean over seeds (line), lowest to highest seed (band), each seed (dots)."""
    summary = summary_frame(result)
    labels = _labels(result)
    x = _batch_axis(result)
    color = alt.Color("model:N", title="model", scale=color_scale(labels), legend=alt.Legend(orient="top", symbolOpacity=1))
    y = alt.Y("test accuracy:Q", title="final test accuracy (eval mode)", scale=alt.Scale(zero=False), axis=alt.Axis(format=PERCENT_AXIS_FORMAT))
    band = alt.Chart(summary).mark_area(opacity=0.15).encode(x=x, y=alt.Y("lowest seed:Q", title="final test accuracy (eval mode)"), y2="highest seed:Q", color=color)
    line = alt.Chart(summary).mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=3).encode(
        x=x, y=y, color=color,
        tooltip=["model:N", "batch size:Q", alt.Tooltip("test accuracy:Q", title="mean over seeds", format=PERCENT_FORMAT), alt.Tooltip("lowest seed:Q", format=PERCENT_FORMAT), alt.Tooltip("highest seed:Q", format=PERCENT_FORMAT)],
    )
    dots = alt.Chart(seed_frame(result)).mark_point(opacity=0.6, size=30, filled=True).encode(
        x=x, y=alt.Y("test accuracy:Q"), color=alt.Color("model:N", scale=color_scale(labels), legend=None),
        tooltip=["model:N", "batch size:Q", "seed:Q", alt.Tooltip("test accuracy:Q", format=PERCENT_FORMAT)],
    )
    seeds = result.config.seeds
    title = f"Test accuracy after {result.config.steps} steps, by batch size" + (f" (band: lowest to highest of {seeds} seeds)" if seeds > 1 else "")
    return alt.layer(band, line, dots, title=title).properties(height=CHART_HEIGHT)


def mismatch_chart(result: SmallBatchesResult) -> alt.Chart:
    """Share of test digits whose predicted class changes between train mode and eval mode."""
    summary = summary_frame(result)
    labels = _labels(result)
    return (
        alt.Chart(summary, title="Train mode vs eval mode: test digits whose prediction changes")
        .mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=3)
        .encode(
            x=_batch_axis(result),
            y=alt.Y("prediction changes:Q", title="share of predictions that change", axis=alt.Axis(format=PERCENT_AXIS_FORMAT)),
            color=alt.Color("model:N", title="model", scale=color_scale(labels), legend=alt.Legend(orient="top")),
            tooltip=["model:N", "batch size:Q", alt.Tooltip("prediction changes:Q", format=PERCENT_FORMAT), alt.Tooltip("eval accuracy:Q", format=".3f"),
                     alt.Tooltip("train-mode accuracy:Q", format=".3f"), alt.Tooltip("mean |logit change|:Q", format=".4f")],
        )
        .properties(height=CHART_HEIGHT)
    )


def schedule_frame(config: SmallBatchesConfig) -> pd.DataFrame:
    rows = []
    for step in range(config.steps):
        r_max, d_max = renorm_limits(step, config.r_max, config.d_max, config.warmup_steps)
        rows += [{"step": step + 1, "limit": "r_max", "value": r_max}, {"step": step + 1, "limit": "d_max", "value": d_max}]
    return pd.DataFrame(rows)


def schedule_chart(config: SmallBatchesConfig) -> alt.Chart:
    """Batch Renorm's clipping limits at each training step (the paper's schedule, scaled)."""
    return (
        alt.Chart(schedule_frame(config), title="Batch Renorm's limits during training")
        .mark_line(strokeWidth=3)
        .encode(
            x=alt.X("step:Q", title="training step", scale=alt.Scale(domain=[1, config.steps])),
            y=alt.Y("value:Q", title="limit"),
            color=alt.Color("limit:N", scale=series_scale(["r_max", "d_max"]), legend=alt.Legend(orient="top", title=None)),
            tooltip=["step:Q", "limit:N", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(height=260)
    )


# -------------------------------------------------------------------------- Bessel
HEATMAP_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
HEATMAP_DEPTHS = tuple(range(1, 21))


def closed_form_frame() -> pd.DataFrame:
    return pd.DataFrame([
        {"m": m, "depth": depth, "ratio": float(closed_form_ratio(m, depth))} for m in HEATMAP_BATCH_SIZES for depth in HEATMAP_DEPTHS
    ])


def closed_form_heatmap() -> alt.LayerChart:
    """((m-1)/m)^(depth/2) for m = 2 .. 256 and depth 1 .. 20, each cell labelled."""
    data = closed_form_frame()
    data["label"] = [f"{v:.2f}" if v >= 0.01 else f"{v:.0e}" for v in data["ratio"]]
    base = alt.Chart(data, title="Closed form: eval-mode output scale ((m−1)/m)^(depth/2)").encode(
        x=alt.X("m:O", title="batch size m (the statistics' batch)", sort=list(HEATMAP_BATCH_SIZES), axis=alt.Axis(labelAngle=0)),
        y=alt.Y("depth:O", title="BN layers (depth)", sort="descending"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("ratio:Q", title="eval / train", scale=alt.Scale(scheme="viridis", domain=[0, 1])),
        tooltip=["m:O", "depth:O", alt.Tooltip("ratio:Q", format=".4f")],
    )
    text = base.mark_text(fontSize=font_size(12)).encode(
        # black or white against the cell's own viridis colour, whatever the page's theme
        text="label:N", color=alt.condition(alt.datum.ratio > 0.6, alt.value("black"), alt.value("white")),
    )
    return alt.layer(cells, text).properties(height=560)


def bessel_frame(result: BesselResult) -> pd.DataFrame:
    c = result.config
    rows = []
    for i, m in enumerate(c.probe_batch_sizes):
        for layer in range(c.depth):
            measured = float(result.measured[i, layer])
            rows.append({"m": m, "depth": layer + 1, "closed form": float(result.closed[i, layer]), "measured": measured if np.isfinite(measured) else None})
    return pd.DataFrame(rows)


def bessel_chart(result: BesselResult) -> alt.LayerChart:
    """Measured eval/train scale per layer (dots) on the closed form (lines), log y; values
    beyond the axis (the m = 2 chain breaking down) are clipped at its edge."""
    data = bessel_frame(result)
    low = float(data["closed form"].min()) / 10
    y_scale = alt.Scale(type="log", domain=[low, 10], clamp=True)
    color = alt.Color("m:O", title="batch size m", scale=alt.Scale(scheme="viridis"), sort=list(result.config.probe_batch_sizes), legend=alt.Legend(orient="right"))
    x = alt.X("depth:Q", title="BN layer (depth)", axis=alt.Axis(tickMinStep=1), scale=alt.Scale(domain=[1, result.config.depth]))
    lines = alt.Chart(data).mark_line(strokeWidth=2).encode(x=x, y=alt.Y("closed form:Q", title="eval-mode / train-mode output scale (log)", scale=y_scale), color=color)
    dots = alt.Chart(data).mark_point(size=70, filled=True, opacity=0.9).encode(
        x=x, y=alt.Y("measured:Q", scale=y_scale), color=color, shape=alt.value("diamond"),
        tooltip=["m:O", "depth:Q", alt.Tooltip("measured:Q", format=".6g"), alt.Tooltip("closed form:Q", format=".6g")],
    )
    return alt.layer(lines, dots, title="Measured (diamonds) on the closed form (lines)").properties(height=CHART_HEIGHT)
