"""The sentences under the charts (issue #20): computed from the chart's numbers, neutral words,
a diverged run named, never a crash; one percent format; a tooltip for every control.

Small synthetic results, nothing trains.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import altair as alt
import numpy as np
import pandas as pd
import pytest

from bnviz.charts import curves_chart
from bnviz.charts.small_batches import closed_form_frame, closed_form_heatmap
from bnviz.charts.takeaways import chart_takeaway
from bnviz.control_help import CONTROL_HELP
from bnviz.experiments.distribution_shift import FLOAT16_MAX, float16_headroom_sentence
from bnviz.experiments.sequence_norms import SequenceNormsConfig, SequenceNormsResult, training_length_sentence
from bnviz.formatting import format_percent, format_points
from bnviz.models import ModelConfig
from bnviz.train import TrainConfig, TrainResult

ROOT = Path(__file__).resolve().parent.parent
VERDICT_WORDS = ("wins", "steadier", "supported")


def run(label: str, test_acc, final: float | None = None, diverged_step: int | None = None) -> TrainResult:
    acc = np.asarray(test_acc, dtype=float)
    step = np.arange(len(acc)) * 10
    return TrainResult(
        label=label, model=ModelConfig(), train=TrainConfig(steps=int(step[-1]) or 1, eval_every=10), eval_step=step,
        train_loss=1 - acc, train_acc=acc, test_loss=1 - acc, test_acc=acc, step_loss=1 - acc,
        final_test_acc=float(acc[-1]) if final is None else final, final_test_loss=0.1,
        diverged=diverged_step is not None, diverged_step=diverged_step, seconds=1.0, device="cpu", records={},
    )


def test_curves_give_each_model_its_last_value_highest_first_in_the_app_percent_format():
    sentence = chart_takeaway(curves_chart([run("no BN", [0.1, 0.5, 0.8342]), run("BN", [0.1, 0.9, 0.95])], "test_acc"))
    assert sentence == "Test accuracy at the end (training step 20): BN 95.0%, no BN 83.4%."


def test_a_diverged_run_is_named_not_a_crash():
    curves = [run("BN", [0.1, 0.9, 0.95]), run("no BN", [0.1, 0.3, math.nan], diverged_step=15), run("noisy BN", [math.nan, math.inf, math.nan])]
    sentence = chart_takeaway(curves_chart(curves, "test_acc"))
    assert "BN 95.0%" in sentence and "no BN 30.0%" in sentence
    assert "no BN stops at training step 10" in sentence
    assert "noisy BN has no finite value" in sentence and "diverged" in sentence


def test_a_sweep_reads_from_its_first_to_its_last_x_and_bars_their_extremes():
    sweep = pd.DataFrame({"model": ["BN", "BN", "LayerNorm", "LayerNorm"], "batch size": [2, 256, 2, 256], "acc": [0.62, 0.953, 0.9, 0.91]})
    chart = alt.Chart(sweep).mark_line().encode(x=alt.X("batch size:Q"), y=alt.Y("acc:Q", title="test accuracy", axis=alt.Axis(format="%")), color="model:N")
    assert chart_takeaway(chart) == "Test accuracy from the smallest to the largest batch size: BN 62.0% at 2 to 95.3% at 256; LayerNorm 90.0% at 2 to 91.0% at 256."
    bars = alt.Chart(pd.DataFrame({"fix": ["a", "b", "c"], "max": [3.0, 5e5, math.nan]})).mark_bar().encode(x="fix:N", y=alt.Y("max:Q", title="largest value"))
    assert chart_takeaway(bars) == "Largest value: highest b (500,000), lowest a (3); no value for c."


def test_a_heat_map_states_its_range_where_the_chart_has_it():
    frame = closed_form_frame()
    sentence = chart_takeaway(closed_form_heatmap())
    low, high = frame.iloc[:, -1].min(), frame.iloc[:, -1].max()
    assert sentence.startswith("Eval / train ranges from") and f"{low:.2e}" in sentence and f"{high:.3g}" in sentence


def test_takeaways_use_no_verdict_words():
    curves = [run("BN", [0.1, 0.95]), run("no BN", [0.1, 0.5])]
    for metric in ("test_acc", "train_loss"):
        sentence = chart_takeaway(curves_chart(curves, metric))
        assert not any(word in sentence for word in VERDICT_WORDS)


def test_one_percent_format():
    assert format_percent(0.83425) == "83.4%" and format_percent(1.0) == "100.0%"
    assert format_percent(math.nan) == format_percent(None) == format_points(math.inf) == "n/a"
    assert format_points(0.0123) == "+1.2 points" and format_points(-0.5) == "-50.0 points"


def sequence_result(bn: float, ln: float, bn_diverged: bool = False) -> SequenceNormsResult:
    config = SequenceNormsConfig()
    runs = [run("no BN", [0.1, 0.5]), run("LayerNorm", [0.1, ln]), run("BN", [0.1, math.nan if bn_diverged else bn], diverged_step=5 if bn_diverged else None)]
    padded = np.zeros((3, 2, len(config.extra_rows)))
    padded[:, :, 0] = [[0.5] * 2, [ln] * 2, [bn] * 2]
    padded[:, :, -1] = [[0.5] * 2, [ln - 0.01] * 2, [bn - 0.4] * 2]
    return SequenceNormsResult(config, runs, padded)


def test_the_rnn_sentence_says_when_bn_is_ahead_against_the_usual_story():
    ahead = training_length_sentence(sequence_result(bn=0.72, ln=0.65))
    assert "per-step BN is ahead of LayerNorm here (72.0% vs 65.0%" in ahead and "against the usual advice" in ahead
    assert "BN's accuracy changes by -40.0 points and LayerNorm's by -1.0 points" in ahead and "not a verdict" in ahead
    behind = training_length_sentence(sequence_result(bn=0.60, ln=0.65))
    assert "LayerNorm is ahead of per-step BN" in behind and "against" not in behind
    assert "diverged" in training_length_sentence(sequence_result(bn=0.6, ln=0.65, bn_diverged=True))


def test_the_float16_sentence_gives_the_headroom_and_the_seed_dependence():
    result = SimpleNamespace(config=SimpleNamespace(eps=1e-8, seed=1), float32_peak=lambda eps: (365.8, "blocks.0.norm"))
    sentence = float16_headroom_sentence(result)
    assert "At seed 1" in sentence and "366 in `blocks.0.norm`" in sentence and f"{FLOAT16_MAX / 365.8:,.1f}×" in sentence and "another seed" in sentence
    assert float16_headroom_sentence(SimpleNamespace(config=result.config, float32_peak=lambda eps: (math.nan, ""))) == ""


# ------------------------------------------------------------------ tooltips
CONTROL_METHODS = {"slider", "select", "radio", "toggle", "select_range"}


def page_controls() -> list[tuple[str, str, str, bool]]:
    """(page, scope, URL key, has its own help=) for every ``Controls`` widget call in the pages."""
    found = []
    for path in sorted((ROOT / "app_pages").glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {t.id: n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}
        scopes = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "Controls":
                arg = node.value.args[0]
                scopes[node.targets[0].id] = arg.value if isinstance(arg, ast.Constant) else constants[arg.id]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CONTROL_METHODS and getattr(node.func.value, "id", None) in scopes:
                key = node.args[1].value
                found.append((path.name, scopes[node.func.value.id], key, any(k.arg == "help" for k in node.keywords)))
    return found


def test_every_control_in_every_page_has_a_tooltip_and_no_entry_is_stale():
    controls = page_controls()
    assert len(controls) > 100  # the walk found the pages' controls
    missing = [f"{page}: {scope}.{key}" for page, scope, key, own in controls if not own and f"{scope}.{key}" not in CONTROL_HELP]
    assert not missing, f"controls without a tooltip (add help= or an entry in bnviz/control_help.py): {missing}"
    known = {f"{scope}.{key}" for _, scope, key, _ in controls}
    assert not set(CONTROL_HELP) - known, f"tooltips for controls no page has: {sorted(set(CONTROL_HELP) - known)}"


@pytest.mark.parametrize("entry", ["traineval.mom", "math.eps", "home.lr", "norms.steps"])
def test_tooltips_name_the_framework_defaults(entry):
    text = CONTROL_HELP[entry]
    assert {"traineval.mom": "0.99", "math.eps": "1e-3", "home.lr": "1e-3", "norms.steps": "1e-3"}[entry] in text
