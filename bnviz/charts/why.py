"""Charts of the "Why does BN work?" page: noisy BN's drift, ICS, the loss landscape, interdependency."""
from __future__ import annotations

import warnings
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd

from ..probes import LOWER_LAYER_CHANGES
from ..train import TrainResult
from . import CHART_HEIGHT, finite_or_none, log_axis, model_color, thin_rows

# Log axes cannot show 0; a drift or a change below this is drawn at it.
LOG_FLOOR = 1e-8
SMALL_HEIGHT = 220


def _positive(values) -> list:
    return [None if v is None else max(v, LOG_FLOOR) for v in finite_or_none(values)]


def drift_records(runs: Sequence[TrainResult], smooth: int = 10) -> pd.DataFrame:
    """Tidy (model, step, measure, value): the layer-averaged step-to-step change in unit mean and variance,
    a running mean over ``smooth`` steps (a single step's change is mostly batch-sampling noise)."""
    frames = []
    for run in runs:
        r = run.records
        for key, measure in (("drift_mean", "change of a unit's mean"), ("drift_var", "change of a unit's variance")):
            series = pd.Series(r[key].mean(axis=1) if r[key].size else [], dtype=float).rolling(smooth, min_periods=1).mean()
            frames.append(pd.DataFrame({"model": run.label, "step": r["drift_step"], "measure": measure, "value": _positive(series.to_numpy())}))
    return pd.concat(frames, ignore_index=True)


def drift_chart(runs: Sequence[TrainResult], measure: str, title: str) -> alt.Chart:
    data = drift_records(runs)
    data = thin_rows(data[data["measure"] == measure], ["model"])
    labels = [run.label for run in runs]
    return (
        alt.Chart(data, title=title)
        .mark_line(strokeWidth=2.5)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y("value:Q", scale=alt.Scale(type="log"), axis=log_axis(data["value"], f"{measure} per step (log)")),
            color=model_color("model", labels),
            tooltip=["model:N", "step:Q", alt.Tooltip("value:Q", format=".2e")],
        )
        .properties(height=CHART_HEIGHT)
    )


def unit_records(runs: Sequence[TrainResult]) -> pd.DataFrame:
    frames = []
    for run in runs:
        r = run.records
        mean, std = r["drift_unit_mean"], r["drift_unit_std"]
        frames.append(pd.DataFrame({"model": run.label, "step": r["drift_step"], "mean": finite_or_none(mean), "low": finite_or_none(mean - std), "high": finite_or_none(mean + std)}))
    return pd.concat(frames, ignore_index=True)


def unit_distribution_chart(runs: Sequence[TrainResult]) -> alt.FacetChart:
    """One unit's input over training: batch mean and mean ± one standard deviation (Santurkar et al. Fig. 2)."""
    data = thin_rows(unit_records(runs), ["model"])
    labels = [run.label for run in runs]
    base = alt.Chart(data).encode(x=alt.X("step:Q", title="training step"), color=model_color("model", labels))
    band = base.mark_area(opacity=0.3).encode(y=alt.Y("low:Q", title="unit 1 of the last hidden layer: input"), y2="high:Q")
    line = base.mark_line(strokeWidth=1.5).encode(y="mean:Q")
    return (
        alt.layer(band, line, data=data)
        .properties(width=180, height=SMALL_HEIGHT)
        .facet(column=alt.Column("model:N", title=None, sort=labels, header=alt.Header(labelFontSize=15)))
        .properties(title="One unit's input on each training batch: mean ± std")
    )


def ics_records(runs: Sequence[TrainResult]) -> pd.DataFrame:
    frames = []
    for run in runs:
        r = run.records
        for column, layer in enumerate(r["ics_layer"]):
            frames.append(
                pd.DataFrame({
                    "model": run.label,
                    "step": r["ics_step"],
                    "layer": f"layer {layer}" if layer <= len(run.model.hidden) else f"layer {layer} (output)",
                    "l2": finite_or_none(r["ics_l2"][:, column]),
                    "cosine": finite_or_none(r["ics_cosine"][:, column]),
                })
            )
    return pd.concat(frames, ignore_index=True)


def ics_chart(runs: Sequence[TrainResult], measure: str) -> alt.FacetChart:
    """ICS per layer over training (Santurkar et al. Fig. 5): ``measure`` is "l2" or "cosine"."""
    data = thin_rows(ics_records(runs), ["model", "layer"])
    labels = [run.label for run in runs]
    title = "‖G − G′‖₂ (larger: more shift)" if measure == "l2" else "cos(G, G′) (1: no shift)"
    scale = alt.Scale(type="log") if measure == "l2" else alt.Scale(zero=False)
    return (
        alt.Chart(data)
        .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=2)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y(f"{measure}:Q", title=title, scale=scale, axis=log_axis(data[measure], title) if measure == "l2" else alt.Axis(title=title)),
            color=model_color("model", labels),
            tooltip=["model:N", "layer:N", "step:Q", alt.Tooltip(f"{measure}:Q", format=".4f")],
        )
        .properties(width=260, height=SMALL_HEIGHT)
        .facet(facet=alt.Facet("layer:N", title=None, header=alt.Header(labelFontSize=15)), columns=3)
    )


