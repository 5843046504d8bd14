"""AppTest of the original paper's page (app_pages/paper_results.py), on short runs."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page

FAST = {"steps": 500, "lr_steps": 100, "seeds": 2}


def _text(at) -> str:
    return " ".join(m.value for m in at.markdown)


def test_paper_page_reproduces_figure1_and_the_claims_and_controls_move_it():
    at = open_page("app_pages/paper_results.py", **FAST).run()
    assert not at.exception
    assert_sections_as_registered(at, "paper_results")
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    metrics = metric_values(at)
    assert "Test accuracy, no BN (all 10,000 test images)" in metrics and "Test accuracy, BN (all 10,000 test images)" in metrics
    assert any("(no BN's final on curve (a)" in label for label in metrics)
    assert chart_count(at) == 4  # Fig. 1(a), Fig. 1(b, c), the learning-rate grid, steps to target
    assert any("500 steps here, 50,000 in the paper" in h.value for h in at.subheader)
    text = _text(at)
    assert "Diverged" in text  # ReLU without BN at 30x the learning rate blows up

    # a display choice: another unit, no retraining, other numbers
    at.selectbox(key="paper.unit").select(5).run()
    assert not at.exception
    assert "unit 5 of layer 3" in _text(at) and _text(at) != text

    # the yardstick of the bar chart
    at.selectbox(key="paper.target").select(0.8).run()
    assert not at.exception
    assert "80.0%" in _text(at)

    # a training setting: the initial weights retrain Figure 1
    at.radio(key="paper.init").set_value("default").run()
    assert not at.exception
    assert metric_values(at) != metrics


def test_bad_link_values_are_ignored_with_a_note():
    at = open_page("app_pages/paper_results.py", unit=500, init="banana", **FAST).run()
    assert not at.exception
    notes = " ".join(i.value for i in at.info)
    assert "unit" in notes and "banana" in notes
