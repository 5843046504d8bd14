"""AppTest of the app shell (streamlit_app.py) and the home page (app_pages/home.py)."""
from apptest_helpers import assert_classroom_ready, chart_count, metric_values, open_page


def test_app_shell_runs_the_home_page():
    at = open_page("streamlit_app.py", steps=100).run()
    assert not at.exception
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    assert at.title[0].value == "Batch Normalization in 30 seconds"
    assert len(at.metric) == 3


def test_home_page_trains_both_models_and_a_control_changes_the_result():
    at = open_page("app_pages/home.py", steps=100).run()
    assert not at.exception
    before = metric_values(at)
    assert "Test accuracy without BN (all 10,000 test images)" in before and "Test accuracy with BN (all 10,000 test images)" in before
    assert len(at.get("graphviz_chart")) == 2 and chart_count(at) == 2
    at.selectbox(key="home.act").select("relu").run()
    assert not at.exception
    assert metric_values(at) != before


def test_bad_link_values_are_clamped_with_a_note():
    at = open_page("app_pages/home.py", steps=999999, act="banana", seed="nan").run()
    assert not at.exception
    notes = " ".join(i.value for i in at.info)
    assert "steps" in notes and "banana" in notes
