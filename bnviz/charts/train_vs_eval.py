"""Charts of the train-vs-eval page: statistics over steps, batch-mates, accuracy three ways, regularization."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..formatting import PERCENT_AXIS_FORMAT, PERCENT_FORMAT
from . import CHART_HEIGHT, ORANGE, SKY_BLUE, color_scale, finite_or_none, font_size, mode_colors, palette, series_scale, thin_rows

# The estimates of one neuron's statistics, each with one colour on this page. Short labels,
# so a half-width chart's legend never cuts one off (the page's caption says that the
# cumulative average is PyTorch's momentum=None). The estimates are not models: series
# colours: the batch a faint grey, the truth in ink, the two running estimates two palette hues.
ESTIMATES = ("this batch", "true population", "running (EMA)", "cumulative")


def estimate_colors() -> list[str]:
    return [palette().faint, palette().ink, SKY_BLUE, ORANGE]


def statistics_records(result, unit_position: int, statistic: str = "mean") -> pd.DataFrame:
    """Tidy rows (step, estimate, value) for one recorded first-layer neuron.

    ``statistic``: "mean" or "var". Batch variance is the biased one that
    normalises the batch; running variances are PyTorch's unbiased estimates;
    the population variance is over all training images (biased, N = 60,000).
    """
    records = result.run.records
    steps = np.asarray(records["bn_step"])
    series = {
        "this batch": records[f"bn_batch_{statistic}"],
        "true population": records[f"bn_population_{statistic}"],
        "running (EMA)": records[f"bn_running_{statistic}"],
        "cumulative": records[f"bn_cumulative_{statistic}"],
    }
    frames = [pd.DataFrame({"step": steps, "estimate": name, "value": finite_or_none(np.asarray(values)[: len(steps), unit_position])}) for name, values in series.items()]
    return pd.concat(frames, ignore_index=True)


def statistics_chart(result, unit_position: int, statistic: str = "mean", title: str | None = None) -> alt.Chart:
    """Batch values as faint dots, the running estimates and the truth as lines, over training steps."""
    data = thin_rows(statistics_records(result, unit_position, statistic), ["estimate"])
    color = alt.Color("estimate:N", title=None, scale=alt.Scale(domain=list(ESTIMATES), range=estimate_colors()), legend=alt.Legend(orient="bottom", columns=2, labelLimit=400))
    y_title = "mean of the neuron's BN input" if statistic == "mean" else "variance of the neuron's BN input"
    # the axis says only "mean"/"variance" (the title says of what): an axis title longer than
    # a half-width chart's plot is tall pushed the chart's own title out of its frame
    base = alt.Chart(data, title=title or y_title).encode(
        x=alt.X("step:Q", title="training step"),
        y=alt.Y("value:Q", title="mean" if statistic == "mean" else "variance", scale=alt.Scale(zero=False)),
        color=color,
        tooltip=[alt.Tooltip("estimate:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4f")],
    )
    dots = base.transform_filter(alt.datum.estimate == "this batch").mark_circle(size=14, opacity=0.6)
    # the truth drawn wide underneath, so an estimate lying on it stays visible
    truth = base.transform_filter(alt.datum.estimate == "true population").mark_line(strokeWidth=4.5)
    estimates = base.transform_filter((alt.datum.estimate != "this batch") & (alt.datum.estimate != "true population")).mark_line(strokeWidth=2)
    return (dots + truth + estimates).properties(height=CHART_HEIGHT)


def statistics_takeaway(result, unit_position: int) -> str:
    """The mean chart's sentence: the neuron's EMA error at the last step, the name the page
    uses for |running mean − true mean| / true std (``experiments.train_vs_eval.last_step_errors``)."""
    from ..experiments.train_vs_eval import last_step_errors

    records, errors = result.run.records, last_step_errors(result, unit_position)
    final = len(records["bn_step"]) - 1
    unit = result.config.units[unit_position]
    return (f"At the last step (step {int(records['bn_step'][final])}), neuron {unit}: true mean {records['bn_population_mean'][final, unit_position]:.3f}, "
            f"EMA {records['bn_running_mean'][final, unit_position]:.3f}, cumulative average {records['bn_cumulative_mean'][final, unit_position]:.3f}; "
            f"EMA error {errors['running (EMA)']:.3f} σ, the cumulative average's {errors['cumulative average']:.3f} σ.")


def batch_mates_records(result) -> pd.DataFrame:
    """Tidy rows (batch_size, mode, batch, probability) of the probed image's true-class probability."""
    label = result.image_label
    frames = []
    for mode, probs in (("train mode (batch statistics)", result.train_mode_probs), ("eval mode (running estimates)", result.eval_mode_probs)):
        for s, size in enumerate(result.probe_batch_sizes):
            values = probs[s, :, label]
            frames.append(pd.DataFrame({"batch_size": int(size), "mode": mode, "batch": np.arange(len(values)), "probability": finite_or_none(values)}))
    return pd.concat(frames, ignore_index=True)