def landscape_records(runs: Sequence[TrainResult]) -> pd.DataFrame:
    """Per probe step and model: min and max over eta of the loss and the gradient change, and beta."""
    frames = []
    for run in runs:
        r = run.records
        loss, change = r["landscape_loss"], r["landscape_grad_change"]
        with warnings.catch_warnings():  # an all-NaN row (every step size diverged) warns; NaN is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            frames.append(
                pd.DataFrame({
                    "model": run.label,
                    "step": r["landscape_step"],
                    "loss_low": finite_or_none(np.nanmin(loss, axis=1)),
                    "loss_high": finite_or_none(np.nanmax(loss, axis=1)),
                    "change_low": finite_or_none(np.nanmin(change, axis=1)),
                    "change_high": finite_or_none(np.nanmax(change, axis=1)),
                    "beta": finite_or_none(r["landscape_beta"]),
                })
            )
    return pd.concat(frames, ignore_index=True)


def landscape_band_chart(runs: Sequence[TrainResult], which: str) -> alt.Chart:
    """Band between the smallest and largest value over the probed step sizes (Santurkar et al. Fig. 4a, b)."""
    data = thin_rows(landscape_records(runs), ["model"])
    labels = [run.label for run in runs]
    low, high = f"{which}_low", f"{which}_high"
    title = "loss L(w − η∇L) over the step sizes η" if which == "loss" else "gradient change ‖∇L(w − η∇L) − ∇L(w)‖₂ over η"
    return (
        alt.Chart(data, title=title)
        .mark_area(opacity=0.45, line=alt.LineConfig(strokeWidth=1.5))
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y(f"{low}:Q", title="loss" if which == "loss" else "gradient change", scale=alt.Scale(zero=which != "loss")),
            y2=f"{high}:Q",
            color=model_color("model", labels),
            tooltip=["model:N", "step:Q", alt.Tooltip(f"{low}:Q", format=".4f", title="smallest"), alt.Tooltip(f"{high}:Q", format=".4f", title="largest")],
        )
        .properties(height=CHART_HEIGHT)
    )


def beta_chart(runs: Sequence[TrainResult]) -> alt.Chart:
    data = thin_rows(landscape_records(runs), ["model"])
    labels = [run.label for run in runs]
    return (
        alt.Chart(data, title="effective β-smoothness: max ‖gradient change‖ / ‖η∇L‖")
        .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=2.5)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y("beta:Q", scale=alt.Scale(type="log"), axis=log_axis(data["beta"], "β (smaller: smoother)")),
            color=model_color("model", labels),
            tooltip=["model:N", "step:Q", alt.Tooltip("beta:Q", format=".3f")],
        )
        .properties(height=CHART_HEIGHT)
    )


def lower_change_records(runs: Sequence[TrainResult]) -> pd.DataFrame:
    """At the last probe: each change of the first layer, and how far it moved the last hidden layer's output."""
    labels = [label for label, _scale, _shift in LOWER_LAYER_CHANGES]
    frames = []
    for run in runs:
        r = run.records
        if not r["lower_change_rel"].size:
            continue
        frames.append(pd.DataFrame({"model": run.label, "change": labels, "relative": finite_or_none(r["lower_change_rel"][-1]), "loss_change": finite_or_none(r["lower_change_loss"][-1])}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "change", "relative", "loss_change"])


def lower_change_chart(runs: Sequence[TrainResult]) -> alt.Chart:
    data = lower_change_records(runs)
    data = data.assign(shown=_positive(data["relative"].to_numpy(dtype=float)))
    labels = [run.label for run in runs]
    order = [label for label, _scale, _shift in LOWER_LAYER_CHANGES]
    return (
        alt.Chart(data, title="Change the first layer: how much does the last hidden layer's output move?")
        .mark_point(size=220, filled=True, opacity=0.9)
        .encode(
            x=alt.X("change:N", title="change made to the first linear layer", sort=order, axis=alt.Axis(labelAngle=0, labelFontSize=14)),
            y=alt.Y("shown:Q", scale=alt.Scale(type="log"), axis=log_axis(data["shown"], "‖h′ − h‖ / ‖h‖ (log)")),
            color=model_color("model", labels),
            shape=alt.Shape("model:N", legend=None),
            tooltip=["model:N", "change:N", alt.Tooltip("relative:Q", format=".2e", title="relative change"), alt.Tooltip("loss_change:Q", format="+.2e", title="loss change")],
        )
        .properties(height=CHART_HEIGHT)
    )
