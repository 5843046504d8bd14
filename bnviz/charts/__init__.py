"""Result -> ``alt.Chart``. Pages only lay charts out; charts never train.

One palette, set once: a model kind has the same colour on every page
(no BN, BN, BN after the activation, LayerNorm, GroupNorm, ...).
Topic-specific charts live in sibling modules; the shared pieces are here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
if TYPE_CHECKING:  # the type only: charts load without torch (a fresh server's first paint)
    from ..train import TrainResult

PALETTE = {
    "no BN": "#E45756",
    "BN": "#4C78A8",
    "BN before": "#4C78A8",
    "BN after": "#72B7B2",
    "LayerNorm": "#F58518",
    "RMSNorm": "#FFBF79",  # LayerNorm's orange, lighter: its sibling without the mean
    "GroupNorm": "#54A24B",
    "InstanceNorm": "#B279A2",
    "noisy BN": "#9D755D",
    "Batch Renorm": "#EECA3B",
    "ghost BN": "#FF9DA6",
    "no BN + noise": "#8C1C13",  # noise without BN: no BN's red, darker
}
FALLBACK_COLORS = ["#BAB0AC", "#79706E", "#D67195", "#439894", "#83BCB6"]
# For categories that are not models (neurons, statistics, train/eval mode, layers):
# colours no model uses, so a legend never suggests "this line is the BN model".
SERIES_COLORS = ["#17BECF", "#BCBD22", "#8C564B", "#E377C2", "#7F7F7F", "#C49C94"]
MODE_COLORS = {"train mode": "#3B3B3B", "eval mode": "#9467BD"}


def series_scale(labels: Iterable[str]) -> alt.Scale:
    """Colours for non-model categories, in order (see ``SERIES_COLORS``)."""
    labels = list(dict.fromkeys(labels))
    spare = iter(SERIES_COLORS * 4)
    return alt.Scale(domain=labels, range=[MODE_COLORS.get(label) or next(spare) for label in labels])


def log_axis(values, title: str | None = None, max_ticks: int = 6) -> alt.Axis:
    """An axis for a log scale with a few labelled ticks and only their grid lines.

    Vega puts a tick and a grid line at every 1..9 × 10^k while the data span fewer decades
    than ``tickCount``, a dense comb on a projector. Here: ticks at powers of ten (every
    second, third ... one past ``max_ticks``), or at 1, 2, 5 × 10^k when the positive finite
    ``values`` span under two decades.
    """
    data = np.asarray([v for v in values if v is not None], dtype=float)
    data = data[np.isfinite(data) & (data > 0)]
    if not data.size:
        return alt.Axis(title=title, tickCount=max_ticks)
    low, high = int(np.floor(np.log10(data.min()))), int(np.ceil(np.log10(data.max())))
    high = max(high, low + 1)
    if high - low < 2:
        ticks = [float(f"{m}e{k}") for k in range(low, high + 1) for m in (1, 2, 5) if float(f"{m}e{k}") <= float(f"1e{high}")]
    else:
        stride = -(-(high - low + 1) // max_ticks)
        ticks = [float(f"1e{k}") for k in range(low, high + 1, stride)]
    # Plain numbers while they stay short; powers of ten as 1e-7 throughout once any would not.
    number_format = "~g" if ticks[0] >= 1e-4 and ticks[-1] <= 1e6 else "~e"
    return alt.Axis(title=title, values=ticks, format=number_format, grid=True)

METRIC_TITLES = {
    "test_acc": "test accuracy",
    "test_loss": "test loss",
    "train_loss": "training loss",
    "train_acc": "training accuracy",
}
# The whole chart, legend and axes included (Streamlit autosizes with "fit"): at 320 px
# a top legend and the axes left a plot ~110 px tall, too flat to read on a projector.
CHART_HEIGHT = 400

# Readable from the back of a room on a projector: Streamlit's chart theme draws
# 12 px grey axis labels. An Altair theme reaches every chart, layered and
# concatenated ones too, without a page configuring anything; Streamlit keeps a
# non-default Altair theme's config and lays its own theme under it.
PROJECTOR_TEXT = {"labelFontSize": 14, "titleFontSize": 15, "labelColor": "#31333F", "titleColor": "#31333F"}
# The app's "Presenter view" scales the fonts below for one session. The theme is applied
# when a chart is serialised, in that session's script thread, so the app installs a
# function that reads the running session's scale (the core never imports streamlit).
_scale_source: Callable[[], float] = lambda: 1.0


def set_scale_source(source: Callable[[], float]) -> None:
    global _scale_source
    _scale_source = source


def font_size(pixels: float) -> int:
    """A chart annotation's font size in the running session's view (presenter view: larger).
    The theme cannot reach a text mark's own ``fontSize``, so charts pass theirs through here."""
    return round(pixels * _scale_source())


