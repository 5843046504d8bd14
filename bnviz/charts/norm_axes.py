"""Charts of the BN vs LayerNorm page: pooling sets as grids, accuracy vs batch size, longer sequences."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..experiments.norm_axes import METHODS, NormAxesResult
from ..experiments.norm_comparison import NormComparisonResult
from ..experiments.sequence_norms import PLACES, SequenceNormsResult
from ..models import model_label
from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
from . import CHART_HEIGHT, PALETTE, color_scale, finite_or_none, model_color, palette

CELL = 22  # largest cell, in pixels: readable on a projector
GRID_WIDTH = 860  # pixels of cells in one row of example panels: with the axis, it fits the ~940 px page column
PANELS_PER_ROW = 4


def grid_axes(result: NormAxesResult) -> tuple[str, str, str | None]:
    """(x field, y field, facet field) of a layout's grid."""
    return {
        "image": ("position", "channel", "example"),
        "features": ("feature", "example", None),
        "sequence": ("time step", "feature", "example"),
    }[result.config.layout]


SAME_SET = "same mean/variance as the chosen value"


def sets_frame(result: NormAxesResult, method: str, highlight: tuple[int, ...]) -> pd.DataFrame:
    """One row per value: its grid position, raw and normalised value, set id and shade.

    ``highlight`` indexes one value of ``result.values``; every value of its set is
    shaded "same mean/variance as the chosen value".
    """
    ids = result.set_ids[method]
    chosen = ids[highlight]
    index = np.indices(ids.shape).reshape(ids.ndim, -1)
    columns = dict(zip(result.axis_names, index))
    if result.config.layout == "image":
        side = ids.shape[3]
        columns = {"example": columns["example"], "channel": columns["channel"], "position": columns["row"] * side + columns["column"]}
    flat_ids = ids.ravel()
    shade = np.where(flat_ids == chosen, SAME_SET, np.where(flat_ids % 2 == 0, "another set (even id)", "another set (odd id)"))
    return pd.DataFrame({
        **columns,
        "set": flat_ids,
        "value": result.values.ravel(),
        "normalized": result.normalized[method].ravel(),
        "shade": shade,
    })


