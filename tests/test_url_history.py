"""The browser's Back/Forward: Streamlit reruns the page with an earlier URL, and the
controls take that URL's values (bnviz.app.Controls._moved_in_url). The browser half is
tests/e2e/test_views_in_browser.py."""
from streamlit.testing.v1 import AppTest


def controls_script():
    from bnviz.app import Controls

    controls = Controls("history")
    controls.slider("Seed", "seed", 0, 9, 0)
    controls.select_range("Learning rates", "lr", [0.1, 0.3, 1.0, 3.0], (0.1, 1.0))


def test_an_earlier_url_undoes_a_change_and_a_url_without_the_keys_keeps_the_session():
    at = AppTest.from_function(controls_script).run()
    assert at.query_params["seed"] == "0"
    at.slider(key="history.seed").set_value(5).run()
    at.select_slider(key="history.lr").set_value((0.3, 3.0)).run()
    assert (at.query_params["seed"], at.query_params["lr"]) == ("5", "0.3,3.0")

    at.query_params["lr"] = "0.1,1.0"  # Back: the URL before the range moved
    at.run()
    assert at.select_slider(key="history.lr").value == (0.1, 1.0)
    assert at.slider(key="history.seed").value == 5
    at.query_params["seed"] = "0"  # Back once more
    at.run()
    assert at.slider(key="history.seed").value == 0
    at.query_params["seed"] = "5"  # Forward
    at.run()
    assert at.slider(key="history.seed").value == 5

    at.query_params.clear()  # a URL without the page's keys (opened from the sidebar): the session's values stay
    at.run()
    assert at.slider(key="history.seed").value == 5 and at.query_params["seed"] == "5"
