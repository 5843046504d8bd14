"""AppTest of app_pages/train_vs_eval.py: every chart's control changes what the page shows."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page, sections_drawn

FAST = {"steps": 100}


def _text(at) -> str:
    return " ".join(m.value for m in at.markdown)


def test_page_runs_and_training_controls_change_the_result():
    at = open_page("app_pages/train_vs_eval.py", **FAST).run()
    assert not at.exception
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    before = metric_values(at)
    assert "EMA error at the last step, all first-layer neurons" in before
    assert before["Eval mode: largest difference between batches, any B (max − min)"] == "0 (exactly)"
    assert chart_count(at) == 4  # mean, variance, batch-mates, accuracy three ways
    assert any("more than 1 value per channel" in e.value for e in at.error)  # B = 1 in train mode, shown
    statistics_text = _text(at)
    assert_sections_as_registered(at, "train_vs_eval")
    assert chart_images_offered(at) == 4  # each section offers the charts it drew, once

    at.radio(key="traineval.unit").set_value(1).run()  # display only: another recorded neuron
    assert not at.exception
    assert _text(at) != statistics_text and "neuron 1" in _text(at)
    assert chart_images_offered(at) == 4  # a section drawn again offers its new charts, none stale or twice

    at.selectbox(key="traineval.mom").select(0.01).run()
    assert not at.exception
    after_momentum = metric_values(at)
    assert after_momentum["EMA error at the last step, all first-layer neurons"] != before["EMA error at the last step, all first-layer neurons"]

    at.selectbox(key="traineval.bs").select(16).run()
    assert not at.exception
    after_batch_size = metric_values(at)
    assert after_batch_size["Train mode: std over batches at B = 2"] != after_momentum["Train mode: std over batches at B = 2"]

    at.slider(key="traineval.img").set_value(7).run()  # the batch-mates experiment's test image
    assert not at.exception
    after_image = metric_values(at)
    assert after_image["Train mode: std over batches at B = 2"] != after_batch_size["Train mode: std over batches at B = 2"]
    assert after_image["Eval mode: largest difference between batches, any B (max − min)"] == "0 (exactly)"


def test_regularization_section_runs_when_switched_on_and_seeds_change_it():
    at = open_page("app_pages/train_vs_eval.py", **FAST, reg="true", regsteps=100, regn=500, seeds=1).run()
    assert not at.exception
    assert chart_count(at) == 5
    one_seed = {k: v for k, v in metric_values(at).items() if k.startswith("BN narrows")}
    assert len(one_seed) == 3 and "inconclusive at 1 seed" in _text(at)
    at.slider(key="traineval.seeds").set_value(2).run()
    assert not at.exception
    two_seeds = {k: v for k, v in metric_values(at).items() if k.startswith("BN narrows")}
    assert two_seeds != one_seed


def chart_images_offered(at) -> int:
    return sum(button.proto.label.endswith("(PNG)") for button in at.get("download_button"))


def test_bad_link_values_are_clamped_with_a_note_and_a_link_hides_sections():
    at = open_page("app_pages/train_vs_eval.py", **FAST, mom="banana", img=-5, hide="mates,precise").run()
    assert not at.exception
    assert sections_drawn(at) == ["stats", "accuracy", "regularization"]
    headers = " ".join(h.value for h in at.header)
    assert "1. Batch statistics" in headers and "Batch-mates" not in headers and "PreciseBN" not in headers
    assert chart_count(at) == 3  # mean, variance, accuracy three ways: no batch-mates chart
    notes = " ".join(i.value for i in at.info)
    assert "img" in notes and "banana" in notes


def test_precise_bn_section_runs_when_switched_on_and_the_learning_rate_changes_it():
    at = open_page("app_pages/train_vs_eval.py", **FAST, pbsteps=100, pbdraws=1).run()
    assert not at.exception
    assert not any(k.startswith("PreciseBN − EMA") for k in metric_values(at))  # off by default
    at.toggle(key="traineval.pbrun").set_value(True).run()
    assert not at.exception
    metrics = metric_values(at)
    assert {"PreciseBN − EMA at lr 0.1", "PreciseBN − EMA at lr 10"} <= set(metrics)
    assert chart_count(at) == 6  # the page's 4, one PreciseBN chart per learning rate
    assert "PreciseBN matches the EMA" in _text(at) or "never reaches the EMA" in _text(at)
    at.select_slider(key="traineval.pblr").set_value(2.0).run()
    assert not at.exception
    after = metric_values(at)
    assert "PreciseBN − EMA at lr 2" in after and "PreciseBN − EMA at lr 10" not in after
    assert after["PreciseBN − EMA at lr 0.1"] == metrics["PreciseBN − EMA at lr 0.1"]  # same low-lr model
