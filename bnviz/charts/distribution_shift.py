"""Charts of the distribution-shift page: activations per layer, units, fixes, the float16 threshold."""
from __future__ import annotations

import altair as alt
import pandas as pd

from . import CHART_HEIGHT, PALETTE, finite_or_none

MODE_COLORS = alt.Scale(domain=["train mode (batch statistics)", "eval mode (population statistics)"], range=[PALETTE["BN"], PALETTE["no BN"]])
LOG_FLOOR = 1e-3  # a log axis cannot show 0


def layer_records(result) -> pd.DataFrame:
    frame = pd.DataFrame(result.layers)
    for column in ("median_abs", "p99_abs", "max_abs"):
        frame[column] = [None if v is None else max(v, LOG_FLOOR) for v in finite_or_none(frame[column])]
    return frame


def layer_maxima_chart(result, float16_line: bool = True) -> alt.Chart:
    """Per BN layer, |output| in train vs eval mode on the shifted data (log scale):
    a bar from the median to the largest value, a tick at the 99th percentile."""
    data = layer_records(result)
    base = alt.Chart(data).encode(
        x=alt.X("layer:O", title="BN layer", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("mode:N", sort=list(MODE_COLORS.domain)),
        color=alt.Color("mode:N", scale=MODE_COLORS, title=None, legend=alt.Legend(orient="top", labelLimit=400)),
        tooltip=["layer:O", "mode:N", alt.Tooltip("median_abs:Q", format=".3g", title="median |output|"), alt.Tooltip("p99_abs:Q", format=".3g", title="99th percentile"),
                 alt.Tooltip("max_abs:Q", format=".4g", title="largest |output|"), alt.Tooltip("nonfinite:Q", title="NaN/inf values")],
    )
    y = alt.Y("median_abs:Q", title="|BN output| (log scale)", scale=alt.Scale(type="log"))
    bars = base.mark_bar(size=22, opacity=0.85).encode(y=y, y2="max_abs:Q")
    ticks = base.mark_tick(color="black", thickness=2, size=22).encode(y="p99_abs:Q")
    layers = [bars, ticks]
    if float16_line:
        limit = alt.Chart(pd.DataFrame({"limit": [65504.0], "text": ["float16 max 65,504"]}))
        layers.append(limit.mark_rule(strokeDash=[6, 4], color="#555").encode(y="limit:Q"))
        layers.append(limit.mark_text(align="left", dx=4, dy=-8, color="#555", fontSize=13).encode(y="limit:Q", text="text:N", x=alt.value(0)))
    return alt.layer(*layers).properties(height=CHART_HEIGHT, title="Each BN layer's output on the shifted images: median to largest |value|")


def units_chart(result) -> alt.Chart:
    """Every BN unit: running variance (x) against its largest |output| in eval mode on the shifted data (y)."""
    frame = pd.DataFrame(result.units)
    frame = frame[frame["running_var"].notna() & frame["max_abs_eval"].notna()].copy()
    frame["running_var"] = frame["running_var"].clip(lower=1e-30)
    frame["max_abs_eval"] = [None if v is None else max(v, LOG_FLOOR) for v in finite_or_none(frame["max_abs_eval"])]
    frame["layer"] = "layer " + frame["layer"].astype(str)
    return (
        alt.Chart(frame, title="Units with a tiny running variance are the ones that explode")
        .mark_circle(size=70, opacity=0.75)
        .encode(
            x=alt.X("running_var:Q", title="running variance (log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("max_abs_eval:Q", title="largest |output| in eval mode (log)", scale=alt.Scale(type="log")),
            color=alt.Color("layer:N", title="BN layer", legend=alt.Legend(orient="top")),
            tooltip=["layer:N", "unit:Q", alt.Tooltip("running_var:Q", format=".3g"), alt.Tooltip("amplification:Q", format=".1f"),
                     alt.Tooltip("max_abs_eval:Q", format=".4g", title="largest |output|, eval"), alt.Tooltip("max_abs_train:Q", format=".3g", title="largest |output|, train")],
        )
        .properties(height=CHART_HEIGHT)
    )


def fixes_chart(result) -> alt.Chart:
    """Each fix's accuracy on the shifted images (or its NaN count when accuracy is undefined)."""
    frame = pd.DataFrame(result.fixes)
    frame["label"] = [f"{n:,} NaN/inf" if n else "finite" for n in frame["nonfinite_outputs"]]
    measure = "accuracy" if result.accuracy_defined else "max_abs"
    frame[measure] = finite_or_none(frame[measure])
    title = "accuracy on the shifted images" if result.accuracy_defined else "largest |BN output| (log)"
    x = alt.X(f"{measure}:Q", title=title, scale=alt.Scale(domain=[0, 1]) if result.accuracy_defined else alt.Scale(type="log"),
              axis=alt.Axis(format="%") if result.accuracy_defined else alt.Axis())
    base = alt.Chart(frame).encode(y=alt.Y("fix:N", sort=None, title=None, axis=alt.Axis(labelLimit=420)))
    bars = base.mark_bar(color=PALETTE["BN"]).encode(x=x, tooltip=["fix:N", alt.Tooltip("accuracy:Q", format=".1%"), "nonfinite_outputs:Q", alt.Tooltip("max_abs:Q", format=".4g"), "note:N"])
    text = base.mark_text(align="left", dx=6, fontSize=14).encode(x=alt.value(6), text="label:N",
                                                                   color=alt.condition(alt.datum.nonfinite_outputs > 0, alt.value("#C00000"), alt.value("white")))
    return alt.layer(bars, text).properties(height=44 * len(frame), title="The fixes, on the same model and the same shifted images")


def eps_sweep_chart(result) -> alt.Chart:
    """Route (b): non-finite outputs against eps at evaluation, one line per precision."""
    frame = pd.DataFrame(result.eps_sweep)
    return (
        alt.Chart(frame, title="Non-finite outputs vs eps at evaluation (same weights)")
        .mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=2.5)
        .encode(
            x=alt.X("eps:Q", title="eps at evaluation (log scale)", scale=alt.Scale(type="log", reverse=True)),
            y=alt.Y("nonfinite_outputs:Q", title="test images with NaN/inf output"),
            color=alt.Color("precision:N", legend=alt.Legend(orient="top"), scale=alt.Scale(domain=["float32", "float16", "bfloat16"], range=["#4C78A8", "#E45756", "#54A24B"])),
            strokeDash=alt.StrokeDash("precision:N", legend=None),
            tooltip=["precision:N", alt.Tooltip("eps:Q", format=".0e"), "nonfinite_outputs:Q", alt.Tooltip("max_abs:Q", format=".4g", title="largest finite |BN output|")],
        )
        .properties(height=CHART_HEIGHT)
    )
