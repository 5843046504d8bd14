"""Charts of the distribution-shift page: activations per layer, units, fixes, the float16 threshold."""
from __future__ import annotations

import altair as alt
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT, format_percent
from . import CHART_HEIGHT, PALETTE, color_scale, finite_or_none, font_size, log_axis, palette, series_scale

# Train/eval mode, layers and finite/NaN are not models: the shared series colours, never a model's
# (BN's blue, no BN's red). A fix's bar is the colour of the model it runs: BN's, or the retrained
# LayerNorm's / GroupNorm's.
MODES = ["train mode", "eval mode"]
FLOAT16_STATES = ["finite", "NaN/inf outputs"]
FLOAT16_MAX = 65504.0
LOG_FLOOR = 1e-3  # a log axis cannot show 0


def layer_records(result) -> pd.DataFrame:
    frame = pd.DataFrame(result.layers)
    frame["mode"] = frame["mode"].str.split(" \\(").str[0]  # "train mode (batch statistics)" -> "train mode"
    for column in ("median_abs", "p99_abs", "max_abs"):
        frame[column] = [None if v is None else max(v, LOG_FLOOR) for v in finite_or_none(frame[column])]
    return frame


def layer_maxima_chart(result, float16_line: bool = True) -> alt.Chart:
    """Per BN layer, |output| in train vs eval mode on the shifted data (log scale):
    a bar from the median to the largest value, a tick at the 99th percentile."""
    data = layer_records(result)
    base = alt.Chart(data).encode(
        x=alt.X("layer:O", title="BN layer", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("mode:N", sort=MODES),
        color=alt.Color("mode:N", scale=series_scale(MODES), title=None, legend=alt.Legend(orient="top", labelLimit=400)),
        tooltip=["layer:O", "mode:N", alt.Tooltip("median_abs:Q", format=".3g", title="median |output|"), alt.Tooltip("p99_abs:Q", format=".3g", title="99th percentile"),
                 alt.Tooltip("max_abs:Q", format=".4g", title="largest |output|"), alt.Tooltip("nonfinite:Q", title="NaN/inf values")],
    )
    shown = [*data["median_abs"], *data["max_abs"], *([FLOAT16_MAX] if float16_line else [])]
    y = alt.Y("median_abs:Q", scale=alt.Scale(type="log"), axis=log_axis(shown, "|BN output| (log scale)"))
    bars = base.mark_bar(size=22, opacity=0.85).encode(y=y, y2="max_abs:Q")
    # the page's background colour: a notch cut into the bar, visible on both modes' colours and both themes
    ticks = base.mark_tick(thickness=3, size=22).encode(y="p99_abs:Q", color=alt.value(palette().background))
    broken = (base.transform_filter(alt.datum.nonfinite > 0).transform_calculate(label="format(datum.nonfinite, ',') + ' NaN/inf'")
              .mark_text(color=palette().warning, fontSize=font_size(13), fontWeight="bold", angle=270, align="right").encode(y=alt.value(8), text="label:N"))
    layers = [bars, ticks, broken]
    if float16_line:
        limit = alt.Chart(pd.DataFrame({"limit": [FLOAT16_MAX], "text": ["float16 max 65,504"]}))
        layers.append(limit.mark_rule(strokeDash=[6, 4], color=palette().muted).encode(y="limit:Q"))
        layers.append(limit.mark_text(align="left", dx=4, dy=-8, color=palette().muted, fontSize=font_size(13)).encode(y="limit:Q", text="text:N", x=alt.value(0)))
    subtitle = ["Bar: from the median |output| to the largest.", "Notch across a bar: the 99th percentile."]
    return alt.layer(*layers).properties(height=CHART_HEIGHT, title=alt.TitleParams("|BN output| per layer, log scale", subtitle=subtitle))


def units_chart(result) -> alt.Chart:
    """Every BN unit: running variance (x) against its largest |output| in eval mode on the shifted data (y)."""
    frame = pd.DataFrame(result.units)
    frame = frame[frame["running_var"].notna() & frame["max_abs_eval"].notna()].copy()
    frame["running_var"] = frame["running_var"].clip(lower=1e-30)
    frame["max_abs_eval"] = [None if v is None else max(v, LOG_FLOOR) for v in finite_or_none(frame["max_abs_eval"])]
    frame["layer"] = "layer " + frame["layer"].astype(str)
    return (
        alt.Chart(frame, title="Every BN unit, eval mode")
        .mark_circle(size=70, opacity=0.75)
        .encode(
            x=alt.X("running_var:Q", scale=alt.Scale(type="log"), axis=log_axis(frame["running_var"], "running variance (log scale)")),
            y=alt.Y("max_abs_eval:Q", scale=alt.Scale(type="log"), axis=log_axis(frame["max_abs_eval"], "largest |output| in eval mode (log)")),
            color=alt.Color("layer:N", title="BN layer", scale=series_scale(frame["layer"]), legend=alt.Legend(orient="top")),
            tooltip=["layer:N", "unit:Q", alt.Tooltip("running_var:Q", format=".3g"), alt.Tooltip("amplification:Q", format=".1f"),
                     alt.Tooltip("max_abs_eval:Q", format=".4g", title="largest |output|, eval"), alt.Tooltip("max_abs_train:Q", format=".3g", title="largest |output|, train")],
        )
        .properties(height=CHART_HEIGHT)
    )


def fixes_chart(result) -> alt.Chart:
    """Each fix's accuracy on the shifted images (or its NaN count when accuracy is undefined)."""
    frame = pd.DataFrame(result.fixes)
    replaced_by = [fix.split(" instead of BN")[0] for fix in frame["fix"]]
    frame["model"] = [label if label in PALETTE else "BN" for label in replaced_by]
    measure = "accuracy" if result.accuracy_defined else "max_abs"
    frame[measure] = finite_or_none(frame[measure])
    frame["label"] = [fix_label(value, n, result.accuracy_defined) for value, n in zip(frame[measure], frame["nonfinite_outputs"])]
    title = "accuracy on the shifted images" if result.accuracy_defined else "largest |BN output| (log)"
    x = alt.X(f"{measure}:Q", title=title, scale=alt.Scale(domain=[0, 1]) if result.accuracy_defined else alt.Scale(type="log"),
              axis=alt.Axis(format=PERCENT_AXIS_FORMAT) if result.accuracy_defined else log_axis(frame[measure]))
    base = alt.Chart(frame).encode(y=alt.Y("fix:N", sort=None, title=None, axis=alt.Axis(labelLimit=420)))
    bars = base.mark_bar().encode(x=x, color=alt.Color("model:N", scale=color_scale(frame["model"]), legend=None), tooltip=["fix:N", alt.Tooltip("accuracy:Q", format=PERCENT_FORMAT), "nonfinite_outputs:Q", alt.Tooltip("max_abs:Q", format=".4g"), "note:N"])
    text = base.mark_text(align="left", dx=6, fontSize=font_size(14)).encode(x=alt.X(f"{measure}:Q"), text="label:N",
                                                                   color=alt.condition(alt.datum.nonfinite_outputs > 0, alt.value(palette().warning), alt.value(palette().ink)))
    subtitle = (["Bar and label: accuracy on the shifted images;", "in red: how many outputs were NaN or inf (none: no red)."] if result.accuracy_defined
                else ["Bar: the largest |BN output| (accuracy is undefined: some outputs are NaN);", "in red: how many outputs were NaN or inf."])
    return alt.layer(bars, text).properties(height=44 * len(frame), title=alt.TitleParams("The fixes, on the same model and the same shifted images", subtitle=subtitle))


def fix_label(value, nonfinite_outputs: int, accuracy_defined: bool) -> str:
    """A fix's bar label: its value, and its NaN/inf count when there is one (a bar never
    says "finite": that is every bar's normal state)."""
    shown = "n/a" if value is None else (format_percent(value) if accuracy_defined else f"{value:.3g}")
    return f"{shown}, {nonfinite_outputs:,} NaN/inf" if nonfinite_outputs else shown


def eps_sweep_chart(result) -> alt.Chart:
    """Route (b): the largest float32 |BN output| against eps at evaluation (same weights), the float16
    limit as a dashed line, and each point coloured by what the float16 forward gave there."""
    frame = pd.DataFrame(result.eps_sweep)
    float32 = frame[frame["precision"] == "float32"][["eps", "largest_value", "largest_value_layer"]].reset_index(drop=True)
    float16 = frame[frame["precision"] == "float16"][["eps", "nonfinite_outputs"]].reset_index(drop=True)
    data = float32.merge(float16, on="eps")
    data["largest_value"] = [None if v is None else max(v, LOG_FLOOR) for v in finite_or_none(data["largest_value"])]
    data["float16"] = ["NaN/inf outputs" if n else "finite" for n in data["nonfinite_outputs"]]
    eps_axis = log_axis(data["eps"], "eps at evaluation (log scale)")
    eps_axis.format = ".0e"
    x = alt.X("eps:Q", scale=alt.Scale(type="log", reverse=True), axis=eps_axis)
    y = alt.Y("largest_value:Q", scale=alt.Scale(type="log"), axis=log_axis([*data["largest_value"], FLOAT16_MAX], "largest |value| in the forward, float32"))
    line = alt.Chart(data).mark_line(color=palette().faint, strokeWidth=2).encode(x=x, y=y)
    points = alt.Chart(data).mark_point(size=140, filled=True).encode(
        x=x, y=y,
        color=alt.Color("float16:N", title="float16 forward", scale=series_scale(FLOAT16_STATES), legend=alt.Legend(orient="top")),
        shape=alt.Shape("float16:N", title="float16 forward", scale=alt.Scale(domain=FLOAT16_STATES, range=["circle", "cross"]), legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("eps:Q", format=".0e"), alt.Tooltip("largest_value:Q", format=".4g", title="largest |value| (float32)"), alt.Tooltip("largest_value_layer:N", title="in layer"), alt.Tooltip("nonfinite_outputs:Q", title="float16: images with NaN/inf")],
    )
    limit = alt.Chart(pd.DataFrame({"limit": [FLOAT16_MAX], "text": ["float16 max 65,504"]}))
    rule = limit.mark_rule(strokeDash=[6, 4], color=palette().muted).encode(y="limit:Q")
    label = limit.mark_text(align="left", dx=4, dy=-8, color=palette().muted, fontSize=font_size(13)).encode(y="limit:Q", text="text:N", x=alt.value(0))
    return alt.layer(line, points, rule, label).properties(height=CHART_HEIGHT, title="Route (b): smaller eps, larger outputs, float16 overflow")
