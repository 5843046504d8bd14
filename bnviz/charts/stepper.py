"""Play / pause / step (bnviz.stepper): one BN unit's statistics step by step."""
from __future__ import annotations

from typing import Sequence

import altair as alt
import pandas as pd

from . import finite_or_none, series_scale

QUANTITIES = ("mean", "variance", "γ and β")
SERIES = ("this batch", "running estimate", "γ", "β")


def stepper_records(records: Sequence, layer: int, unit: int) -> pd.DataFrame:
    """Tidy rows (step, quantity, series, value) of one unit (index within the watched ones):
    the batch's mean and variance beside the running estimates, and γ, β."""
    steps = [record.step for record in records]
    columns = {
        ("mean", "this batch"): "batch_mean",
        ("mean", "running estimate"): "running_mean",
        ("variance", "this batch"): "batch_var",
        ("variance", "running estimate"): "running_var",
        ("γ and β", "γ"): "gamma",
        ("γ and β", "β"): "beta",
    }
    frames = [
        pd.DataFrame({"step": steps, "quantity": quantity, "series": series, "value": finite_or_none([getattr(r, field)[layer, unit] for r in records])})
        for (quantity, series), field in columns.items()
    ]
    return pd.concat(frames, ignore_index=True)


def stepper_chart(records: Sequence, layer: int, unit: int, title: str) -> alt.Chart:
    """Three panels over the steps so far: mean and variance (batch: dots, running: line), γ and β."""
    data = stepper_records(records, layer, unit)
    color = alt.Color("series:N", title=None, scale=series_scale(SERIES), legend=alt.Legend(orient="top"))
    base = alt.Chart(data).encode(x=alt.X("step:Q", title="training step"), y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)), color=color, tooltip=["step", "series", alt.Tooltip("value:Q", format=".4g")])
    lines = base.transform_filter(alt.datum.series != "this batch").mark_line()
    dots = base.transform_filter(alt.datum.series == "this batch").mark_circle(size=28)
    return (lines + dots).properties(width=260, height=220).facet(column=alt.Column("quantity:N", title=None, sort=list(QUANTITIES))).resolve_scale(y="independent").properties(title=title)
