"""Charts of the normalization-math page: one batch through eq. (1)-(4), the
nonlinearity regimes gamma and beta select, and bnviz's gradient against autograd."""
from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT, format_percent
from ..experiments.normalization_math import LINEAR_SLOPE, SATURATED_SLOPE, NormalizationMathResult
from . import CHART_HEIGHT, PALETTE, distinct_colors, finite_or_none, font_size, palette, series_scale

# the four stages of one neuron's values, with the result field that holds each
STEPS = {
    "input x": "x",
    "centred x − μ  (1)": "centred",
    "normalised x̂  (2, 3)": "x_hat",
    "output y = γx̂ + β  (4)": "y",
}
BEFORE_BN, AFTER_BN = "before BN (x)", "after eq. (3) (x̂)"
SMALL_HEIGHT = 220


def neuron_color(position: int) -> str:
    """The colour of the page's ``position``-th neuron, as its other charts colour it (series_scale)."""
    return distinct_colors([f"neuron {i}" for i in range(position + 1)], {})[position]


def histogram_records(values: np.ndarray, bins: int = 16) -> pd.DataFrame:
    """Density histogram (area 1) of the finite values; empty if none are finite."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return pd.DataFrame(columns=["start", "end", "density", "count"])
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:  # a constant: one narrow bar
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=min(bins, max(4, len(values))), range=(low, high))
    width = edges[1] - edges[0]
    return pd.DataFrame({"start": edges[:-1], "end": edges[1:], "density": counts / (len(values) * width), "count": counts})


def standard_normal_records(low: float, high: float, points: int = 200) -> pd.DataFrame:
    grid = np.linspace(low, high, points)
    return pd.DataFrame({"value": grid, "density": np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi)})


def step_histogram(result: NormalizationMathResult, step: str, neuron_position: int = 0) -> alt.Chart:
    """One neuron's batch values at one step of eq. (1)-(4); x̂ gets the N(0, 1) density."""
    values = getattr(result, STEPS[step])[:, neuron_position]
    data = histogram_records(values)
    bars = (
        alt.Chart(data, title=step)
        .mark_rect(color=neuron_color(neuron_position), opacity=0.8, stroke=palette().background, strokeWidth=0.5)
        .encode(
            x=alt.X("start:Q", title="value", scale=alt.Scale(zero=False)),
            x2="end:Q",
            y=alt.Y("density:Q", title="density"),
            y2=alt.datum(0),
            tooltip=[alt.Tooltip("start:Q", format=".3g"), alt.Tooltip("end:Q", format=".3g"), "count:Q"],
        )
        .properties(height=SMALL_HEIGHT)
    )
    if data.empty:  # every value NaN (eps = 0 on a constant neuron): say so instead of empty axes
        return alt.Chart(pd.DataFrame({"text": ["all values NaN"]}), title=step).mark_text(fontSize=font_size(18), color=palette().warning).encode(text="text:N").properties(height=SMALL_HEIGHT)
    if STEPS[step] != "x_hat":
        return bars
    low, high = min(-3.5, float(data["start"].min())), max(3.5, float(data["end"].max()))
    reference = alt.Chart(standard_normal_records(low, high)).mark_line(color=palette().ink, strokeDash=[5, 3]).encode(x="value:Q", y="density:Q")
    return alt.layer(bars, reference)


def neurons_records(result: NormalizationMathResult, field: str) -> pd.DataFrame:
    frames = []
    for position, neuron in enumerate(result.neurons):
        frame = histogram_records(getattr(result, field)[:, position], bins=15)
        frame["neuron"] = f"neuron {neuron}"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def neurons_chart(result: NormalizationMathResult, field: str, title: str) -> alt.Chart:
    """The three shown neurons' values overlaid (the article's three-neuron figure)."""
    labels = [f"neuron {n}" for n in result.neurons]
    return (
        alt.Chart(neurons_records(result, field), title=title)
        .mark_rect(opacity=0.5)
        .encode(
            x=alt.X("start:Q", title="value", scale=alt.Scale(zero=False)),
            x2="end:Q",
            y=alt.Y("density:Q", title="density"),
            y2=alt.datum(0),
            color=alt.Color("neuron:N", scale=series_scale(labels), legend=alt.Legend(orient="top", title=None)),
            tooltip=["neuron:N", alt.Tooltip("start:Q", format=".3g"), alt.Tooltip("end:Q", format=".3g"), "count:Q"],
        )
        .properties(height=CHART_HEIGHT)
    )


