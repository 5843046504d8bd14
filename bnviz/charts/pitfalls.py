"""Charts of the "BN pitfalls in real code" page: the accidental train-mode pass, label-shifted
test batches, and gradients at initialization in deep plain networks."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT, format_percent
from ..experiments.bn_switches import SwitchesResult
from ..experiments.forward_pass_pitfall import ForwardPassResult
from ..experiments.init_gradients import RELU_BN_GROWTH_ESTIMATE, VARIANTS, InitGradientsResult
from ..experiments.label_shift import METHODS, LabelShiftResult
from . import CHART_HEIGHT, PALETTE, color_scale, log_axis, mode_colors, palette, series_scale


def spread_frame(rows: list[dict], keys: list[str], value: str) -> pd.DataFrame:
    """Mean, lowest and highest of ``value`` over seeds, per combination of ``keys`` (tidy rows in, tidy rows out)."""
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(keys, sort=False)[value]
    return pd.DataFrame({"mean": grouped.mean(), "low": grouped.min(), "high": grouped.max()}).reset_index()


# ------------------------------------------------------------ 1. the accidental train-mode pass
def running_stats_frame(result: ForwardPassResult) -> pd.DataFrame:
    """(unit, statistic, when, value): seed 0's first-layer running mean and variance before and after the no_grad pass."""
    rows = []
    for row in result.shown_stats:
        for statistic, name in (("mean", "running_mean"), ("var", "running_var")):
            rows.append({"unit": row["unit"], "statistic": name, "when": "before the pass", "value": row[f"{statistic}_before"]})
            rows.append({"unit": row["unit"], "statistic": name, "when": "after the no_grad pass", "value": row[f"{statistic}_after"]})
    return pd.DataFrame(rows)


def running_stats_chart(result: ForwardPassResult) -> alt.FacetChart:
    """Before/after dots joined by a rule per unit, one panel for the running mean and one for the variance."""
    data = running_stats_frame(result)
    whens = ["before the pass", "after the no_grad pass"]
    color = alt.Color("when:N", title=None, scale=series_scale(whens), legend=alt.Legend(orient="top"))
    x = alt.X("unit:O", title="unit of the first BN layer")
    rules = alt.Chart().mark_rule(color=palette().faint, strokeWidth=2).encode(x=x, y=alt.Y("min(value):Q", title="value"), y2="max(value):Q")
    dots = alt.Chart().mark_point(filled=True, size=110, opacity=1).encode(
        x=x, y=alt.Y("value:Q", title="value"), color=color, tooltip=["unit:O", "statistic:N", "when:N", alt.Tooltip("value:Q", format=".4f")])
    return alt.layer(rules, dots, data=data).properties(height=CHART_HEIGHT - 80, width=320).facet(
        column=alt.Column("statistic:N", title=None), title="Running statistics before and after one pass under torch.no_grad() (seed 0)").resolve_scale(y="independent")


def batch_size_frame(result: ForwardPassResult) -> pd.DataFrame:
    frame = spread_frame(result.records(), ["batch_size"], "accuracy")
    return frame.replace({np.nan: None})


def batch_size_chart(result: ForwardPassResult) -> alt.LayerChart:
    """Train-mode accuracy (forgetting model.eval()) vs test batch size, mean and seed range; eval mode dashed."""
    data = batch_size_frame(result)
    sizes = list(result.config.test_batch_sizes)
    x = alt.X("batch_size:Q", title="test batch size (log scale)", scale=alt.Scale(type="log", domain=[min(sizes), max(sizes)]), axis=log_axis(sizes, "test batch size (log scale)"))
    y = alt.Y("mean:Q", title="test accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=PERCENT_AXIS_FORMAT))
    defined = data[data["mean"].notna()]
    train_mode, eval_mode = mode_colors()["train mode"], mode_colors()["eval mode"]
    band = alt.Chart(defined).mark_area(opacity=0.2, color=train_mode).encode(x=x, y=alt.Y("low:Q", title="test accuracy"), y2="high:Q")
    line = alt.Chart(defined).mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=3, color=train_mode).encode(
        x=x, y=y, tooltip=[alt.Tooltip("batch_size:Q", title="batch size"), alt.Tooltip("mean:Q", format=PERCENT_FORMAT, title="mean over seeds"),
                           alt.Tooltip("low:Q", format=PERCENT_FORMAT, title="lowest seed"), alt.Tooltip("high:Q", format=PERCENT_FORMAT, title="highest seed")])
    eval_accuracy = float(result.accuracy_before.mean())
    reference = alt.Chart(pd.DataFrame({"accuracy": [eval_accuracy], "label": [f"eval mode: {format_percent(eval_accuracy)} at any batch size"]})).mark_rule(
        strokeDash=[6, 4], strokeWidth=2.5, color=eval_mode).encode(y="accuracy:Q", tooltip=["label:N"])
    return alt.layer(band, reference, line, title="Forgetting model.eval(): train-mode accuracy by test batch size").properties(height=CHART_HEIGHT)


