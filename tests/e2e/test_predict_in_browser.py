"""Predict, then reveal, and a lecturer's hidden controls, in the browser: a link with
``?predict=1&hide=seed`` opens the home page on its question (the charts hidden, the
training running meanwhile), a pick and Reveal show the answer with the charts."""
from __future__ import annotations

import pytest

from bnviz.predictions import QUESTIONS
from bnviz.experiments.home import HomeConfig

from test_app_in_browser import E2E_FAST_QUERY, RUN_TIMEOUT_S, open_page, page_problems, screenshot, wait_idle

pytestmark = pytest.mark.e2e

MEANWHILE = "Its charts appear with the answer"


def test_the_question_comes_first_and_the_answer_with_the_charts(browser, app_url, artifacts):
    page, console = open_page(browser, app_url, "", E2E_FAST_QUERY[""] + "&predict=1&hide=seed")
    try:
        question = page.locator('[class*="st-key-bnviz-question-"]')
        question.wait_for(timeout=RUN_TIMEOUT_S * 1000)
        assert page.locator('[data-testid="stVegaLiteChart"]').count() == 0  # the experiment's charts wait for the reveal
        # the training ran meanwhile: its progress line goes when it is done
        page.wait_for_function(f"() => !document.body.innerText.includes({MEANWHILE!r})", timeout=RUN_TIMEOUT_S * 1000, polling=250)
        wait_idle(page)
        assert page.locator('[data-testid="stVegaLiteChart"]').count() == 0
        page.get_by_text("Settings of the experiment").first.click()
        assert page.get_by_text("Seed", exact=True).count() == 0 and page.get_by_text("Training steps (batches of 60)").count() == 1
        screenshot(page, artifacts, "predict-question")
        options = QUESTIONS["home"].options(HomeConfig(steps=100))
        question.get_by_text(options[0], exact=True).click()
        wait_idle(page)
        page.get_by_role("button", name="Reveal the result").click()
        wait_idle(page)
        assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 2
        answer = page.locator('[data-testid="stAlertContainer"]').filter(has_text="leads by").first
        assert answer.is_visible() and ("your prediction was right" in answer.inner_text() or "you picked" in answer.inner_text())
        assert page_problems(page, "") == []
        screenshot(page, artifacts, "predict-revealed")
        # the lecturer's link builder: opened, its content computed, the link shown with hide=seed and predict=1
        page.get_by_role("button", name="Link for your class").click()
        wait_idle(page)
        builder = page.locator('[data-testid="stPopoverBody"]').filter(has_text="Hide these controls")
        builder.wait_for(timeout=RUN_TIMEOUT_S * 1000)
        link = builder.locator('[data-testid="stCode"]').inner_text()
        assert "hide=seed" in link and "predict=1" in link, link
        page.screenshot(path=str(artifacts / "class-link-builder.png"))
        assert console.errors == []
    finally:
        page.context.close()
