"""One categorical palette (bnviz.charts): every chart's series get distinct colours, and the
ink follows the theme."""
from types import SimpleNamespace

import numpy as np

import bnviz.charts as charts

# the model kinds each page draws together (bnviz.charts.PALETTE's comment)
SHOWN_TOGETHER = {
    "home": ["no BN", "BN"],
    "placement": ["no BN", "BN before", "BN after"],
    "small batches": ["BN", "Batch Renorm", "ghost BN", "GroupNorm", "LayerNorm", "no BN"],
    "BN vs LayerNorm": ["BN", "LayerNorm", "InstanceNorm", "GroupNorm", "RMSNorm", "no BN"],
    "why": ["no BN", "BN", "noisy BN", "no BN + noise"],
}


def test_models_shown_together_have_distinct_colours():
    for page, labels in SHOWN_TOGETHER.items():
        colours = charts.color_scale(labels).range
        assert len(set(colours)) == len(labels), f"{page}: {dict(zip(labels, colours))}"


def test_a_six_series_chart_gets_six_distinct_colours_unknown_labels_included():
    six = ["BN", "no BN", "some new norm", "another", "neuron 7", "LayerNorm"]
    assert len(set(charts.color_scale(six).range)) == 6
    assert len(set(charts.series_scale([f"series {i}" for i in range(6)]).range)) == 6
    assert len(set(charts.series_scale(["train mode", "eval mode", "a", "b", "c", "d"]).range)) == 6


def test_a_six_model_curves_chart_draws_six_distinct_colours():
    runs = [SimpleNamespace(label=label, eval_step=np.arange(3), test_acc=np.array([0.1, 0.5, 0.9]))
            for label in SHOWN_TOGETHER["small batches"]]
    scale = charts.curves_chart(runs).to_dict()["encoding"]["color"]["scale"]
    assert scale["domain"] == SHOWN_TOGETHER["small batches"]
    assert len(set(scale["range"])) == 6


def test_ink_follows_the_theme():
    try:
        charts.set_theme_source(lambda: "dark")
        dark = charts.projector_theme()["config"]["axis"]["labelColor"]
        assert dark == charts.PALETTES["dark"].ink == "#FFFFFF"
        assert charts.series_scale(["train mode"]).range == ["#FFFFFF"]  # train mode is drawn in ink
    finally:
        charts.set_theme_source(lambda: "light")
    assert charts.projector_theme()["config"]["axis"]["labelColor"] == charts.PALETTES["light"].ink