# ------------------------------------------------------------ 2. label-shifted test batches
def label_shift_frame(result: LabelShiftResult) -> pd.DataFrame:
    return spread_frame(result.records(), ["data", "method", "classes"], "accuracy")


def label_shift_chart(result: LabelShiftResult) -> alt.FacetChart:
    """Accuracy vs digits per test batch, one line per method (mean over seeds, bars: seed range), clean | shifted."""
    data = label_shift_frame(result)
    counts = list(result.config.class_counts)
    color = alt.Color("method:N", title=None, scale=series_scale(METHODS), legend=alt.Legend(orient="top"))
    x = alt.X("classes:Q", title="digits in each test batch", scale=alt.Scale(type="log", domain=[min(counts), max(counts)]), axis=alt.Axis(values=counts, format="~d"))
    y = alt.Y("mean:Q", title="accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=PERCENT_AXIS_FORMAT))
    line = alt.Chart().mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=2.5).encode(
        x=x, y=y, color=color, strokeDash=alt.StrokeDash("method:N", legend=None, scale=alt.Scale(domain=list(METHODS), range=[[1, 0], [1, 0], [6, 3], [2, 2]])),
        tooltip=["data:N", "method:N", alt.Tooltip("classes:Q", title="digits per batch"), alt.Tooltip("mean:Q", format=PERCENT_FORMAT, title="mean over seeds"),
                 alt.Tooltip("low:Q", format=PERCENT_FORMAT, title="lowest seed"), alt.Tooltip("high:Q", format=PERCENT_FORMAT, title="highest seed")])
    bars = alt.Chart().mark_errorbar(thickness=2).encode(x=x, y=alt.Y("low:Q", title="accuracy"), y2="high:Q", color=color)
    return alt.layer(bars, line, data=data).properties(height=CHART_HEIGHT - 60, width=380).facet(
        column=alt.Column("data:N", title=None, sort=["clean digits", "shifted digits"]), title="Accuracy on label-shifted test batches")


# ------------------------------------------------------------ 3. gradients at initialization
def layer_norms_frame(result: InitGradientsResult, depth: int) -> pd.DataFrame:
    rows = [row for row in result.records() if row["depth"] == depth]
    return spread_frame(rows, ["model", "layer"], "gradient_norm")


def layer_norms_chart(result: InitGradientsResult, depth: int) -> alt.LayerChart:
    """Gradient norm at each hidden layer's output (log y), one line per variant: mean over seeds, band: seed range."""
    data = layer_norms_frame(result, depth)
    color = alt.Color("model:N", title="model", scale=color_scale(VARIANTS), legend=alt.Legend(orient="top", symbolOpacity=1))
    x = alt.X("layer:Q", title="hidden layer (1 = next to the input)", scale=alt.Scale(domain=[1, depth]))
    y_axis = log_axis(pd.concat([data["low"], data["high"]]), "gradient norm ||dL/dh|| (log scale)")
    y = alt.Y("mean:Q", scale=alt.Scale(type="log"), axis=y_axis)
    band = alt.Chart(data).mark_area(opacity=0.2).encode(x=x, y=alt.Y("low:Q", scale=alt.Scale(type="log"), axis=y_axis), y2="high:Q", color=color)
    line = alt.Chart(data).mark_line(point=alt.OverlayMarkDef(size=30), strokeWidth=2.5).encode(
        x=x, y=y, color=color, tooltip=["model:N", "layer:Q", alt.Tooltip("mean:Q", format=".4g", title="mean over seeds")])
    return alt.layer(band, line, title=f"Gradient norm per layer at initialization, {depth} hidden layers").properties(height=CHART_HEIGHT)


