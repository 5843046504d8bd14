"""Hostile URL values: every key of every page survives them, and the note a page shows
about one quotes it as plain text, shortened (bnviz.app.Controls).

Three layers, fast: every control kind in a tiny page script with every value; every URL
key of every page with every value, the page stopped at its first experiment (the controls
above it parse the link: that is where a value can crash a page); and the home page for
real, every key at once, one run per value.
"""
from __future__ import annotations

import ast
import re

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import bnviz.app
from apptest_helpers import ROOT, TIMEOUT, open_page
from bnviz.app import SHOWN_CHARACTERS, plain_text, shown_value
from bnviz.page_presets import PAGE_PRESETS

MARKUP = "[Session expired: log in again](https://evil.example/login) ![x](https://evil.example/pixel.png)"
HOSTILE = {
    "inf": "inf", "-inf": "-inf", "nan": "nan", "1e308": "1e308", "-1": "-1", "0": "0",
    "huge int": "9" * 400, "big int": "123456789012345678901234567890", "long": "x" * 10_000,
    "markup": MARKUP, "script": "<script>alert(1)</script>", "empty": "", "unicode": "ÿ€😀١٢٣\u202e\u200b",
    "math": "$\\int$ :red[x] :material/warning: **b**", "list": "1,2,3",
}
# What markdown gives a meaning to; a note must carry each of these escaped (bnviz.app.plain_text).
MARKDOWN_CHARACTERS = set("!#$&()*+-.:<>@[\\]^_`{|}~")


def page_keys(page: str) -> set[str]:
    """Every URL key a page reads: its presets' keys and the key of each ``*controls.<widget>("label", "key")`` call."""
    keys = {key for fields in PAGE_PRESETS[page].fields.values() for key in fields}
    tree = ast.parse((ROOT / "app_pages" / f"{page}.py").read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in {"slider", "select", "select_range", "radio", "toggle"}
                and isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("controls") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)):
            keys.add(node.args[1].value)
    return keys


def assert_notes_are_plain(at: AppTest) -> None:
    for note in (box.value for box in at.info):
        unescaped = re.sub(r"\\(.)", "", note)  # what is left once every escaped character is taken out
        assert not MARKDOWN_CHARACTERS & set(unescaped), f"markdown left unescaped in a note: {note[:200]!r}"
        assert len(note) < 400, f"a note echoes too much: {len(note)} characters"
        assert "evil.example/login" not in note and "<script>" not in note


def test_plain_text_and_shown_value():
    assert plain_text("a [b](c) ![d](e) <i> $x$ :red[y] https://x.org *z* `q` 1. www.x.org") == (
        r"a \[b\]\(c\) \!\[d\]\(e\) \<i\> \$x\$ \:red\[y\] https\://x\.org \*z\* \`q\` 1\. www\.x\.org")
    assert plain_text("n=99, 0.3; why? 'it' \"is\" 5% a/b") == "n=99, 0\\.3; why? 'it' \"is\" 5% a/b"  # readable where nothing is markup
    assert shown_value("x" * 10_000) == "x" * SHOWN_CHARACTERS + "…"
    assert shown_value("short") == "short"
    assert shown_value("a\nb\u202e") == "a\\nb\\u202e"  # no line break into a note, no right-to-left override


def controls_page():
    """Every kind of control, as the pages build them."""
    import streamlit as st

    from bnviz.app import Controls

    controls = Controls("fuzz")
    values = {
        "int": controls.slider("int", "int", 1, 3000, 100, step=100),
        "float": controls.slider("float", "float", -5.0, 5.0, 0.0, step=0.1),
        "choice": controls.select("choice", "choice", [0.01, 0.1, 1.0], 0.1, slider=True),
        "word": controls.select("word", "word", ["sigmoid", "relu"], "relu"),
        "count": controls.radio("count", "count", [1, 2, 3], 2),
        "on": controls.toggle("on", "on", False),
        "range": controls.select_range("range", "range", [0.1, 0.3, 1.0, 3.0], (0.3, 1.0)),
    }
    controls.show_notes()
    st.session_state["fuzz.values"] = values


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_every_control_kind_survives_the_value_and_stays_in_bounds(value):
    at = AppTest.from_function(controls_page, default_timeout=TIMEOUT)
    for key in ("int", "float", "choice", "word", "count", "on", "range"):
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    values = at.session_state["fuzz.values"]
    assert 1 <= values["int"] <= 3000 and isinstance(values["int"], int)
    assert -5.0 <= values["float"] <= 5.0
    assert values["choice"] in (0.01, 0.1, 1.0) and values["word"] in ("sigmoid", "relu") and values["count"] in (1, 2, 3)
    assert values["range"][0] in (0.1, 0.3, 1.0, 3.0) and values["range"][1] in (0.1, 0.3, 1.0, 3.0)
    assert_notes_are_plain(at)
    if value in ("0", "-1", "1e308"):  # a number outside a slider's range is clamped, and said so
        assert any("outside" in box.value for box in at.info)
    elif value != "1,2,3":
        assert any("Ignored" in box.value for box in at.info)


def test_the_markup_note_shows_the_value_shortened():
    at = AppTest.from_function(controls_page, default_timeout=TIMEOUT)
    at.query_params["word"] = MARKUP
    at.run()
    notes = [box.value for box in at.info]
    assert len(notes) == 1
    assert notes[0] == plain_text(f"Ignored the link's value “{MARKUP[:SHOWN_CHARACTERS]}…” for “word”; using relu.")


class StopAtFirstExperiment:
    """Stands in for ``bnviz.app.run_experiment``: the page's controls above it have read the link."""

    def __init__(self):
        self.names = []

    def __call__(self, name, config, live=None, label="Training"):
        self.names.append(name)
        st.stop()


PAGE_CASES = [(page, label) for page in PAGE_PRESETS for label in HOSTILE]


@pytest.mark.parametrize("page,label", PAGE_CASES, ids=[f"{p}:{v}" for p, v in PAGE_CASES])
def test_every_key_of_every_page_survives_the_value(page, label, monkeypatch):
    stand_in = StopAtFirstExperiment()
    monkeypatch.setattr(bnviz.app, "run_experiment", stand_in)
    keys = page_keys(page)
    assert len(keys) >= 4, keys
    at = open_page(f"app_pages/{page}.py", **{key: HOSTILE[label] for key in keys})
    at.run()
    assert not at.exception, at.exception
    # every config the controls allow is valid; a combination over the per-view budget (bnviz.budget) is refused in words
    assert all("--allow-heavy" in e.value for e in at.error), [e.value for e in at.error]
    assert stand_in.names or at.error or page == "normalization_math", f"{page} never reached its experiment"
    assert_notes_are_plain(at)


@pytest.mark.parametrize("label", ["inf", "-1", "markup", "long", "empty", "unicode"])
def test_home_page_for_real_with_every_key_set_to_the_value(label):
    """No stand-in: the page trains (a bad value gives the default, -1 the smallest) and draws its charts and downloads."""
    at = open_page("app_pages/home.py", **{key: HOSTILE[label] for key in page_keys("home")}).run()
    assert not at.exception, at.exception
    assert len(at.metric) == 3
    assert_notes_are_plain(at)
    assert at.info, "the bad value was not mentioned"
