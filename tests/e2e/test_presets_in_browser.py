"""Classroom presets as a lecturer uses them, in the browser: click a preset's button, then
touch another control, and the preset's values must stay (in the URL and on screen).

The widget values a browser holds are what a click sends back, so this catches what AppTest
cannot: a widget whose browser-side value survived the preset (the placement page's
learning-rate range once snapped back to 0.1-1 after "Adam", retraining Adam at lr 0.1-1).
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from bnviz.page_presets import DEFAULT_VIEW, HIDE_KEY, PAGE_PRESETS, PREDICT_KEY, url_text

from test_app_in_browser import E2E_FAST_QUERY, open_page, page_problems, wait_idle

pytestmark = pytest.mark.e2e


def url_query(page) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(page.url).query).items()}


def range_thumbs(page, label: str) -> list[str]:
    """The values a two-handle slider shows on its thumbs."""
    slider = page.locator('[data-testid="stSlider"]').filter(has=page.get_by_text(label, exact=True)).first
    return [text.strip() for text in slider.locator('[data-testid="stSliderThumbValue"]').all_inner_texts()]


def click_preset(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).first.click()
    wait_idle(page)


def test_placement_presets_keep_their_learning_rate_range(browser, app_url, artifacts):
    presets = PAGE_PRESETS["placement"].queries()
    page, console = open_page(browser, app_url, "placement", E2E_FAST_QUERY["placement"])
    try:
        wait_idle(page)
        for name in ("Adam", "The paper's sigmoid", DEFAULT_VIEW):
            _experiment, query = presets[name]
            click_preset(page, name)
            # a lesson's keys (hide, predict) left off by this preset are absent from the URL
            expected = {key: None if key in (HIDE_KEY, PREDICT_KEY) and not value else url_text(value) for key, value in query.items()}
            assert {key: url_query(page).get(key) for key in expected} == expected, f"after the button “{name}”"
            # touch a view-only control (the reported path): a stale range would be sent back now
            radio = page.locator('[data-testid="stRadio"]').first
            radio.locator("label:has(input:not(:checked))").first.click()
            wait_idle(page)
            assert {key: url_query(page).get(key) for key in expected} == expected, f"after “{name}” and a click on the learning-rate radio"
            page.get_by_text("Settings of the experiment").first.click()  # open the expander: the slider shows the range
            low, high = query["lr"]
            assert range_thumbs(page, "Learning rates (log scale)") == [f"{low:g}", f"{high:g}"], f"the range slider after “{name}”"
            page.get_by_text("Settings of the experiment").first.click()
            assert page_problems(page, "placement") == []
        # "Reset all": every control, the range and the light query's own values included
        click_preset(page, "Adam")
        page.get_by_role("button", name="Reset all").first.click()
        wait_idle(page)
        from bnviz.experiments import get_experiment

        default = get_experiment("placement").default_config()
        query = url_query(page)
        assert (query["opt"], query["lr"], query["steps"], query["width"]) == (
            default.optimizer, url_text((min(default.lrs), max(default.lrs))), str(default.steps), str(default.width))
        page.get_by_text("Settings of the experiment").first.click()
        assert range_thumbs(page, "Learning rates (log scale)") == [f"{min(default.lrs):g}", f"{max(default.lrs):g}"]
        assert console.errors == []
    finally:
        page.screenshot(path=str(artifacts / "placement-presets.png"))
        page.context.close()
