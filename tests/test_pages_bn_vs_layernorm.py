"""AppTest of app_pages/bn_vs_layernorm.py: it runs, shows its parts, and its controls move the results."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page

FAST = {"steps": 10, "rnn_steps": 10, "rnn_hidden": 16}


def chart_specs(at) -> list[str]:
    return [chart.proto.spec for chart in at.get("vega_lite_chart")]


def page_text(at) -> str:
    return " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)


def test_page_shows_the_sets_the_sweep_and_the_rnn_and_its_controls_move_them():
    at = open_page("app_pages/bn_vs_layernorm.py", **FAST).run()
    assert not at.exception
    assert_sections_as_registered(at, "bn_vs_layernorm")
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    # four grids of sets, the batch-size chart, two RNN curves, the longer-sequence chart
    assert chart_count(at) == 8
    metrics = metric_values(at)
    assert {"BN, batch 2", "LayerNorm, batch 2", "GroupNorm, batch 2", "RNN, BN: test accuracy"} <= set(metrics)
    text = page_text(at)
    assert "refused by torch" in text and "largest difference" in text
    assert len(at.table) == 4  # pooled moments, summary, invariance table measured and as claimed

    # GroupNorm's number of groups changes its grid
    group_spec = chart_specs(at)[3]
    at.select_slider(key="norms.groups").set_value(4).run()
    assert not at.exception and chart_specs(at)[3] != group_spec and "4 groups" in chart_specs(at)[3]

    # the tensor layout changes every grid and its caption
    at.radio(key="norms.layout").set_value("sequence").run()
    assert not at.exception and "time step" in chart_specs(at)[0] and "recurrent layer" in page_text(at)

    # more sweep steps: other accuracies
    before = metric_values(at)
    at.select_slider(key="norms.steps").set_value(20).run()
    assert not at.exception
    after = metric_values(at)
    assert after["BN, batch 2"] != before["BN, batch 2"] or after["LayerNorm, batch 2"] != before["LayerNorm, batch 2"]
    assert after["RNN, BN: test accuracy"] == before["RNN, BN: test accuracy"]  # the RNN did not retrain

    # more RNN steps: other RNN accuracies
    at.select_slider(key="norms.rnn_steps").set_value(20).run()
    assert not at.exception
    assert metric_values(at)["RNN, LayerNorm: test accuracy"] != after["RNN, LayerNorm: test accuracy"]


def test_bad_link_values_are_clamped_with_a_note():
    at = open_page("app_pages/bn_vs_layernorm.py", **FAST, n=99, layout="cube").run()
    assert not at.exception
    notes = " ".join(i.value for i in at.info)
    assert "n=99" in notes and "cube" in notes


def test_invariance_table_is_measured_and_its_controls_change_it():
    at = open_page("app_pages/bn_vs_layernorm.py", **FAST).run()
    assert not at.exception
    assert "12 of Ba et al.'s 12 claims hold" in page_text(at)
    measured = at.table[2].value
    assert measured.shape == (5, 6) and measured.iloc[0, 0].startswith("invariant")  # BN in train mode, W -> δW
    # RMSNorm's re-centering cell differs from LayerNorm's: it subtracts no mean
    assert measured.loc["LayerNorm"].iloc[1].startswith("invariant") and measured.loc["RMSNorm"].iloc[1].startswith("changes")
    at.toggle(key="norms.invbias").set_value(True).run()  # PyTorch's bias before the norm breaks three LayerNorm cells
    assert not at.exception
    assert "9 of Ba et al.'s 12 claims hold" in page_text(at) and "bias" in page_text(at)
    at.select_slider(key="norms.inveps").set_value(1e-3).run()  # a large eps breaks the re-scaling invariances
    assert not at.exception
    assert "√(δ²σ² + eps) is no longer" in page_text(at)