def depth_frame(result: InitGradientsResult) -> pd.DataFrame:
    rows = [{"model": variant, "depth": depth, "seed": s, "ratio": float(r)}
            for variant in VARIANTS for depth in result.config.depths for s, r in enumerate(result.first_to_last(variant, depth))]
    frame = spread_frame(rows, ["model", "depth"], "ratio")
    estimate = [{"model": f"estimate {RELU_BN_GROWTH_ESTIMATE:.3f}^(L-1)", "depth": d, "mean": RELU_BN_GROWTH_ESTIMATE ** (d - 1), "low": None, "high": None} for d in result.config.depths]
    return pd.concat([frame, pd.DataFrame(estimate)], ignore_index=True)


def depth_chart(result: InitGradientsResult) -> alt.LayerChart:
    """First-layer over last-layer gradient norm against depth (log y), with the sqrt(pi/(pi-1)) estimate dashed."""
    data = depth_frame(result)
    labels = list(VARIANTS) + [label for label in data["model"].unique() if label not in VARIANTS]
    color = alt.Color("model:N", title="model", scale=color_scale(labels), legend=alt.Legend(orient="top", labelLimit=300))
    depths = list(result.config.depths)
    x = alt.X("depth:Q", title="hidden layers L", scale=alt.Scale(domain=[min(depths), max(depths)]))
    y_axis = log_axis(data["mean"], "g_1 / g_L (log scale)")
    measured = alt.FieldOneOfPredicate(field="model", oneOf=list(VARIANTS))
    line = alt.Chart(data).transform_filter(measured).mark_line(point=alt.OverlayMarkDef(size=60), strokeWidth=2.5).encode(
        x=x, y=alt.Y("mean:Q", scale=alt.Scale(type="log"), axis=y_axis), color=color,
        tooltip=["model:N", "depth:Q", alt.Tooltip("mean:Q", format=".4g", title="mean over seeds")])
    estimate = alt.Chart(data).transform_filter(~measured).mark_line(strokeDash=[6, 4], strokeWidth=2).encode(
        x=x, y=alt.Y("mean:Q", scale=alt.Scale(type="log"), axis=y_axis), color=color, tooltip=["model:N", "depth:Q", alt.Tooltip("mean:Q", format=".4g")])
    # the estimate on top, dashed: it lies on the measured BN line
    return alt.layer(line, estimate, title="First over last layer's gradient, by depth").properties(height=CHART_HEIGHT)


# ------------------------------------------------------------ 4. the textbook's exercises as switches
def switches_frame(result: SwitchesResult) -> pd.DataFrame:
    return spread_frame(result.records(), ["switch"], "accuracy")


def switches_chart(result: SwitchesResult) -> alt.LayerChart:
    """Final test accuracy per switch: each seed a dot, the mean a bar tick; full BN's mean as a rule."""
    from ..experiments.bn_switches import FULL_BN

    seeds = pd.DataFrame(result.records())
    order = list(result.config.switches)
    y = alt.Y("switch:N", title=None, sort=order, axis=alt.Axis(labelLimit=260))
    x = alt.X("accuracy:Q", title="final test accuracy (eval mode)", axis=alt.Axis(format=PERCENT_AXIS_FORMAT), scale=alt.Scale(zero=False))
    dots = alt.Chart(seeds).mark_point(filled=True, size=90, opacity=0.7, color=PALETTE["BN"]).encode(
        x=x, y=y, tooltip=["switch:N", "seed:Q", alt.Tooltip("accuracy:Q", format=PERCENT_FORMAT)])
    means = alt.Chart(switches_frame(result)).mark_tick(thickness=3, size=26, color=palette().ink).encode(
        x=alt.X("mean:Q", title="final test accuracy (eval mode)"), y=y, tooltip=["switch:N", alt.Tooltip("mean:Q", format=PERCENT_FORMAT, title="mean over seeds")])
    reference = alt.Chart(pd.DataFrame({"accuracy": [float(np.nanmean(result.accuracy[FULL_BN]))]})).mark_rule(strokeDash=[6, 4], color=PALETTE["BN"]).encode(x="accuracy:Q")
    return alt.layer(reference, dots, means, title=f"One part of BN switched off: final test accuracy after {result.config.steps} steps").properties(height=CHART_HEIGHT)