def all_neurons_records(result: NormalizationMathResult) -> pd.DataFrame:
    neurons = np.arange(len(result.all_mean))
    before = pd.DataFrame({"neuron": neurons, "stage": "before BN (x)", "mean": finite_or_none(result.all_mean), "std": finite_or_none(np.sqrt(result.all_var))})
    after = pd.DataFrame({"neuron": neurons, "stage": "after eq. (3) (x̂)", "mean": finite_or_none(result.all_x_hat_mean), "std": finite_or_none(np.sqrt(result.all_x_hat_var))})
    return pd.concat([before, after], ignore_index=True)


def all_neurons_chart(result: NormalizationMathResult) -> alt.Chart:
    """Every neuron's batch mean and standard deviation, before and after normalising."""
    stages = [BEFORE_BN, AFTER_BN]
    return (
        alt.Chart(all_neurons_records(result), title=f"All {len(result.all_mean)} neurons: batch mean and std")
        .mark_circle(size=70, opacity=0.8)
        .encode(
            x=alt.X("mean:Q", title="batch mean"),
            y=alt.Y("std:Q", title="batch standard deviation"),
            color=alt.Color("stage:N", scale=alt.Scale(domain=stages, range=[palette().faint, PALETTE["BN"]]), legend=alt.Legend(orient="top", title=None)),
            tooltip=["neuron:Q", "stage:N", alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("std:Q", format=".4g")],
        )
        .properties(height=CHART_HEIGHT)
    )


NONLINEARITY_FUNCTIONS = {
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0.0),
}


def regime_bands(result: NormalizationMathResult, nonlinearity: str, low: float, high: float) -> pd.DataFrame:
    """Intervals of the input axis in each regime, from the result's |y| bounds."""
    bounds = result.regime_bounds[nonlinearity]
    if nonlinearity == "relu":
        rows = [("dead", low, 0.0), ("linear", 0.0, high)]
    else:
        linear, saturated = bounds["linear"], bounds["saturated"]
        rows = [
            ("saturated", low, -saturated),
            ("curved", -saturated, -linear),
            ("linear", -linear, linear),
            ("curved", linear, saturated),
            ("saturated", saturated, high),
        ]
    return pd.DataFrame([{"regime": r, "start": max(a, low), "end": min(b, high)} for r, a, b in rows if min(b, high) > max(a, low)])


def nonlinearity_chart(result: NormalizationMathResult, nonlinearity: str) -> alt.Chart:
    """BN's output y (every neuron's, as the regime fractions) over the nonlinearity's curve and its regimes.

    The histogram is scaled so its tallest bar reaches the curve's top; the
    axis on the right reads it as the share of values per bin.
    """
    values = np.asarray(result.all_y, dtype=float).ravel()
    values = values[np.isfinite(values)]
    spread = max(6.0, float(np.abs(values).max()) if len(values) else 6.0)
    low, high = -min(spread, 30.0), min(spread, 30.0)
    function = NONLINEARITY_FUNCTIONS[nonlinearity]
    grid = np.linspace(low, high, 400)
    curve = pd.DataFrame({"input": grid, "output": function(grid)})
    top = float(curve["output"].max())
    clipped = np.clip(values, low, high)
    counts, edges = np.histogram(clipped, bins=48, range=(low, high))
    share = counts / max(len(values), 1)
    bars_data = pd.DataFrame({"start": edges[:-1], "end": edges[1:], "share": share, "height": share / max(share.max(), 1e-12) * top})
    bands = regime_bands(result, nonlinearity, low, high)
    regimes = list(dict.fromkeys(bands["regime"]))
    band_chart = (
        alt.Chart(bands)
        .mark_rect(opacity=0.55)
        .encode(
            x=alt.X("start:Q", title="y = γx̂ + β (input of the nonlinearity)", scale=alt.Scale(domain=[low, high])),
            x2="end:Q",
            color=alt.Color("regime:N", scale=alt.Scale(domain=regimes, range=[palette().regimes[r] for r in regimes]), legend=alt.Legend(orient="top", title="regime")),
        )
    )
    bars = (
        alt.Chart(bars_data)
        .mark_rect(color=PALETTE["BN"], opacity=0.75, stroke=palette().background, strokeWidth=0.5)
        .encode(
            x=alt.X("start:Q", scale=alt.Scale(domain=[low, high])),
            x2="end:Q",
            y=alt.Y("height:Q", title=f"{nonlinearity}(y)"),
            y2=alt.datum(0),
            tooltip=[alt.Tooltip("start:Q", format=".3g"), alt.Tooltip("end:Q", format=".3g"), alt.Tooltip("share:Q", title="share of values", format=PERCENT_FORMAT)],
        )
    )
    line = alt.Chart(curve).mark_line(color=palette().ink, strokeWidth=3).encode(x="input:Q", y="output:Q")
    if nonlinearity == "relu":
        title = "relu over BN's output (linear: slope 1; dead: slope 0)"
    else:
        title = f"{nonlinearity} over BN's output (linear: slope ≥ {LINEAR_SLOPE:.0%} of its steepest; saturated: ≤ {SATURATED_SLOPE:.0%})"
    # two quantities share the y axis: say which one it measures
    subtitle = [f"Line: {nonlinearity}(y), read on the axis. Shaded: its regimes.",
                "Bars: where BN's outputs fall, the tallest scaled to the line's top",
                "(not read on the axis: hover a bar for its share of values)."]
    return alt.layer(band_chart, bars, line, title=alt.TitleParams(title, subtitle=subtitle)).properties(height=CHART_HEIGHT)


