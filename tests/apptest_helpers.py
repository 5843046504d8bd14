"""Shared helpers for the AppTest page tests."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240


def open_page(path: str, **query: str) -> AppTest:
    """An AppTest of ``path`` (relative to the repo root) with URL query parameters set."""
    at = AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = str(value)
    return at


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def chart_count(at: AppTest) -> int:
    """Altair charts on the page (AppTest calls them vega_lite_chart elements)."""
    return len(at.get("vega_lite_chart"))


def note_text(at: AppTest) -> str:
    """The page's info notes as a reader sees them (``Controls.show_notes`` escapes markdown characters)."""
    import re

    return " ".join(re.sub(r"\\(.)", r"\1", box.value) for box in at.info)


def sections_drawn(at: AppTest) -> list[str]:
    """The keys of the page sections (``bnviz.app.section``) the last run drew, in order."""
    from bnviz.app import SECTIONS_DRAWN_KEY

    return list(at.session_state[SECTIONS_DRAWN_KEY]) if SECTIONS_DRAWN_KEY in at.session_state else []


def assert_sections_as_registered(at: AppTest, page: str) -> None:
    """The page drew exactly the sections ``PAGE_SECTIONS`` lists for it, and no section key
    is also one of its controls' URL keys (``?hide=KEY`` names either)."""
    from bnviz.page_presets import PAGE_SECTIONS

    assert sections_drawn(at) == list(PAGE_SECTIONS[page])
    assert not set(PAGE_SECTIONS[page]) & set(at.query_params)


# Widget kinds a reader operates (AppTest's names); every one needs a tooltip (issue #20).
CONTROL_KINDS = ("slider", "select_slider", "selectbox", "radio", "toggle", "checkbox", "number_input", "multiselect", "text_input", "button")


def controls_without_help(at: AppTest) -> list[str]:
    """Every control on the page that has no tooltip, as "kind 'label' (key)"."""
    return [f"{kind} {widget.label!r} ({widget.key})" for kind in CONTROL_KINDS for widget in getattr(at, kind, []) if not getattr(widget, "help", None)]


def takeaway_count(at: AppTest) -> int:
    """The one-sentence takeaways under charts (``bnviz.app.show_takeaway`` marks them with a lightbulb)."""
    return sum(":material/lightbulb:" in caption.value for caption in at.caption)


def assert_classroom_ready(at: AppTest) -> None:
    """Every control has a tooltip and every chart its takeaway: checked on a page run a test already made."""
    assert not controls_without_help(at), f"controls without help: {controls_without_help(at)}"
    assert takeaway_count(at) >= chart_count(at) > 0, f"{chart_count(at)} charts, {takeaway_count(at)} takeaways"
