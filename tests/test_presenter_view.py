"""The sidebar's "Presenter view": the main area zoomed, chart fonts scaled, kept in the URL, per session."""
import json

import altair as alt

from apptest_helpers import open_page
from bnviz import charts
from bnviz.app import PRESENTER_SCALE


def _axis_font_sizes(at) -> set[int]:
    sizes = set()
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        sizes.add(spec.get("config", {}).get("axis", {}).get("labelFontSize"))
    return sizes


def test_presenter_link_enlarges_chart_fonts_and_toggle_restores_them():
    at = open_page("streamlit_app.py", presenter="true", steps="100").run()
    assert not at.exception
    toggle = at.sidebar.toggle(key="app.presenter")
    assert toggle.value is True
    assert _axis_font_sizes(at) == {round(14 * PRESENTER_SCALE)}
    assert any(f"zoom: {PRESENTER_SCALE:.2f}" in html.proto.body for html in at.get("html"))
    toggle.set_value(False).run()
    assert not at.exception
    assert _axis_font_sizes(at) == {14}
    assert "presenter" not in at.query_params  # the normal view needs no URL key
    at.sidebar.toggle(key="app.presenter").set_value(True).run()
    assert at.query_params["presenter"] == "true"  # so the page's link keeps it


def test_normal_view_by_default():
    at = open_page("streamlit_app.py", steps="100").run()
    assert not at.exception
    assert at.sidebar.toggle(key="app.presenter").value is False
    assert _axis_font_sizes(at) == {14}
    assert not any("zoom" in html.proto.body for html in at.get("html"))


def test_chart_theme_reads_the_scale_when_a_chart_is_serialised():
    chart = alt.Chart({"values": [{"x": 1, "y": 2}]}).mark_point().encode(x="x:Q", y="y:Q")
    try:
        charts.set_scale_source(lambda: 2.0)
        assert chart.to_dict()["config"]["axis"]["labelFontSize"] == 28
        assert chart.to_dict()["config"]["title"]["fontSize"] == 34
        assert charts.font_size(13) == 26  # annotations' own sizes follow
    finally:
        charts.set_scale_source(lambda: 1.0)
    assert chart.to_dict()["config"]["axis"]["labelFontSize"] == 14


def test_pages_link_to_the_next_one_in_the_article_order():
    at = open_page("streamlit_app.py", steps="100").run()
    assert not at.exception
    links = [link.proto.label for link in at.get("page_link")]
    assert links == ["Next: Normalization math"]  # home is first: no "Previous"


def test_a_long_title_puts_its_parenthesised_tail_on_a_subtitle_line():
    """Vega cut "Test accuracy during training (first 2,000 test im…" at half width: the tail
    goes to the subtitle; the download's name keeps the whole title."""
    from bnviz.app import _chart_title
    from bnviz.charts import chart_title, curves_chart

    assert chart_title("Training loss") == "Training loss"
    chart = curves_chart([], "test_acc", "Test accuracy during training (first 2,000 test images)")
    title = chart.to_dict()["title"]
    assert (title["text"], title["subtitle"]) == ("Test accuracy during training", "first 2,000 test images")
    assert _chart_title(chart.to_dict(), 0) == "Test accuracy during training (first 2,000 test images)"