def gradient_records(result: NormalizationMathResult) -> pd.DataFrame:
    frames = []
    for position, neuron in enumerate(result.neurons):
        frames.append(
            pd.DataFrame(
                {
                    "neuron": f"neuron {neuron}",
                    "example": np.arange(result.batch_size),
                    "bnviz": finite_or_none(result.grad_x[:, position]),
                    "autograd": finite_or_none(result.grad_x_autograd[:, position]),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def gradient_chart(result: NormalizationMathResult) -> alt.Chart:
    """dL/dx from bnviz's formula against autograd's: every point on the diagonal means equal."""
    data = gradient_records(result)
    labels = [f"neuron {n}" for n in result.neurons]
    finite = data[["bnviz", "autograd"]].dropna()
    extent = float(finite.abs().max().max()) if len(finite) else 1.0
    diagonal = pd.DataFrame({"bnviz": [-extent, extent], "autograd": [-extent, extent]})
    points = (
        alt.Chart(data)
        .mark_circle(size=80, opacity=0.8)
        .encode(
            x=alt.X("autograd:Q", title="dL/dx by autograd (torch.nn.BatchNorm1d)"),
            y=alt.Y("bnviz:Q", title="dL/dx by bnviz's formula"),
            color=alt.Color("neuron:N", scale=series_scale(labels), legend=alt.Legend(orient="top", title=None)),
            tooltip=["neuron:N", "example:Q", alt.Tooltip("bnviz:Q", format=".6g"), alt.Tooltip("autograd:Q", format=".6g")],
        )
    )
    line = alt.Chart(diagonal).mark_line(color=palette().ink, strokeDash=[4, 4]).encode(x="autograd:Q", y="bnviz:Q")
    return alt.layer(line, points).properties(height=CHART_HEIGHT)


AGREEMENT_TOLERANCE = 1e-6  # the tests' tolerance for bnviz against torch (float32)


def nonlinearity_takeaway(result: NormalizationMathResult, nonlinearity: str) -> str:
    """The regime chart's sentence: the share of BN's outputs in each regime, the largest first."""
    shares = sorted(result.regimes[nonlinearity].items(), key=lambda item: -item[1])
    listed = ", ".join(f"{format_percent(share)} {regime}" for regime, share in shares)
    return f"Of the {result.all_y.size:,} values BN passes on, {listed} ({nonlinearity}, γ = {result.config.gamma:g}, β = {result.config.beta:g})."


def gradient_takeaway(result: NormalizationMathResult) -> str:
    """The gradient check's sentence: how far the formula's points lie from autograd's."""
    difference = np.abs(np.asarray(result.grad_x, float) - np.asarray(result.grad_x_autograd, float))
    if not np.all(np.isfinite(difference)):
        return "Some gradients are NaN or infinite (a constant neuron with ε = 0): those points are not drawn."
    agree = "on the diagonal to float precision" if difference.max() <= AGREEMENT_TOLERANCE else "off the diagonal: a bug to report"
    return f"Over {difference.size} points the formula and autograd differ by at most {difference.max():.1e}: {agree}."
