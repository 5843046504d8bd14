"""AppTest of app_pages/distribution_shift.py: small, fast configs via the URL."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page

FAST = {"steps": 100, "n": 1000, "depth": 2, "width": 32}


def test_page_runs_and_shows_the_explosion():
    at = open_page("app_pages/distribution_shift.py", **FAST).run()
    assert not at.exception
    assert_sections_as_registered(at, "distribution_shift")
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    metrics = metric_values(at)
    assert "Accuracy, eval mode" in metrics and "Largest |BN output|, eval mode" in metrics
    assert chart_count(at) >= 6  # 2 training curves, layers, units, eps sweep, fixes
    assert metrics["NaN/inf outputs, eval mode"] == "0"


def test_corrupted_images_give_a_real_nan_and_the_shift_control_moves_the_result():
    at = open_page("app_pages/distribution_shift.py", **FAST).run()
    before = metric_values(at)
    at.selectbox(key="shift.corrupt").select(10).run()
    assert not at.exception
    after = metric_values(at)
    assert after["NaN/inf outputs, eval mode"] != "0"
    text = " ".join(m.value for m in at.markdown)
    assert "NaN statistics" in text
    at.selectbox(key="shift.shift").select("noise").run()
    assert not at.exception
    assert metric_values(at)["Accuracy, train mode"] != before["Accuracy, train mode"]


def test_float16_scenario_button_overflows():
    at = open_page("app_pages/distribution_shift.py", **FAST).run()
    at.button(key="shift.preset.NaN: float16, small eps").click().run()
    assert not at.exception
    assert at.radio(key="shift.precision").value == "float16"


def test_few_sample_adaptation_runs_when_switched_on_and_the_prior_changes_it():
    at = open_page("app_pages/distribution_shift.py", **FAST, draws=1).run()
    assert not at.exception
    assert "Plain evaluation" not in metric_values(at)  # off by default: the page's cost is unchanged
    charts_before = chart_count(at)
    at.toggle(key="shift.fewrun").set_value(True).run()
    assert not at.exception
    metrics = metric_values(at)
    assert {"Plain evaluation", "AdaBN on all target images", "AdaBN, n = 1", "Mix N = 16, n = 1"} <= set(metrics)
    assert metrics["Plain evaluation"] == metrics["Accuracy, eval mode"]  # the same model as section 2
    assert chart_count(at) == charts_before + 1
    text = " ".join(m.value for m in at.markdown)
    assert "**n = 1.**" in text and "plain evaluation" in text
    at.select_slider(key="shift.prior").set_value(256).run()
    assert not at.exception
    after = metric_values(at)
    assert after["Mix N = 256, n = 1"] != metrics["Mix N = 16, n = 1"]
    assert after["AdaBN, n = 1"] == metrics["AdaBN, n = 1"]  # the prior does not touch AdaBN
