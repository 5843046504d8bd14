"""Chart of the few-sample adaptation section: accuracy vs the number of target images n."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
from . import CHART_HEIGHT, series_scale


def adaptation_frame(result) -> pd.DataFrame:
    """Tidy rows (method, n, mean, low, high): mean accuracy over draws and its min-max band; the two
    references (plain evaluation, AdaBN on all target images) as flat rows at every n."""
    from ..experiments.few_sample_adaptation import FULL, PLAIN

    rows = []
    for method, values in result.accuracy.items():
        for n, draws in zip(result.sample_sizes, values):
            rows.append({"method": method, "n": int(n), "mean": float(np.mean(draws)), "low": float(np.min(draws)), "high": float(np.max(draws))})
    for method, value in ((PLAIN, result.plain_accuracy), (FULL, result.full_accuracy)):
        for n in result.sample_sizes:
            rows.append({"method": method, "n": int(n), "mean": value, "low": value, "high": value})
    return pd.DataFrame(rows)


def adaptation_chart(result, mix_label: str) -> alt.Chart:
    """Mean accuracy (line) and its range over draws (band) against n on a log2 axis; references dashed.

    ``mix_label`` renames the mix's series (e.g. with its N) for the legend.
    """
    from ..experiments.few_sample_adaptation import ADABN, FULL, MIXED, PLAIN

    data = adaptation_frame(result).replace({"method": {MIXED: mix_label}})
    names = [PLAIN, ADABN, mix_label, FULL]
    color = alt.Color("method:N", title=None, scale=series_scale(names), legend=alt.Legend(orient="bottom", labelLimit=420, symbolOpacity=1))
    sizes = [int(n) for n in result.sample_sizes]
    x = alt.X("n:Q", title="target images used to estimate the statistics (n)", scale=alt.Scale(type="log", base=2, domain=[sizes[0], sizes[-1]]),
              axis=alt.Axis(values=sizes, format="~d"))
    y = alt.Y("mean:Q", title="accuracy on the shifted test images", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=PERCENT_AXIS_FORMAT))
    base = alt.Chart(data, title="Re-estimating BN statistics from n target images").encode(x=x, color=color)
    adapted = alt.FieldOneOfPredicate(field="method", oneOf=[ADABN, mix_label])
    band = base.transform_filter(adapted).mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", title="accuracy on the shifted test images", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=PERCENT_AXIS_FORMAT)), y2="high:Q")
    lines = base.transform_filter(adapted).mark_line(point=True, strokeWidth=2.5).encode(
        y=y, tooltip=[alt.Tooltip("method:N"), alt.Tooltip("n:Q"), alt.Tooltip("mean:Q", format=PERCENT_FORMAT, title="mean accuracy"),
                      alt.Tooltip("low:Q", format=PERCENT_FORMAT, title="worst draw"), alt.Tooltip("high:Q", format=PERCENT_FORMAT, title="best draw")])
    references = base.transform_filter(~adapted).mark_line(strokeDash=[6, 4], strokeWidth=2.5).encode(
        y=y, tooltip=[alt.Tooltip("method:N"), alt.Tooltip("mean:Q", format=PERCENT_FORMAT, title="accuracy")])
    return (band + references + lines).properties(height=CHART_HEIGHT)