@alt.theme.register("bnviz", enable=True)
def projector_theme() -> alt.theme.ThemeConfig:
    scale = _scale_source()
    text = {**PROJECTOR_TEXT, "labelFontSize": round(14 * scale), "titleFontSize": round(15 * scale)}
    return alt.theme.ThemeConfig(
        config={
            "axis": text,
            "legend": {**text, "symbolSize": round(140 * scale), "labelLimit": round(260 * scale)},
            "header": text,
            # larger titles in the same width: break them into lines at their commas (Vega's lineBreak)
            "title": {"fontSize": round(17 * scale), **({"lineBreak": ", "} if scale > 1 else {})},
            "text": {"fontSize": round(11 * scale)},  # text marks that set no size of their own
        }
    )


def color_scale(labels: Iterable[str]) -> alt.Scale:
    """The palette's colours for ``labels``, in order; unknown labels get spare colours."""
    labels = list(dict.fromkeys(labels))
    spare = iter(FALLBACK_COLORS * 4)
    return alt.Scale(domain=labels, range=[PALETTE.get(label) or next(spare) for label in labels])


def model_color(label: str, labels: Sequence[str]) -> alt.Color:
    return alt.Color("model:N", title="model", scale=color_scale(labels), legend=alt.Legend(orient="top"))


def finite_or_none(values: np.ndarray) -> list:
    """Vega draws a gap for null; NaN/inf (a diverged run) must not reach it as a number."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


# Altair refuses to serialise a chart with more than 5,000 rows (MaxRowsError, from the
# downloads' ``chart.to_dict()``), and a curve gains nothing from more points than a chart
# is pixels wide: charts keep at most this many rows. The CSV downloads keep every point.
MAX_CHART_ROWS = 4_000


def thin_rows(frame: pd.DataFrame, series: Sequence[str], max_rows: int = MAX_CHART_ROWS) -> pd.DataFrame:
    """At most ``max_rows`` rows of a tidy frame, for display: the rows of each series (rows
    sharing the ``series`` columns, in their order, e.g. steps) evenly strided, each series'
    first and last row kept, every series given the same number of rows."""
    if len(frame) <= max_rows:
        return frame
    groups = frame.groupby(list(series), sort=False, dropna=False).indices
    per_series = max(2, max_rows // len(groups))
    keep = np.zeros(len(frame), dtype=bool)
    for positions in groups.values():
        if len(positions) > per_series:
            positions = positions[np.unique(np.linspace(0, len(positions) - 1, per_series).round().astype(int))]
        keep[positions] = True
    return frame[keep]


def value_axis(metric: str) -> alt.Axis:
    """A metric's axis: accuracies in percent (the app's one format, ``bnviz.formatting``), losses as numbers."""
    return alt.Axis(format=PERCENT_AXIS_FORMAT) if metric.endswith("_acc") else alt.Axis()


def value_format(metric: str) -> str:
    """A metric's tooltip format: accuracies as the text shows them, losses to 4 decimals."""
    return PERCENT_FORMAT if metric.endswith("_acc") else ".4f"


def curve_records(runs: Sequence[TrainResult], metric: str) -> pd.DataFrame:
    """Tidy rows (model, step, value) of one metric of several runs."""
    frames = [pd.DataFrame({"model": run.label, "step": run.eval_step, "value": finite_or_none(getattr(run, metric))}) for run in runs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "step", "value"])


def curves_chart(runs: Sequence[TrainResult], metric: str = "test_acc", title: str | None = None, y_domain=None, total_steps: int | None = None) -> alt.Chart:
    """Line chart of ``metric`` over training steps, one colour per model.

    ``total_steps`` fixes the x axis so a live chart does not rescale as it grows.
    """
    data = thin_rows(curve_records(runs, metric), ["model"])
    labels = [run.label for run in runs]
    y_title = METRIC_TITLES.get(metric, metric)
    y_scale = alt.Scale(domain=y_domain) if y_domain else alt.Scale(zero=False)
    x_scale = alt.Scale(domain=[0, total_steps]) if total_steps else alt.Scale()
    return (
        alt.Chart(data, title=title or y_title)
        .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=2.5)
        .encode(
            x=alt.X("step:Q", title="training step", scale=x_scale),
            y=alt.Y("value:Q", title=y_title, scale=y_scale, axis=value_axis(metric)),
            color=model_color("model", labels),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", title=y_title, format=value_format(metric))],
        )
        .properties(height=CHART_HEIGHT)
    )
