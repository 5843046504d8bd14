"""Charts of the original paper's page: Figure 1 (a, b, c) and the learning-rate/sigmoid claims."""
from __future__ import annotations

from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
from ..experiments.paper_figure1 import PAPER_PERCENTILES, Figure1Result
from ..experiments.paper_lr_claims import LrClaimsResult
from . import CHART_HEIGHT, color_scale, curves_chart, finite_or_none, font_size, thin_rows

# Fig. 1(a)'s vertical axis
PAPER_ACCURACY_AXIS = (0.7, 1.0)
MODEL_ORDER = ["no BN", "BN"]
FACET_WIDTH_TWO = 400
FACET_WIDTH_THREE = 255


def accuracy_chart(result: Figure1Result, paper_axis: bool = False, total_steps: int | None = None) -> alt.Chart:
    """Fig. 1(a): test accuracy over steps. ``paper_axis`` fixes y to the paper's 0.7-1.0 (lower points are clipped)."""
    title = f"(a) Test accuracy ({result.runs[0].train.eval_examples:,} test images)"
    chart = curves_chart(result.runs, "test_acc", title, y_domain=PAPER_ACCURACY_AXIS if paper_axis else None, total_steps=total_steps)
    return chart.mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=2.5, clip=True)


def percentile_records(result: Figure1Result, layer: int, unit: int, from_step: int = 1, mode: str = "evaluation") -> pd.DataFrame:
    """Tidy rows (model, step, p15, p50, p85) of one unit's input percentiles, both models,
    as the network computes them in ``mode`` ("training": batch statistics; "evaluation").

    From step 1 by default: at step 0 BN's running averages still hold their
    initial mean 0 and variance 1, so evaluation-mode BN passes the raw input through."""
    columns = [f"p{p:g}" for p in PAPER_PERCENTILES]
    frames = []
    for run in result.runs:
        steps, values = result.percentiles(run.label, layer, unit, mode)
        keep = steps >= from_step
        frame = pd.DataFrame({"model": run.label, "step": steps[keep]})
        for index, column in enumerate(columns):
            frame[column] = finite_or_none(values[keep, index])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def percentile_chart(result: Figure1Result, layer: int, unit: int, total_steps: int | None = None, mode: str = "evaluation") -> alt.FacetChart:
    """Fig. 1(b, c): the 15th/50th/85th percentiles of one unit's sigmoid input, one panel per model, shared y."""
    data = thin_rows(percentile_records(result, layer, unit, mode=mode), ["model"])
    images = result.runs[0].train.eval_examples
    labels = [run.label for run in result.runs]
    x = alt.X("step:Q", title="training step", scale=alt.Scale(domain=[0, total_steps]) if total_steps else alt.Scale())
    color = alt.Color("model:N", scale=color_scale(labels), legend=None)
    band = alt.Chart().mark_area(opacity=0.18).encode(x=x, y=alt.Y("p15:Q", title="input to the sigmoid"), y2="p85:Q", color=color)
    lines = (
        alt.Chart()
        .transform_fold(["p15", "p50", "p85"], as_=["percentile", "value"])
        .mark_line(strokeWidth=2.5)
        .encode(
            x=x,
            y=alt.Y("value:Q", title="input to the sigmoid"),
            color=color,
            strokeDash=alt.StrokeDash(
                "percentile:N",
                title="percentile",
                scale=alt.Scale(domain=["p15", "p50", "p85"], range=[[5, 3], [1, 0], [5, 3]]),
                legend=alt.Legend(orient="top", labelExpr="replace(datum.label, 'p', '') + 'th'"),
            ),
            detail="percentile:N",
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("step:Q"), alt.Tooltip("percentile:N"), alt.Tooltip("value:Q", format=".3f")],
        )
    )
    return (
        alt.layer(band, lines, data=data)
        .properties(width=FACET_WIDTH_TWO, height=CHART_HEIGHT - 40)
        .facet(column=alt.Column("model:N", sort=MODEL_ORDER, title=None, header=alt.Header(labelFontSize=16, labelFontWeight="bold")))
        .properties(title=f"(b, c) Input to unit {unit} of hidden layer {layer}, {mode} mode: 15th, 50th and 85th percentiles over {images:,} test images")
    )


def multiplier_title(multiplier: float, lr: float) -> str:
    return f"×{multiplier:g} (lr {lr:g})"


