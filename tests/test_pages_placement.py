"""AppTest of the placement page (app_pages/placement.py): runs, shows a computed verdict, controls move it."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, note_text, open_page, sections_drawn

# 2 learning rates x 2 seeds x 3 models of 50 steps on a 32-unit layer: about a second of training
FAST = dict(steps=50, seeds=2, lr="0.3,1.0", width=32, depth=1)


def verdict_text(at) -> str:
    return " ".join(m.value for m in at.markdown if "BN before" in m.value and "no BN" in m.value)


def test_page_trains_three_models_per_seed_and_a_verdict_follows_the_numbers():
    at = open_page("app_pages/placement.py", **FAST).run()
    assert not at.exception
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    before = metric_values(at)
    assert set(before) == {"no BN: final test accuracy", "BN before: final test accuracy", "BN after: final test accuracy"}
    assert chart_count(at) == 6  # accuracy and loss bands, the sweep, the histograms, two per-layer charts
    assert any(h.value == "Verdict at learning rate 0.3" for h in at.subheader)
    text = verdict_text(at)
    assert ("wins" in text or "Inconclusive at 2 seeds" in text or "No difference" in text) and "paired over 2 seeds" in text
    assert not at.error  # the paired-start check passed
    assert_sections_as_registered(at, "placement")

    at.selectbox(key="placement.act").select("sigmoid").run()
    assert not at.exception
    assert metric_values(at) != before and verdict_text(at) != text


def test_viewing_another_learning_rate_and_changing_the_range():
    at = open_page("app_pages/placement.py", **FAST).run()
    before, text = metric_values(at), verdict_text(at)
    at.radio(key="placement.view_lr").set_value(1.0).run()  # a view of runs already trained
    assert not at.exception
    assert any(h.value == "Verdict at learning rate 1" for h in at.subheader)
    assert metric_values(at) != before and verdict_text(at) != text

    at.select_slider(key="placement.lr").set_range(0.03, 0.1).run()  # 1.0 is no longer trained
    assert not at.exception
    assert [str(o) for o in at.radio(key="placement.view_lr").options] == ["0.03", "0.1"]
    assert any(h.value == "Verdict at learning rate 0.03" for h in at.subheader)


def test_bad_link_values_are_ignored_with_a_note():
    at = open_page("app_pages/placement.py", **FAST | {"act": "banana", "lr": "0.3,7", "seeds": 1}).run()
    assert not at.exception
    notes = note_text(at)
    assert "banana" in notes and "0.3,7" in notes and "seeds" in notes


def test_a_link_hides_a_section():
    at = open_page("app_pages/placement.py", **FAST | {"hide": "inputs"}).run()
    assert not at.exception
    assert sections_drawn(at) == ["lr_sweep"]
    assert not any("Why they differ" in h.value for h in at.subheader) and any("Which placement" in h.value for h in at.subheader)
    assert chart_count(at) == 3  # accuracy and loss bands, the sweep


def test_a_link_reopens_the_view_it_names():
    """view_lr and layer depend on other controls; a link's values must still be read."""
    at = open_page("app_pages/placement.py", **FAST | {"depth": 2, "view_lr": "1.0", "layer": 1}).run()
    assert not at.exception and not at.info
    assert at.radio(key="placement.view_lr").value == 1.0
    assert at.selectbox(key="placement.layer").value == 1
    assert any(h.value == "Verdict at learning rate 1" for h in at.subheader)
