"""What a room sees: presenter view at two projector resolutions, a phone, the dark theme,
and the browser's Back and Forward, in headless Chromium.

Each view is checked by measurement (nothing wider than the page, no label cut with "…",
no slider value struck through by its track) and saved as a screenshot under
test-artifacts/e2e/ for a person to look at. Two pages, both cached after the first view:
home (metrics, diagrams, curves) and normalization math (equations, sliders, tables).
"""
from __future__ import annotations

import pytest

from test_app_in_browser import E2E_FAST_QUERY, wait_charts_drawn, wait_idle

PAGES = {"home": "", "normalization-math": "normalization-math"}
VIEWS = {  # name: (width, height, query)
    "presenter-1280x720": (1280, 720, "presenter=true"),
    "presenter-1920x1080": (1920, 1080, "presenter=true"),
    "phone-390": (390, 844, ""),
    "dark-1280x720": (1280, 720, "embed_options=dark_theme"),
}

# Everything a room must read that does not fit: the page wider than the window, a label or
# value Streamlit cut with "…" (its text wider than its box), a slider's value over its track.
CLIPPED_JS = """() => {
  const problems = [];
  const root = document.documentElement, main = document.querySelector('[data-testid="stMain"]');
  if (root.scrollWidth > window.innerWidth + 1) problems.push(`page ${root.scrollWidth} px wide in a ${window.innerWidth} px window`);
  if (main && main.scrollWidth > main.clientWidth + 1) problems.push(`main area scrolls sideways: ${main.scrollWidth} > ${main.clientWidth} px`);
  // Streamlit's one-line text boxes (class stMarkdownEllipsis: metric labels and values, widget labels)
  for (const el of document.querySelectorAll('[data-testid="stMain"] :is(.stMarkdownEllipsis, [data-testid="stSliderThumbValue"])')) {
    if (el.checkVisibility() && el.innerText.trim() && el.scrollWidth > el.clientWidth + 1) problems.push(`cut with "…": ${el.innerText.slice(0, 60)}`);
  }
  for (const slider of document.querySelectorAll('[data-testid="stMain"] [data-testid="stSlider"]')) {
    const track = slider.querySelector('div[style*="position: relative"] > div:first-child');
    if (!track || !track.getBoundingClientRect().width) continue;
    const top = track.getBoundingClientRect().top;
    for (const value of slider.querySelectorAll('[data-testid="stSliderThumbValue"]')) {
      const box = value.getBoundingClientRect();
      if (box.height && box.bottom > top + 1) problems.push(`slider value over its track: ${value.innerText}`);
    }
  }
  for (const arrow of document.querySelectorAll('[data-testid^="stMetricDeltaIcon"]')) {
    if (arrow.getBoundingClientRect().width > 0) problems.push('a metric delta drawn with an arrow (bnviz deltas are references, not changes)');
  }
  return problems;
}"""

BACKGROUND_JS = "() => getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor"


def url(app_url: str, path: str, query: str) -> str:
    """The page at its cached small config (E2E_FAST_QUERY), with the view's own query."""
    queries = [q for q in (E2E_FAST_QUERY.get(path, ""), query) if q]
    return f"{app_url}/{path}" + (f"?{'&'.join(queries)}" if queries else "")


def screenshot(page, artifacts, name: str, width: int, height: int):
    """The whole page at the view's width (Streamlit scrolls inside its own container: the
    window grows to the content for the shot, then goes back to the view's size)."""
    path = artifacts / f"{name}.png"
    content = page.evaluate("""() => Math.max(...['stMain', 'stAppViewContainer'].map(
        id => (document.querySelector(`[data-testid="${id}"]`) || {}).scrollHeight || 0))""")
    page.set_viewport_size({"width": width, "height": min(max(content, height), 12_000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": height})
    return path


@pytest.fixture(scope="module")
def context(browser):
    context = browser.new_context()
    yield context
    context.close()


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_fits_the_screen_with_nothing_clipped(context, app_url, artifacts, view, subtests):
    width, height, query = VIEWS[view]
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": height})
    try:
        for name, path in PAGES.items():
            with subtests.test(page=name, view=view):
                page.goto(url(app_url, path, query))
                wait_idle(page)
                wait_charts_drawn(page)
                if path == "normalization-math":  # its settings: in the page, not the folded sidebar
                    page.get_by_text("Settings of the batch and of BN").click()
                    page.wait_for_timeout(400)
                problems = page.evaluate(CLIPPED_JS)
                shot = screenshot(page, artifacts, f"view-{view}-{name}", width, height)
                assert not problems, f"{view}, {name} ({shot}): " + "; ".join(dict.fromkeys(problems))
                if view.startswith("dark"):
                    assert page.evaluate(BACKGROUND_JS) == "rgb(0, 0, 0)"
    finally:
        page.close()


def test_back_and_forward_restore_a_control(context, app_url):
    """Streamlit pushes a history entry for each URL the page writes and, on Back, reruns the
    page with the earlier URL: the control takes that URL's value (Controls._moved_in_url)."""
    page = context.new_page()
    try:
        page.goto(url(app_url, "normalization-math", ""))
        wait_idle(page)
        page.get_by_text("Settings of the batch and of BN").click()
        radio = page.get_by_role("radiogroup", name="Nonlinearity drawn")
        radio.get_by_text("tanh", exact=True).click()
        page.wait_for_function("() => location.search.includes('nonlin=tanh')")
        wait_idle(page)

        page.go_back()
        page.wait_for_function("() => location.search.includes('nonlin=sigmoid')")
        wait_idle(page)
        assert radio.get_by_role("radio", name="sigmoid").is_checked(), "Back: the URL says sigmoid, the control must too"
        page.wait_for_timeout(500)
        assert "nonlin=sigmoid" in page.url  # the page did not write its old value back

        page.go_forward()
        page.wait_for_function("() => location.search.includes('nonlin=tanh')")
        wait_idle(page)
        assert radio.get_by_role("radio", name="tanh").is_checked()
    finally:
        page.close()