def lr_curve_records(result: LrClaimsResult) -> pd.DataFrame:
    """Tidy rows of every run's test accuracy, plus one "diverged" row per diverged run
    (at its last finite evaluation, labelled with the step its loss became NaN/inf)."""
    frames = []
    for run in result.runs:
        multiplier = result.multiplier(run)
        common = {"model": run.model.label, "activation": run.model.activation, "multiplier": multiplier, "panel": multiplier_title(multiplier, run.train.lr)}
        frames.append(pd.DataFrame({**common, "kind": "curve", "step": run.eval_step, "value": finite_or_none(run.test_acc), "note": ""}))
        if run.diverged:
            finite = np.isfinite(run.test_acc)
            last = float(run.test_acc[finite][-1]) if finite.any() else 0.1
            frames.append(pd.DataFrame([{**common, "kind": "diverged", "step": run.diverged_step, "value": last, "note": f"{run.model.label} diverged at step {run.diverged_step}"}]))
    return pd.concat(frames, ignore_index=True)


def lr_curves_chart(result: LrClaimsResult, total_steps: int | None = None) -> alt.FacetChart:
    """Test accuracy of every run: a row per activation, a column per learning-rate multiplier.
    A diverged run's curve stops; a cross and a note mark where."""
    data = thin_rows(lr_curve_records(result), ["model", "activation", "panel", "kind"])
    panels = list(dict.fromkeys(data.sort_values("multiplier")["panel"]))
    color = alt.Color("model:N", title="model", scale=color_scale(MODEL_ORDER), legend=alt.Legend(orient="top"))
    x = alt.X("step:Q", title="training step", scale=alt.Scale(domain=[0, total_steps]) if total_steps else alt.Scale())
    y = alt.Y("value:Q", title="test accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=PERCENT_AXIS_FORMAT))
    curves = alt.Chart().transform_filter(alt.datum.kind == "curve").mark_line(strokeWidth=2.5, clip=True).encode(
        x=x, y=y, color=color, tooltip=[alt.Tooltip("model:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", title="test accuracy", format=PERCENT_FORMAT)]
    )
    crosses = alt.Chart().transform_filter(alt.datum.kind == "diverged").mark_point(shape="cross", size=260, filled=True, clip=True).encode(
        x=x, y=y, color=color, tooltip=[alt.Tooltip("note:N", title="diverged")]
    )
    notes = alt.Chart().transform_filter(alt.datum.kind == "diverged").mark_text(align="left", dx=10, dy=-14, fontSize=font_size(13), fontWeight="bold").encode(
        x=x, y=y, color=color, text="note:N"
    )
    return (
        alt.layer(curves, crosses, notes, data=data)
        .properties(width=FACET_WIDTH_THREE, height=190)
        .facet(
            row=alt.Row("activation:N", title=None, header=alt.Header(labelFontSize=15, labelFontWeight="bold")),
            column=alt.Column("panel:N", sort=panels, title="learning rate: multiplier of the x1 rate", header=alt.Header(labelFontSize=15)),
        )
    )


def steps_to_target_records(rows: Sequence[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["multiplier_label"] = [f"×{m:g}" for m in frame["multiplier"]]
    frame["bar"] = [float(s) if s is not None else None for s in frame["steps"]]
    frame["text"] = [
        f"{row['steps']:,}" if row["status"] == "reached" else ("diverged (step {:,})".format(row["diverged_step"]) if row["status"] == "diverged" else "not reached")
        for row in rows
    ]
    frame["text_x"] = frame["bar"].fillna(0.0)
    frame["facet"] = [f"{row['activation']}: target {100 * row['target']:.1f}%" for row in rows]
    return frame


def steps_to_target_chart(rows: Sequence[dict]) -> alt.FacetChart:
    """Bars: steps each run needed to reach the target accuracy; runs that never did say why."""
    data = steps_to_target_records(rows)
    multipliers = list(dict.fromkeys(data.sort_values("multiplier")["multiplier_label"]))
    color = alt.Color("model:N", title="model", scale=color_scale(MODEL_ORDER), legend=alt.Legend(orient="top"))
    y = alt.Y("multiplier_label:N", title="learning rate", sort=multipliers)
    y_offset = alt.YOffset("model:N", sort=MODEL_ORDER)
    bars = alt.Chart().mark_bar(height=16).encode(
        x=alt.X("bar:Q", title="training steps to reach the target accuracy (fewer is faster)"),
        y=y,
        yOffset=y_offset,
        color=color,
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("text:N", title="steps"), alt.Tooltip("target:Q", format=PERCENT_FORMAT)],
    )
    labels = alt.Chart().mark_text(align="left", dx=4, fontSize=font_size(13)).encode(x="text_x:Q", y=y, yOffset=y_offset, text="text:N", color=color)
    return (
        alt.layer(bars, labels, data=data)
        .properties(width=FACET_WIDTH_TWO + 200, height=alt.Step(40))
        .facet(row=alt.Row("facet:N", title=None, header=alt.Header(labelFontSize=15, labelFontWeight="bold")))
    )
