"""AppTest of app_pages/small_batches.py: it runs, shows its parts, and its controls move the results."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page

FAST = {"sizes": "light", "seeds": 1, "steps": 10, "b_steps": 10, "depth": 8, "width": 16}


def page_text(at) -> str:
    return " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)


def test_page_shows_the_sweep_the_mismatch_and_the_bessel_factor_and_its_controls_move_them():
    at = open_page("app_pages/small_batches.py", **FAST).run()
    assert not at.exception
    assert_sections_as_registered(at, "small_batches")
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    # schedule, accuracy, mismatch, closed-form heatmap, measured Bessel chain
    assert chart_count(at) == 5
    metrics = metric_values(at)
    assert {"BN, batch 2", "Batch Renorm, batch 2", "ghost BN, batch 2", "GroupNorm, batch 2", "LayerNorm, batch 2", "no BN, batch 2"} <= set(metrics)
    assert "m = 64, after 8 layers: measured" in metrics
    assert len(at.table) == 1
    text = page_text(at)
    assert "0.854" in text and "plain BN for the first **1** step" in text
    assert "No difference between the modes (to float precision) for" in text and "**LayerNorm**" in text

    # Batch Renorm's r_max: its accuracy moves, BN's does not
    before = metric_values(at)
    at.select_slider(key="small.r_max").set_value(1.5).run()
    assert not at.exception
    after = metric_values(at)
    assert after["Batch Renorm, batch 2"] != before["Batch Renorm, batch 2"] and after["BN, batch 2"] == before["BN, batch 2"]

    # more steps: other accuracies, and a longer warm-up in the text
    at.select_slider(key="small.steps").set_value(20).run()
    assert not at.exception
    assert metric_values(at)["LayerNorm, batch 2"] != after["LayerNorm, batch 2"] and "Scaled by 20/160,000" in page_text(at)

    # the Bessel chain's depth changes the measured metric and its closed form
    at.slider(key="small.depth").set_value(4).run()
    assert not at.exception
    values = metric_values(at)
    assert "m = 64, after 4 layers: measured" in values and values["m = 64, after 4 layers: measured"] != metrics["m = 64, after 8 layers: measured"]


def test_bad_link_values_are_clamped_with_a_note():
    at = open_page("app_pages/small_batches.py", **{**FAST, "seeds": 99, "sizes": "huge"}).run()
    assert not at.exception
    notes = " ".join(i.value for i in at.info)
    assert "seeds=99" in notes and "huge" in notes
