"""Chart of the PreciseBN section: accuracy vs the training images used for the statistics, against the EMA."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
from . import CHART_HEIGHT, series_scale


def precise_frame(result, index: int) -> pd.DataFrame:
    """Tidy rows (statistics, samples, mean, low, high) for learning rate ``index``: PreciseBN's mean
    accuracy over draws with its min-max band, and the EMA's (one number) at every sample count."""
    from ..experiments.precise_bn import EMA, PRECISE

    rows = []
    for samples, draws in zip(result.samples_used, result.precise_accuracy[index]):
        rows.append({"statistics": PRECISE, "samples": int(samples), "mean": float(np.mean(draws)), "low": float(np.min(draws)), "high": float(np.max(draws))})
        ema = float(result.ema_accuracy[index])
        rows.append({"statistics": EMA, "samples": int(samples), "mean": ema, "low": ema, "high": ema})
    return pd.DataFrame(rows)


def precise_chart(result, index: int, y_domain: list[float]) -> alt.Chart:
    """PreciseBN's test accuracy (line, band over draws) vs samples on a log axis; the EMA's dashed."""
    from ..experiments.precise_bn import EMA, PRECISE

    data = precise_frame(result, index)
    lr = result.config.learning_rates[index]
    # not model colours: the EMA grey and dashed, PreciseBN a strong cyan
    color = alt.Color("statistics:N", title=None, scale=series_scale([EMA, PRECISE]), legend=alt.Legend(orient="bottom", labelLimit=300, symbolOpacity=1))
    low, high = 10 ** int(np.floor(np.log10(data["samples"].min()))), int(data["samples"].max())  # from the power of ten below
    ticks = [10**k for k in range(7) if low <= 10**k <= high]
    x = alt.X("samples:Q", title="training images for the statistics", scale=alt.Scale(type="log", domain=[low, high]), axis=alt.Axis(values=ticks, format=",d"))
    y = alt.Y("mean:Q", title="test accuracy", scale=alt.Scale(domain=y_domain), axis=alt.Axis(format=PERCENT_FORMAT))
    base = alt.Chart(data, title=f"Learning rate {lr:g}").encode(x=x, color=color)
    band = base.transform_filter(alt.datum.statistics == PRECISE).mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", title="test accuracy", scale=alt.Scale(domain=y_domain), axis=alt.Axis(format=PERCENT_FORMAT)), y2="high:Q")
    precise = base.transform_filter(alt.datum.statistics == PRECISE).mark_line(point=True, strokeWidth=2.5).encode(
        y=y, tooltip=[alt.Tooltip("samples:Q", title="training images"), alt.Tooltip("mean:Q", format=PERCENT_FORMAT, title="mean accuracy"),
                      alt.Tooltip("low:Q", format=PERCENT_FORMAT, title="worst draw"), alt.Tooltip("high:Q", format=PERCENT_FORMAT, title="best draw")])
    ema = base.transform_filter(alt.datum.statistics == EMA).mark_line(strokeDash=[6, 4], strokeWidth=2.5).encode(
        y=y, tooltip=[alt.Tooltip("statistics:N"), alt.Tooltip("mean:Q", format=PERCENT_FORMAT, title="accuracy")])
    return (band + ema + precise).properties(height=CHART_HEIGHT)