def sets_grid(result: NormAxesResult, method: str, highlight: tuple[int, ...], title: str) -> alt.Chart:
    """The tensor as a grid of cells, the chosen value's set in the method's colour."""
    frame = sets_frame(result, method, highlight)
    x_field, y_field, facet_field = grid_axes(result)
    shades = [SAME_SET, "another set (even id)", "another set (odd id)"]
    color = alt.Color("shade:N", title=None, scale=alt.Scale(domain=shades, range=[PALETTE[model_label(method)], *palette().other_sets]), legend=None)
    columns = int(frame[x_field].max() + 1)
    panels = min(int(frame[facet_field].max() + 1), PANELS_PER_ROW) if facet_field else 1
    cell = max(8, min(CELL, GRID_WIDTH // (panels * (columns + 1))))
    width, height = cell * columns, cell * int(frame[y_field].max() + 1)
    chart = (
        alt.Chart(frame)
        .mark_rect(stroke=palette().background, strokeWidth=1)
        .encode(
            # Axis and header fonts: the shared projector theme's (bnviz.charts.PROJECTOR_TEXT).
            x=alt.X(f"{x_field}:O", title=x_field, axis=alt.Axis(labelAngle=0, labelOverlap=False, values=_ticks(frame[x_field].max()))),
            y=alt.Y(f"{y_field}:O", title=y_field, axis=alt.Axis(labelOverlap=False, values=_ticks(frame[y_field].max(), dense=cell >= 16))),
            color=color,
            tooltip=[alt.Tooltip(f"{name}:O") for name in ([facet_field] if facet_field else []) + [y_field, x_field]]
            + [alt.Tooltip("set:Q", title="set id"), alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("normalized:Q", format=".3f")],
        )
        .properties(width=width, height=height)
    )
    if facet_field:
        header = alt.Header(labelExpr="'example ' + datum.value")
        return chart.facet(facet=alt.Facet(f"{facet_field}:O", title=None, header=header), columns=PANELS_PER_ROW, title=title).configure_title(anchor="start")
    # A single (unfaceted) grid: Streamlit's default "fit" autosizing squeezed it to a sliver with
    # width="content"; "pad" keeps the cell sizes set above.
    return chart.properties(title=title, autosize=alt.AutoSizeParams(type="pad")).configure_title(anchor="start")


def sets_takeaway(result: NormAxesResult, method: str, highlight: tuple[int, ...]) -> str:
    """A grid's sentence: the chosen value's set, its size, and its mean and variance before and
    after the method normalises it (after: 0 and 1 up to ε, unless the set is constant)."""
    frame = sets_frame(result, method, highlight)
    chosen = frame[frame["shade"] == SAME_SET]
    raw, normalized = chosen["value"].to_numpy(float), chosen["normalized"].to_numpy(float)
    return (f"The chosen value's set holds {len(chosen)} values: mean {raw.mean():.3f} and variance {raw.var():.3f} before, "
            f"{normalized.mean():.3f} and {normalized.var():.3f} after {model_label(method)}.")


def _ticks(last: int, dense: bool = True) -> list[int]:
    """Tick values of a grid axis: every index while cells are wide enough for a 14 px label."""
    step = (1 if dense else 2) if last < 10 else 4
    return list(range(0, int(last) + 1, step))


def pooled_moments_frame(result: NormAxesResult) -> pd.DataFrame:
    """Rows: the output of each method; columns: measured over each method's sets (|mean|, variance)."""
    rows = []
    for i, by in enumerate(METHODS):
        row = {"output of": model_label(by)}
        for j, over in enumerate(METHODS):
            row[f"over {model_label(over)} sets"] = f"|mean| {result.pooled_mean_abs[i, j]:.2f}, var {result.pooled_var[i, j]:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def batch_size_frame(result: NormComparisonResult) -> pd.DataFrame:
    """Tidy rows (model, batch size, seed, accuracy); a diverged run's accuracy is null."""
    rows = []
    for norm in result.config.norms:
        accuracy = result.accuracy(norm)
        for i, batch_size in enumerate(result.config.batch_sizes):
            for seed, value in enumerate(finite_or_none(accuracy[i])):
                rows.append({"model": model_label(norm), "batch size": batch_size, "seed": seed, "test accuracy": value})
    return pd.DataFrame(rows)


def batch_size_chart(result: NormComparisonResult) -> alt.Chart:
    """Final test accuracy vs batch size (log scale): mean over seeds, each seed a dot."""
    frame = batch_size_frame(result)
    labels = [model_label(n) for n in result.config.norms]
    x = alt.X("batch size:Q", scale=alt.Scale(type="log", base=2), axis=alt.Axis(values=list(result.config.batch_sizes), title="batch size (log scale)"))
    y_title = "final test accuracy"
    mean = (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=3)
        .encode(x=x, y=alt.Y("mean(test accuracy):Q", title=y_title, scale=alt.Scale(zero=False), axis=alt.Axis(format=PERCENT_AXIS_FORMAT)), color=model_color("model", labels),
                tooltip=[alt.Tooltip("model:N"), alt.Tooltip("batch size:Q"), alt.Tooltip("mean(test accuracy):Q", title="mean over seeds", format=PERCENT_FORMAT)])
    )
    seeds = alt.Chart(frame).mark_point(opacity=0.5, size=30, filled=True).encode(
        x=x, y=alt.Y("test accuracy:Q"), color=alt.Color("model:N", scale=color_scale(labels), legend=None),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("batch size:Q"), alt.Tooltip("seed:Q"), alt.Tooltip("test accuracy:Q", format=PERCENT_FORMAT)],
    )
    return (mean + seeds).properties(height=CHART_HEIGHT, title="Test accuracy after the same number of steps, by batch size")


def padded_frame(result: SequenceNormsResult) -> pd.DataFrame:
    rows = []
    for m, run in enumerate(result.runs):
        for p, place in enumerate(PLACES):
            for k, extra in enumerate(result.config.extra_rows):
                rows.append({"model": run.label, "blank rows": extra, "placed": f"blank rows {place} the digit", "test accuracy": float(result.padded_accuracy[m, p, k])})
    return pd.DataFrame(rows)


def padded_chart(result: SequenceNormsResult) -> alt.Chart:
    """Accuracy on longer test sequences (28 + k rows), one panel per place of the blank rows."""
    frame = padded_frame(result)
    labels = [run.label for run in result.runs]
    return (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=3)
        .encode(
            x=alt.X("blank rows:Q", title="extra blank rows (test sequence = 28 + this many steps)", axis=alt.Axis(values=list(result.config.extra_rows))),
            y=alt.Y("test accuracy:Q", title="test accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=PERCENT_AXIS_FORMAT)),
            color=model_color("model", labels),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("blank rows:Q"), alt.Tooltip("test accuracy:Q", format=PERCENT_FORMAT)],
        )
        .properties(width=380, height=260)
        .facet(column=alt.Column("placed:N", title=None, header=alt.Header(labelFontSize=14), sort=[f"blank rows {place} the digit" for place in PLACES]))
    )
