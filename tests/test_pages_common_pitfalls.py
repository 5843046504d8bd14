"""AppTest of app_pages/common_pitfalls.py: its three sections run, and their controls move the results."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page

FAST = {"fp_steps": 50, "fp_seeds": 1, "ls_seeds": 1, "ls_steps": 100, "ig_seeds": 1, "width": 32, "sw_steps": 100, "sw_seeds": 2}
BEFORE, AFTER, FIXED = "Eval-mode accuracy before the pass", "After one pass in train mode under no_grad", "After the same pass with model.eval() first"


def page_text(at) -> str:
    return " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)


def test_page_shows_the_three_pitfalls_and_its_controls_move_them():
    at = open_page("app_pages/common_pitfalls.py", **FAST).run()
    assert not at.exception
    assert_sections_as_registered(at, "common_pitfalls")
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    # running statistics, batch size, label shift, gradient per layer, gradient by depth, switches
    assert chart_count(at) == 6
    metrics = metric_values(at)
    assert metrics[FIXED] == metrics[BEFORE]  # model.eval() first: the buffers did not move
    assert metrics[AFTER] != metrics[BEFORE]
    text = page_text(at)
    assert "the running statistics move under `torch.no_grad()`" in text and "exactly the same buffers" in text
    assert "PyTorch refuses it" in " ".join(i.value for i in at.info)
    assert len(at.dataframe) == 3  # d2l's layer vs nn.BatchNorm1d, the label-shift verdicts, the switches
    switches = at.dataframe[2].value
    assert switches.loc[switches["switch"] == "full BN", "vs full BN"].item() == "(the reference)"
    assert "Dropout's variance shift, measured" in text
    assert "BN: the gradient grows" in text and "SkipInit: the gradient stays flat" in text
    assert metrics["SkipInit: growth per layer (50 layers)"] == "1.000"

    # the whole test set in order instead of digit by digit: another accuracy after the pass, the fix unchanged
    at.selectbox(key="pitfalls.pass").set_value("test set").run()
    assert not at.exception
    moved = metric_values(at)
    assert moved[AFTER] != metrics[AFTER] and moved[FIXED] == metrics[FIXED]
    assert "test set in order" in page_text(at)

    # another learning rate for the switches: other accuracies
    at.selectbox(key="pitfalls.sw_lr").set_value(0.3).run()
    assert not at.exception
    assert not at.dataframe[2].value["per seed"].equals(switches["per seed"])

    # a wider network: the BN chain's measured growth changes
    at.selectbox(key="pitfalls.width").set_value(64).run()
    assert not at.exception
    assert metric_values(at)["BN: growth per layer (50 layers)"] != metrics["BN: growth per layer (50 layers)"]


def test_bad_link_values_are_clamped_with_a_note():
    # values the first test already computed once clamped (seeds 0 -> 1, an unknown pass -> the default)
    at = open_page("app_pages/common_pitfalls.py", **{**FAST, "ig_seeds": 0, "pass": "train set"}).run()
    assert not at.exception
    notes = " ".join(i.value for i in at.info)
    assert "ig\\_seeds=0" in notes and "train set" in notes  # notes are escaped plain text (markdown characters backslashed)