def batch_mates_chart(result) -> alt.Chart:
    """Per batch size, the spread of the image's true-class probability over random batch-mates."""
    data = batch_mates_records(result)
    modes = ["train mode (batch statistics)", "eval mode (running estimates)"]
    color = alt.Color("mode:N", title=None, scale=alt.Scale(domain=modes, range=[mode_colors()["train mode"], mode_colors()["eval mode"]]), legend=alt.Legend(orient="top", labelLimit=400))
    sizes = [int(s) for s in result.probe_batch_sizes]
    return (
        alt.Chart(data, title=f"Probability of the true class ({result.image_label}) for one test image, over {result.train_mode_probs.shape[1]} random batches")
        .mark_boxplot(size=22, extent="min-max", opacity=0.85)
        .encode(
            x=alt.X("batch_size:O", title="batch size B (the image + B - 1 random test images)", sort=sizes, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("mode:N", sort=modes),
            y=alt.Y("probability:Q", title="probability of the true class", scale=alt.Scale(domain=[0, 1])),
            color=color,
        )
        .properties(height=CHART_HEIGHT)
    )


# the app-wide train/eval mode colours; recalibration (eval mode with re-estimated statistics) a series colour
WAYS = ("eval mode", "train mode", "recalibrated")


def _short_way(way: str) -> str:
    if way.startswith("train mode, batches of "):
        return "train, B = " + way.rsplit(" ", 1)[-1]
    return "eval (running)" if way.startswith("eval mode") else "recalibrated"


def accuracy_records(rows: list[tuple[str, float]]) -> pd.DataFrame:
    """Tidy rows (way, short, kind, accuracy); ``kind`` (its first words) picks the colour."""
    kinds = [next((k for k in WAYS if way.startswith(k)), "train mode") for way, _ in rows]
    return pd.DataFrame({"way": [r[0] for r in rows], "short": [_short_way(r[0]) for r in rows], "kind": kinds, "accuracy": finite_or_none([r[1] for r in rows])})


def accuracy_chart(rows: list[tuple[str, float]]) -> alt.Chart:
    """Bars: test accuracy of one model under each way of normalising (short labels, full ones in the tooltip)."""
    data = accuracy_records(rows)
    kinds = alt.Color("kind:N", scale=series_scale(WAYS), legend=None)
    bars = (
        alt.Chart(data, title="Test accuracy of the same trained model, three ways")
        .mark_bar(size=48)
        .encode(
            x=alt.X("short:N", title=None, sort=None, axis=alt.Axis(labelAngle=0, labelFontSize=13)),
            y=alt.Y("accuracy:Q", title="test accuracy (10,000 images)", scale=alt.Scale(domain=[0.0, 1.0]), axis=alt.Axis(format=PERCENT_AXIS_FORMAT, values=[0, 0.2, 0.4, 0.6, 0.8, 1.0])),
            color=kinds,
            tooltip=[alt.Tooltip("way:N"), alt.Tooltip("accuracy:Q", format=PERCENT_FORMAT)],
        )
    )
    text = bars.mark_text(baseline="bottom", dy=-4, fontSize=font_size(14)).encode(text=alt.Text("accuracy:Q", format=PERCENT_FORMAT), color=alt.value(palette().ink))
    return (bars + text).properties(height=CHART_HEIGHT)


def regularization_chart(result, metric: str = "gap") -> alt.Chart:
    """Per batch size: each seed's value as a dot, the mean over seeds as a line, BN vs no BN."""
    titles = {"gap": "train - test accuracy gap", "test_acc": "test accuracy", "train_acc": "training accuracy", "test_loss": "test loss"}
    data = result.table[["model", "batch_size", "seed", metric]].rename(columns={metric: "value"})
    labels = ["no BN", "BN"]
    color = alt.Color("model:N", title="model", scale=color_scale(labels), legend=alt.Legend(orient="top"))
    x = alt.X("batch_size:Q", title="batch size (log scale)", scale=alt.Scale(type="log", base=2, nice=False), axis=alt.Axis(values=sorted(set(data["batch_size"]))))
    y = alt.Y("value:Q", title=titles.get(metric, metric), scale=alt.Scale(zero=False))
    base = alt.Chart(data).encode(x=x, color=color)
    dots = base.mark_circle(size=70, opacity=0.7).encode(y=y, tooltip=["model", "batch_size", "seed", alt.Tooltip("value:Q", format=".4f")])
    means = base.mark_line(strokeWidth=2.5).encode(y=alt.Y("mean(value):Q", title=titles.get(metric, metric)))
    return (dots + means).properties(height=CHART_HEIGHT, title=f"{titles.get(metric, metric)}: each seed (dots) and their mean (line)")
