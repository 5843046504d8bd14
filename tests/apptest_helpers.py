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
