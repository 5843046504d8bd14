"""Result -> ``alt.Chart``. Pages only lay charts out; charts never train.

One palette, set once: a model kind has the same colour on every page
(no BN, BN, BN after the activation, LayerNorm, GroupNorm, ...), from one
colour-blind-safe categorical set; everything else a chart colours (text, rules,
reference lines, cell borders) comes from the running theme's :class:`Palette`.
Topic-specific charts live in sibling modules; the shared pieces are here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
if TYPE_CHECKING:  # the type only: charts load without torch (a fresh server's first paint)
    from ..train import TrainResult

# ------------------------------------------------------------------ colours
# One categorical palette for every chart: Okabe & Ito's (2008, "Color Universal Design"),
# eight colours told apart with each common colour-vision deficiency, on white and on black.
# Its eighth colour, black, is the theme's ink (white on the dark theme).
ORANGE, SKY_BLUE, BLUISH_GREEN, YELLOW = "#E69F00", "#56B4E9", "#009E73", "#F0E442"
BLUE, VERMILLION, REDDISH_PURPLE = "#0072B2", "#D55E00", "#CC79A7"
INK = "ink"  # a colour name for the theme's ink (Palette.ink)
# A series' colour when the chart's own labels do not claim it, in this order (yellow last:
# it is faint on white).
CATEGORICAL = (ORANGE, SKY_BLUE, BLUISH_GREEN, REDDISH_PURPLE, VERMILLION, BLUE, INK, YELLOW)

# A model kind has the same colour on every page, and the kinds one chart shows together are
# distinct: home {no BN, BN}; placement {no BN, BN before, BN after}; small batches {BN, Batch
# Renorm, ghost BN, GroupNorm, LayerNorm, no BN}; BN vs LN {BN, LayerNorm, InstanceNorm,
# GroupNorm, RMSNorm, no BN}; why {no BN, BN, noisy BN, no BN + noise} (tests/test_palette.py).
PALETTE = {
    "no BN": VERMILLION,
    "BN": BLUE,
    "BN before": BLUE,
    "BN after": BLUISH_GREEN,
    "LayerNorm": ORANGE,
    "RMSNorm": REDDISH_PURPLE,
    "GroupNorm": BLUISH_GREEN,
    "InstanceNorm": SKY_BLUE,
    "noisy BN": SKY_BLUE,  # BN's blue, lighter: BN with noise added
    "Batch Renorm": SKY_BLUE,
    "ghost BN": REDDISH_PURPLE,
    "no BN + noise": REDDISH_PURPLE,
}


@dataclass(frozen=True)
class Palette:
    """Everything a chart draws in a colour that is not a series': text, rules, reference
    lines, cell borders, tinted backgrounds. One per theme ("light", "dark"); charts read the
    running session's through :func:`palette`, never a hex literal of their own."""

    ink: str  # axis labels, titles, reference lines and curves (Okabe-Ito's black, or white)
    muted: str  # secondary rules and their labels (a limit, a range)
    faint: str  # a neutral series (a batch's raw values)
    background: str  # the page's: cell borders, a mark that must read as a gap
    warning: str  # NaN/inf counts
    other_sets: tuple[str, str]  # the pooling grids' cells outside the highlighted set, alternating
    regimes: dict  # the nonlinearity's linear / curved / saturated / dead bands
    good_cell: str  # a table cell's background for a measured yes (invariant), under ink text
    bad_cell: str  # ... and for a no

    def color(self, name: str) -> str:
        return self.ink if name == INK else name


PALETTES = {
    "light": Palette(ink="#1F1F1F", muted="#555555", faint="#A0A0A0", background="#FFFFFF", warning="#B00000",
                     other_sets=("#D9D9D9", "#F2F2F2"),
                     regimes={"linear": "#C7E9C0", "curved": "#FDE0B2", "saturated": "#F4B6B6", "dead": "#F4B6B6"},
                     good_cell="#D8F0D2", bad_cell="#FBE0DC"),
    # dim rooms: white on black, as the app's [theme.dark] (.streamlit/config.toml)
    "dark": Palette(ink="#FFFFFF", muted="#CCCCCC", faint="#8C8C8C", background="#000000", warning="#FF6B6B",
                    other_sets=("#5A5A5A", "#333333"),
                    regimes={"linear": "#1E4D2B", "curved": "#5C4300", "saturated": "#6B1F1F", "dead": "#6B1F1F"},
                    good_cell="#1E4D2B", bad_cell="#6B1F1F"),
}

# The app (bnviz.app) installs the running session's theme name; the core never imports streamlit.
_theme_source: Callable[[], str] = lambda: "light"


def set_theme_source(source: Callable[[], str]) -> None:
    global _theme_source
    _theme_source = source


