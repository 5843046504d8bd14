"""AppTest of app_pages/why_bn_works.py: three hypotheses, noisy BN, probes, scoreboard."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page

# the fast view: the smallest runs the widgets allow, few probes
FAST = {"n_steps": 100, "p_steps": 100, "every": 50, "n_seeds": 2, "p_seeds": 2}


def markdown_text(at) -> str:
    return " ".join(m.value for m in at.markdown)


def test_page_runs_both_experiments_and_each_control_moves_its_result():
    at = open_page("app_pages/why_bn_works.py", **FAST).run()
    assert not at.exception
    assert_sections_as_registered(at, "why_bn_works")
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    values = metric_values(at)
    for label in ("no BN", "BN", "noisy BN", "no BN + noise"):
        assert f"Test accuracy, {label}" in values
    assert "‖G − G′‖ / ‖G‖, BN" in values and "Effective β, BN" in values
    assert chart_count(at) >= 9
    board = at.table[0].value
    words = {"supported", "not supported", "inconclusive at 2 seeds", "not tested", "no verdict", "holds by construction", "construction check failed"}
    assert len(board) == 4 and set(board["verdict"]) <= words, set(board["verdict"])
    assert board["verdict"].iloc[2] == "holds by construction"  # (2) is a guarantee, not evidence
    assert "effective β" in board["measured"].iloc[3]  # (3) is judged on Santurkar et al.'s measure

    at.select_slider(key="why.noise").set_value(4.0).run()
    assert not at.exception
    after_noise = metric_values(at)
    assert after_noise["Test accuracy, noisy BN"] != values["Test accuracy, noisy BN"]
    assert after_noise["Test accuracy, BN"] == values["Test accuracy, BN"]  # the noise touches only the noisy models

    at.selectbox(key="why.p_act").select("tanh").run()
    assert not at.exception
    after_act = metric_values(at)
    assert after_act["‖G − G′‖ / ‖G‖, BN"] != after_noise["‖G − G′‖ / ‖G‖, BN"]

    assert "Noisy BN, probed the same way" not in markdown_text(at)
    at.toggle(key="why.noisy").set_value(True).run()
    assert not at.exception
    assert "Noisy BN, probed the same way" in markdown_text(at)


def test_a_diverging_learning_rate_is_a_warning_not_a_traceback():
    at = open_page("app_pages/why_bn_works.py", n_steps=100, p_steps=100, every=50, n_lr=2.0, p_lr=2.0, n_act="relu").run()
    assert not at.exception
    assert len(at.table) == 1
    warnings = " ".join(w.value for w in at.warning)
    assert ("diverged" in warnings) or all("n/a" not in v for v in metric_values(at).values())
