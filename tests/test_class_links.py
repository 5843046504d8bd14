"""A lecturer's links, in AppTest: ``?hide=`` hides controls that keep their values, a lesson
preset carries ``hide`` and ``predict``, the "Link for your class" builder's link opens the
page as built, and ``?predict=1`` asks the page's question before its result.

The hide and link tests stop the page at its experiment (no training); the prediction test
trains the home page's light view (100 steps), the config its own AppTest trains.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
import streamlit as st

import bnviz.app
from apptest_helpers import chart_count, open_page
from bnviz.cache import ResultStore
from bnviz.experiments.home import HomeConfig
from bnviz.page_presets import HIDE_KEY, PAGE_PRESETS, PAGE_SECTIONS, PREDICT_KEY, class_link, hidden_keys
from bnviz.predictions import QUESTIONS


class StopAtExperiment:
    """Stands in for ``bnviz.app.run_experiment``: records the configs the controls built, then stops the page."""

    def __init__(self):
        self.configs = []

    def __call__(self, name, config, live=None, label="Training"):
        self.configs.append(config)
        st.stop()


@pytest.fixture
def stopped(monkeypatch):
    stand_in = StopAtExperiment()
    monkeypatch.setattr(bnviz.app, "run_experiment", stand_in)
    return stand_in


def test_class_link_and_hidden_keys():
    link = class_link("http://host/placement", {"lr": "0.3,3.0", HIDE_KEY: "old", "steps": "50"}, ["seed", "act"], True)
    assert link == "http://host/placement?lr=0.3%2C3.0&steps=50&hide=seed%2Cact&predict=1"
    assert hidden_keys(dict(parse_qsl(urlsplit(link).query))[HIDE_KEY]) == {"seed", "act"}
    assert class_link("http://host/", {}, [], False) == "http://host/" and hidden_keys(" a, ,b ") == {"a", "b"}


def test_hidden_seed_is_not_drawn_and_keeps_its_link_value(stopped):
    at = open_page("app_pages/home.py", seed="3", hide="seed").run()
    assert not at.exception, at.exception
    assert [s.key for s in at.slider] == ["home.steps"]  # the seed slider is not drawn, the others are
    assert stopped.configs[-1].seed == 3 and at.query_params["seed"] == "3"  # used and still published
    at.slider(key="home.steps").set_value(200).run()  # a rerun keeps it
    assert stopped.configs[-1] == HomeConfig(steps=200, seed=3)


def test_hostile_hide_and_predict_values_are_harmless(stopped):
    at = open_page("app_pages/home.py", hide="\x00,<b>,**seed**," + "x" * 5000, predict="1e999").run()
    assert not at.exception, at.exception
    assert "home.seed" in [s.key for s in at.slider] and not any(r.key.startswith("bnviz.predict.") for r in at.radio)


def test_a_lesson_preset_hides_and_asks_and_the_default_view_undoes_it(stopped):
    at = open_page("app_pages/home.py").run()
    at.button(key="home.preset.Quiz: predict first").click().run()
    assert not at.exception, at.exception
    assert at.query_params[HIDE_KEY] == "seed" and at.session_state["app.predict"] is True
    assert "home.seed" not in [s.key for s in at.slider]
    at.button(key="home.preset.Default view").click().run()
    assert HIDE_KEY not in at.query_params and at.session_state["app.predict"] is False
    assert "home.seed" in [s.key for s in at.slider]
    name, lesson = "Learning rates only", PAGE_PRESETS["placement"].lessons["Learning rates only"]
    link = PAGE_PRESETS["placement"].link("http://host/placement", PAGE_PRESETS["placement"].queries()[name][1])
    assert f"{HIDE_KEY}={'%2C'.join(lesson.hide)}" in link and PREDICT_KEY not in link


def test_the_class_link_builder_round_trips(stopped):
    at = open_page("app_pages/home.py", steps="200")
    at.session_state["home.class_link"] = True  # the popover open: its content is drawn
    at.run()
    assert not at.exception, at.exception
    at.multiselect(key="home.class_link.hide").set_value(["seed", "lr"])
    at.toggle(key="home.class_link.predict").set_value(True).run()
    link = at.code[-1].value  # the builder's, after the preset links
    query = dict(parse_qsl(urlsplit(link).query))
    assert query[HIDE_KEY] == "seed,lr" and query[PREDICT_KEY] == "1" and query["steps"] == "200"
    assert {"act", "lr", "steps", "seed"} <= set(query)  # the page's current settings travel with it
    opened = open_page("app_pages/home.py", **query).run()  # the link, opened by a student
    assert not opened.exception, opened.exception
    assert [s.key for s in opened.slider] == ["home.steps"] and opened.slider(key="home.steps").value == 200
    assert stopped.configs[-1] == HomeConfig(steps=200)


def test_the_builder_lists_the_page_sections(stopped):
    at = open_page("app_pages/placement.py", steps="50")
    at.session_state["placement.class_link"] = True
    at.run()
    assert not at.exception, at.exception
    sections = at.multiselect(key="placement.class_link.sections")
    assert sections.options == [f"{title} ({key})" for key, title in PAGE_SECTIONS["placement"].items()]
    sections.set_value(["inputs"])
    at.multiselect(key="placement.class_link.hide").set_value(["seeds"]).run()
    query = dict(parse_qsl(urlsplit(at.code[-1].value).query))
    assert hidden_keys(query[HIDE_KEY]) == {"seeds", "inputs"} and PREDICT_KEY not in query


def test_predict_hides_the_charts_until_the_reveal_and_the_answer_follows_the_rule():
    at = open_page("app_pages/home.py", steps="100", predict="1").run()
    assert not at.exception, at.exception
    question = QUESTIONS["home"]
    config = HomeConfig(steps=100)
    [radio] = [r for r in at.radio if r.key.startswith("bnviz.predict.")]
    assert radio.options == list(question.options(config)) and radio.value is None
    assert chart_count(at) == 0 and not at.metric  # the experiment's charts and numbers wait
    assert any("Its charts appear with the answer" in c.value for c in at.caption) or ResultStore().get("home", config) is not None
    radio.set_value(question.options(config)[1]).run()  # "Without BN"
    [reveal] = [b for b in at.button if b.key.startswith("bnviz.reveal.")]
    reveal.click().run()
    assert not at.exception, at.exception
    assert chart_count(at) == 2 and at.metric
    expected = question.answer(ResultStore().get("home", config))
    boxes = at.success if expected.option == question.options(config)[1] else at.warning
    assert [box.value for box in boxes if expected.option in box.value and expected.explanation in box.value], [b.value for b in (*at.success, *at.warning)]