def palette() -> Palette:
    """The running session's palette (light outside a session: CLI, tests, downloads)."""
    return PALETTES.get(_theme_source(), PALETTES["light"])


def mode_colors() -> dict:
    """train mode / eval mode, the same on every page."""
    return {"train mode": palette().ink, "eval mode": REDDISH_PURPLE}


def distinct_colors(labels: Iterable[str], fixed: dict) -> list[str]:
    """A colour per label: ``fixed``'s where it has one, else the first of :data:`CATEGORICAL`
    that no other label of the chart has: up to eight labels, eight distinct colours."""
    labels = list(dict.fromkeys(labels))
    shown = palette()
    claimed = {shown.color(fixed[label]) for label in labels if label in fixed}
    colors = []
    for label in labels:
        if label in fixed:
            colors.append(shown.color(fixed[label]))
            continue
        spare = next((c for c in map(shown.color, CATEGORICAL) if c not in claimed), shown.color(CATEGORICAL[len(colors) % len(CATEGORICAL)]))
        claimed.add(spare)
        colors.append(spare)
    return colors


def series_scale(labels: Iterable[str]) -> alt.Scale:
    """Colours for non-model categories (neurons, statistics, layers), in order; train and
    eval mode keep theirs (:func:`mode_colors`)."""
    labels = list(dict.fromkeys(labels))
    return alt.Scale(domain=labels, range=distinct_colors(labels, mode_colors()))


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
PROJECTOR_TEXT = {"labelFontSize": 14, "titleFontSize": 15}  # in the palette's ink (projector_theme)
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
    scale, ink = _scale_source(), palette().ink
    text = {**PROJECTOR_TEXT, "labelFontSize": round(14 * scale), "titleFontSize": round(15 * scale), "labelColor": ink, "titleColor": ink}
    return alt.theme.ThemeConfig(
        config={
            "axis": text,
            "legend": {**text, "symbolSize": round(140 * scale), "labelLimit": round(260 * scale)},
            "header": text,
            # larger titles in the same width: break them into lines at their commas (Vega's lineBreak)
            "title": {"fontSize": round(17 * scale), "color": ink, "subtitleColor": ink, **({"lineBreak": ", "} if scale > 1 else {})},
            "text": {"fontSize": round(11 * scale), "color": ink},  # text marks that set no size or colour of their own
            "rule": {"color": ink},
        }
    )


def color_scale(labels: Iterable[str]) -> alt.Scale:
    """The models' colours (:data:`PALETTE`) for ``labels``, in order; a label the palette does
    not name gets a colour no other label of the chart has (:func:`distinct_colors`)."""
    labels = list(dict.fromkeys(labels))
    return alt.Scale(domain=labels, range=distinct_colors(labels, PALETTE))


def model_color(label: str, labels: Sequence[str]) -> alt.Color:
    return alt.Color("model:N", title="model", scale=color_scale(labels), legend=alt.Legend(orient="top"))


def finite_or_none(values: np.ndarray) -> list:
    """Vega draws a gap for null; NaN/inf (a diverged run) must not reach it as a number."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


# A curve gains nothing from more points than a chart is pixels wide, and every point is
# sent to each browser that shows it: charts keep at most this many rows (thin_rows). The
# CSV downloads keep every point.
MAX_CHART_ROWS = 4_000
# Altair's own guard (MaxRowsError past 5,000 rows) would turn a chart thin_rows missed into
# a traceback; with rows thinned, the spec is built whatever its size.
alt.data_transformers.disable_max_rows()


def chart_spec(chart) -> dict:
    """The chart's Vega-Lite spec, built once per drawing: the page shows it, its takeaway
    reads it and its image download renders it. Not validated against the Vega-Lite schema
    here (that took two thirds of a page rerun's chart time, measured on the placement page:
    0.8 of 1.3 s): the chart builders' tests serialise with validation."""
    return chart.to_dict(validate=False)


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


def chart_title(text: str) -> alt.TitleParams | str:
    """``text`` as a chart title; a parenthesised tail ("(first 2,000 test images)") becomes
    the subtitle line: at half width (and in presenter view) Vega cut one long line with "…"."""
    head, sep, tail = text.partition(" (")
    if not sep or not tail.endswith(")") or not head:
        return text
    return alt.TitleParams(text=head, subtitle=tail[:-1])


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
        alt.Chart(data, title=chart_title(title or y_title))
        .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=2.5)
        .encode(
            x=alt.X("step:Q", title="training step", scale=x_scale),
            y=alt.Y("value:Q", title=y_title, scale=y_scale, axis=value_axis(metric)),
            color=model_color("model", labels),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", title=y_title, format=value_format(metric))],
        )
        .properties(height=CHART_HEIGHT)
    )
