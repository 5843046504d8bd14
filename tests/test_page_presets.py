"""Classroom presets on every page: each preset's link (and button) makes the page build
exactly that preset's config, without computing the heavy ones (bnviz/page_presets.py).

``run_experiment`` is replaced by a recorder that stops the page at the preset's
experiment; the page's other sections run for real in the light views the browser
suite uses, so their controls stay cheap.
"""
from __future__ import annotations

import importlib.util
from urllib.parse import parse_qsl

import pytest
import streamlit as st

import bnviz.app
from apptest_helpers import ROOT, metric_values, open_page
from bnviz.experiments import get_experiment
from bnviz.page_presets import DEFAULT_VIEW, PAGE_PRESETS, PagePresets, url_text

URL_PATHS = {"home": "", "normalization_math": "normalization-math", "train_vs_eval": "train-vs-eval", "paper_results": "paper-results",
             "distribution_shift": "distribution-shift", "bn_vs_layernorm": "bn-vs-layernorm", "small_batches": "small-batches", "placement": "placement",
             "why_bn_works": "why-bn-works", "common_pitfalls": "common-pitfalls"}


def _light_queries() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("bnviz_e2e_suite", ROOT / "tests" / "e2e" / "test_app_in_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.E2E_FAST_QUERY


LIGHT = _light_queries()
CASES = [(page, name) for page, presets in PAGE_PRESETS.items() for name, (experiment, _q) in presets.queries().items() if experiment]


class Recorder:
    """Stands in for ``bnviz.app.run_experiment``: records the target experiment's config and stops the page there."""

    def __init__(self, target: str):
        self.target, self.configs, self.real = target, [], bnviz.app.run_experiment

    def __call__(self, name, config, live=None, label="Training"):
        if name == self.target:
            self.configs.append(config)
            st.stop()
        return self.real(name, config, live=live, label=label)


def _open(page: str, query: dict, target: str, monkeypatch):
    """The page with ``query`` over its light view (less the target experiment's own keys)."""
    own_keys = set(PAGE_PRESETS[page].fields[target])
    light = {key: value for key, value in parse_qsl(LIGHT.get(URL_PATHS[page], "")) if key not in own_keys}
    recorder = Recorder(target)
    monkeypatch.setattr(bnviz.app, "run_experiment", recorder)
    at = open_page(f"app_pages/{page}.py", **light, **{key: url_text(value) for key, value in query.items()})
    return at, recorder


def test_every_page_has_presets_and_a_page_file():
    assert set(PAGE_PRESETS) == set(URL_PATHS)
    for page, presets in PAGE_PRESETS.items():
        assert (ROOT / "app_pages" / f"{page}.py").exists()
        assert f'preset_links("{page}")' in (ROOT / "app_pages" / f"{page}.py").read_text()
        assert len(presets.queries()) >= 2, page  # the default view and at least one preset


def test_issue_named_presets_exist():
    names = {name for presets in PAGE_PRESETS.values() for name in presets.queries()}
    assert any(name.startswith("Paper Figure 1") for name in names)
    assert any(name.startswith("NaN") for name in names)


@pytest.mark.parametrize("page,name", CASES, ids=[f"{p}:{n}" for p, n in CASES])
def test_preset_link_builds_exactly_the_preset_config(page, name, monkeypatch):
    experiment, query = PAGE_PRESETS[page].queries()[name]
    at, recorder = _open(page, query, experiment, monkeypatch)
    at.run()
    assert not at.exception, at.exception
    assert not [i.value for i in at.info if "link" in i.value], "a preset value is outside its control's range"
    assert recorder.configs, f"{page} never asked for {experiment}"
    assert recorder.configs[-1] == get_experiment(experiment).presets[name]


@pytest.mark.parametrize("page", list(PAGE_PRESETS))
def test_clicking_a_preset_sets_the_controls_and_the_url(page, monkeypatch):
    presets = PAGE_PRESETS[page]
    queries = presets.queries()
    name = next(n for n, (experiment, _q) in queries.items() if experiment)  # the page's first preset
    experiment, query = queries[name]
    at, recorder = _open(page, {}, experiment, monkeypatch)
    at.run()
    at.button(key=f"{presets.scope}.preset.{name}").click().run()
    assert not at.exception, at.exception
    assert recorder.configs[-1] == get_experiment(experiment).presets[name]
    for key, value in query.items():
        if f"{presets.scope}.{key}" in at.session_state:
            assert at.session_state[f"{presets.scope}.{key}"] == value
    # back to the default view: every key the presets set returns to its default
    at.button(key=f"{presets.scope}.preset.{DEFAULT_VIEW}").click().run()
    assert not at.exception
    for key, value in queries[DEFAULT_VIEW][1].items():
        if f"{presets.scope}.{key}" in at.session_state:
            assert at.session_state[f"{presets.scope}.{key}"] == value


def test_a_preset_runs_for_real_and_links_are_shown():
    """No stand-in: the home page's ReLU preset over the light view trains and shows its metrics."""
    at = open_page("app_pages/home.py", steps="100").run()
    at.button(key="home.preset.ReLU network").click().run()
    assert not at.exception
    assert at.selectbox(key="home.act").value == "relu"
    assert at.query_params["act"] == "relu"
    assert metric_values(at)["Test accuracy with BN (all 10,000 test images)"].endswith("%")
    links = " ".join(code.value for code in at.code)
    assert "?act=relu&lr=0.1" in links and "?act=sigmoid&lr=1.0" in links


def test_link_text_matches_the_controls_url_format():
    assert PagePresets.link("http://host/placement", {"lr": (0.3, 3.0), "opt": "sgd"}) == "http://host/placement?lr=0.3%2C3.0&opt=sgd"
    assert PagePresets.link("http://host/x", {}) == "http://host/x"


def test_reset_all_returns_every_control_seed_included(monkeypatch):
    """"Default view" resets what presets change; "Reset all" resets everything, the seed too."""
    recorder = Recorder("placement")
    monkeypatch.setattr(bnviz.app, "run_experiment", recorder)
    at = open_page("app_pages/placement.py", steps=50, seeds=2, lr="0.3,1.0", width=32, depth=1).run()
    assert recorder.configs[-1].steps == 50 and recorder.configs[-1].lrs == (0.3, 1.0)
    at.button(key="placement.reset").click().run()
    assert not at.exception
    default = get_experiment("placement").default_config()
    assert recorder.configs[-1] == default
    assert tuple(at.select_slider(key="placement.lr").value) == (min(default.lrs), max(default.lrs))
    assert at.query_params["steps"] == str(default.steps)  # the URL mirrors the defaults again
