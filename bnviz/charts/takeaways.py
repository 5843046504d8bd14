"""A chart's one-sentence takeaway, read from the chart's own data: never typed in.

:func:`chart_takeaway` reads what a chart draws (its Vega-Lite spec: data, mark, encodings)
and states it in neutral words, so the sentence and the chart cannot disagree:

- curves over training steps: each series' value at its last finite step, highest first
  ("At the last training step shown (600): BN 95.1%, no BN 83.4%");
- other quantitative x (a sweep over batch sizes, learning rates, n): each series from its
  first to its last x ("BN: 62.0% at batch size 2 to 95.3% at 256");
- bars and dots over categories: the highest and the lowest, with their values;
- heat maps: the colour's range and where its extremes sit.

A series with no finite value (a diverged run: NaN/inf reach the chart as null) or whose
values stop before the others' is named as such. Verdict words ("wins", "steadier",
"supported") never appear here: they come from :mod:`bnviz.verdicts`; a takeaway only
says which number is larger. Pages with a sharper sentence (a verdict over seeds, a
count of NaN outputs) compute it next to the chart's builder and pass it instead.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

from ..formatting import format_percent

# The mark that carries a chart's message, most telling first; text marks and rules are
# annotations (a reference line, a label) and are read only when nothing else is there.
MARK_ORDER = ("line", "point", "circle", "boxplot", "bar", "tick", "square", "rect", "area", "errorbar", "rule")
MAX_SERIES_LISTED = 4  # more than this: the highest and the lowest only
MAX_FACETS_LISTED = 3
FILTER_EQUALS = re.compile(r"""^\(datum\.(\w+) === (?:'([^']*)'|"([^"]*)"|(-?[\d.]+))\)$""")


def chart_takeaway(chart) -> str | None:
    """The takeaway sentence of a chart (an Altair chart or its spec, :func:`bnviz.charts.chart_spec`),
    or None when it draws nothing this reads (e.g. text only)."""
    if isinstance(chart, dict):
        spec = chart
    else:
        try:
            spec = chart.to_dict()
        except Exception:  # noqa: BLE001 - a chart Altair cannot serialise is shown without a sentence, never a crash
            return None
    datasets = spec.get("datasets", {})
    # the telling mark first; among equals the view with most series (a layer filtered to one
    # series, e.g. the truth line under the estimates, says less than the one with the rest)
    views = sorted(_views(spec, datasets, None, ()), key=lambda view: (_mark_rank(view), -_series_count(view)))
    for view in views:
        sentence = _describe(view)
        if sentence:
            return sentence
    return None


# ------------------------------------------------------------------ reading the spec
def _mark_rank(view: dict) -> int:
    """The mark's place in :data:`MARK_ORDER`; a dashed line in one fixed colour that no field
    colours (a y = x diagonal, a reference density) after every data mark."""
    mark = view["mark"]
    kind = mark.get("type") if isinstance(mark, dict) else mark
    rank = MARK_ORDER.index(kind) if kind in MARK_ORDER else len(MARK_ORDER)
    reference = kind == "line" and isinstance(mark, dict) and "strokeDash" in mark and _field(view["encoding"], "color") is None
    return rank + (len(MARK_ORDER) if reference else 0)


def _series_count(view: dict) -> int:
    color = _field(view["encoding"], "color")
    return len({str(row.get(color["field"])) for row in view["rows"]}) if color else 1


def _rows(data, datasets) -> list[dict] | None:
    if isinstance(data, dict):
        if "name" in data:
            return datasets.get(data["name"])
        if "values" in data:
            return data["values"]
    return None


def _views(spec: dict, datasets: dict, rows, facets: tuple[str, ...], titles: dict | None = None) -> Iterable[dict]:
    """Each unit view (mark + encoding) with its rows and the facet fields above it. ``titles``:
    axis titles a layer inherits from its siblings (a line over a band titles only the band)."""
    rows = _rows(spec.get("data"), datasets) or rows
    titles = titles or {}
    transforms = spec.get("transform", [])
    if "facet" in spec and "spec" in spec:
        facet = spec["facet"]
        fields = tuple(f["field"] for f in ([facet] if "field" in facet else facet.values()) if isinstance(f, dict) and "field" in f)
        yield from _views(_with_transforms(spec["spec"], transforms), datasets, rows, facets + fields, titles)
        return
    if "layer" in spec:
        shared = {**titles, **_titles(spec.get("encoding", {}))}
        for child in spec["layer"]:
            for channel, shown in _titles(child.get("encoding", {})).items():
                shared[channel] = {**shown, **shared.get(channel, {})}
        for child in spec["layer"]:
            yield from _views(_with_transforms(child, transforms), datasets, rows, facets, shared)
        return
    for key in ("hconcat", "vconcat", "concat"):
        if key in spec:
            for child in spec[key]:
                yield from _views(_with_transforms(child, transforms), datasets, rows, facets)
            return
    encoding = {channel: ({**titles[channel], **value} if isinstance(value, dict) and channel in titles else value)
                for channel, value in spec.get("encoding", {}).items()}
    for channel in ("column", "row", "facet"):
        if isinstance(encoding.get(channel), dict) and "field" in encoding[channel]:
            facets = facets + (encoding.pop(channel)["field"],)
    if rows is not None and "mark" in spec and not any(set(t) - {"filter"} for t in transforms):
        # a view that folds or calculates fields draws values its rows do not hold: not read
        yield {"rows": _apply_filters(rows, transforms), "mark": spec["mark"], "encoding": encoding, "facets": facets}


def _titles(encoding: dict) -> dict:
    """Per channel, the title and axis (its number format) a layer shows, for siblings without them."""
    inherited = {}
    for channel, value in encoding.items():
        if isinstance(value, dict):
            shown = {key: value[key] for key in ("title", "axis") if isinstance(value.get(key), (str, dict))}
            if shown:
                inherited[channel] = shown
    return inherited


def _with_transforms(child: dict, transforms: list) -> dict:
    return {**child, "transform": transforms + child.get("transform", [])} if transforms else child


def _apply_filters(rows: list[dict], transforms: list) -> list[dict]:
    """The rows after simple ``datum.field == value`` filters (and their negation). A view
    whose transforms this does not replay (a compound filter, a calculation) is read whole:
    in these charts such a filter only splits one frame's series among layers."""
    for transform in transforms:
        expression = transform.get("filter") if set(transform) == {"filter"} else None
        negate = isinstance(expression, str) and expression.startswith("!(") and expression.endswith(")")
        match = FILTER_EQUALS.match(expression[1:] if negate else expression) if isinstance(expression, str) else None
        if not match:
            return rows
        field, text1, text2, number = match.groups()
        wanted: Any = text1 if text1 is not None else text2 if text2 is not None else float(number)
        rows = [row for row in rows if (row.get(field) == wanted) != negate]
    return rows


def _field(encoding: dict, channel: str) -> dict | None:
    spec = encoding.get(channel)
    # a mean over rows (seeds) is read as such: :func:`_along_x` averages the rows at one x
    if isinstance(spec, dict) and isinstance(spec.get("field"), str) and spec.get("aggregate", "mean") == "mean":
        return spec
    return None


def _holds(rows: list[dict], *specs) -> bool:
    """Whether the rows carry every field the view reads (a field made by a transform they do not)."""
    return all(spec is None or any(spec["field"] in row for row in rows[:50]) for spec in specs)


def _title(channel_spec: dict) -> str:
    axis = channel_spec.get("axis") or {}
    title = channel_spec.get("title", axis.get("title") if isinstance(axis, dict) else None)
    return str(title) if isinstance(title, str) and title else str(channel_spec["field"])


def _number_format(channel_spec: dict):
    axis = channel_spec.get("axis") or {}
    fmt = (axis.get("format") if isinstance(axis, dict) else None) or channel_spec.get("format") or ""
    return format_percent if "%" in str(fmt) else _plain


def _plain(value: float) -> str:
    """3 significant digits; a whole number below a million as it is (a batch size of 1,000)."""
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}"
    return f"{value:.2e}"


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _capital(text: str) -> str:
    """The first letter upper-case when it is a Latin one (β, ‖G‖ and x̂ stay as they are)."""
    return text[0].upper() + text[1:] if text and text[0].isascii() else text


def _label(row: dict, fields: Iterable[str], titles: dict | None = None) -> str:
    """A row's category: its fields' values, a number with its field's title ("batch size 2")."""
    titles = titles or {}
    return ", ".join(f"{titles[field]} {row.get(field)}" if field in titles and isinstance(row.get(field), (int, float)) else str(row.get(field)) for field in fields)


def _groups(rows: list[dict], fields: tuple[str, ...], titles: dict | None = None) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_label(row, fields, titles), []).append(row)
    return groups


# ------------------------------------------------------------------ the sentences
def _describe(view: dict) -> str | None:
    encoding, rows, facets = view["encoding"], view["rows"], view["facets"]
    if not rows:
        return None
    x, y = _field(encoding, "x"), _field(encoding, "y")
    color = _field(encoding, "color")
    quantitative = lambda spec: spec is not None and spec.get("type") == "quantitative"  # noqa: E731
    categorical = lambda spec: spec is not None and spec.get("type") in ("nominal", "ordinal")  # noqa: E731
    series = tuple(spec["field"] for spec in (color,) if categorical(spec) and spec["field"] not in facets)
    mark = view["mark"].get("type") if isinstance(view["mark"], dict) else view["mark"]
    if not _holds(rows, x, y, color):
        return None
    if mark == "rect" and quantitative(color) and x is not None and y is not None:
        return _heatmap(rows, color, x, y)
    if mark in ("rect", "bar") and quantitative(x) and quantitative(y) and isinstance(encoding.get("x2"), dict):
        return _by_facet(rows, facets, lambda part: _histogram(part, x, encoding["x2"], y, series))
    if mark == "boxplot" and quantitative(y):
        categories = tuple(spec["field"] for spec in (x,) if spec is not None and spec["field"] not in facets) + series
        return _by_facet(rows, facets, lambda part: _spreads(part, y, categories, {x["field"]: _title(x)} if x else {}))
    if quantitative(y) and quantitative(x) and mark not in ("rect", "bar"):
        y2 = _field(encoding, "y2")
        if mark == "area" and y2 is not None and _holds(rows, y2):
            return _by_facet(rows, facets, lambda part: _band_end(part, x, y, y2, series))
        return _by_facet(rows, facets, lambda part: _along_x(part, x, y, series, rows, color))
    for measure, other in ((y, x), (x, y)):
        if quantitative(measure) and (other is None or categorical(other) or mark in ("bar", "rect")):
            categories = tuple(spec["field"] for spec in (other,) if spec is not None and spec["field"] not in facets) + series
            named = {other["field"]: _short_title(other)} if other is not None else {}
            return _by_facet(rows, facets, lambda part: _extremes(part, measure, categories, named))
    return None


def _by_facet(rows: list[dict], facets: tuple[str, ...], describe) -> str | None:
    """``describe(rows) -> (head, body)``; one sentence: the head once, then each panel's body."""
    if not facets:
        head, body = describe(rows) or (None, None)
        return f"{head}: {body}." if head and body else None
    groups = _groups(rows, facets)
    parts, head = [], None
    for name, part in list(groups.items())[:MAX_FACETS_LISTED]:
        described = describe(part)
        if described and described[1]:
            head = head or described[0]
            parts.append(f"{name}: {described[1]}")
    if not parts:
        return None
    more = len(groups) - MAX_FACETS_LISTED
    return f"{head}, by panel. " + "; ".join(parts) + (f"; and {more} more panel{'s' if more > 1 else ''}" if more > 0 else "") + "."


def _along_x(rows: list[dict], x: dict, y: dict, series: tuple[str, ...], all_rows: list[dict], color: dict | None = None) -> tuple[str, str] | None:
    """Curves: each series' last finite value (over steps) or its first-to-last change (a sweep)."""
    x_field, y_field, x_title, y_title = x["field"], y["field"], _title(x), _title(y)
    shown = _number_format(y)
    over_steps = x_field == "step" or x_title.startswith("training step")
    last_x = max((v for row in all_rows if (v := _finite(row.get(x_field))) is not None), default=None)
    ends, broken = [], []
    named = {field: _short_title(color) for field in series} if color is not None and "title" in color else {}
    for name, group in _groups(rows, series, named).items():
        points = _mean_at_each_x(group, x_field, y_field)
        finite = [(px, py) for px, py in points if py is not None]
        label = name or y_title
        if not finite:
            broken.append(f"{label} has no finite value (NaN or infinite: the run diverged)")
            continue
        if points[-1][1] is None or (last_x is not None and over_steps and finite[-1][0] < last_x):
            broken.append(f"{label} stops at {x_title} {finite[-1][0]:g} (NaN or infinite after, or not trained further)")
        ends.append((label, finite[0], finite[-1]))
    if not ends and not broken:
        return None
    if over_steps:
        head = f"{_capital(y_title)} at the end ({x_title} {last_x:g})"
        ends.sort(key=lambda item: -item[2][1])
        listed = ends if len(ends) <= MAX_SERIES_LISTED else [ends[0], ends[-1]]
        body = ", ".join(f"{label} {shown(end[1])}" if series else shown(end[1]) for label, _start, end in listed)
        if len(ends) > MAX_SERIES_LISTED:
            body += f" (the highest and the lowest of {len(ends)})"
    else:
        head = f"{_capital(y_title)} from the smallest to the largest {x_title}"
        listed = ends if len(ends) <= MAX_SERIES_LISTED else sorted(ends, key=lambda item: -item[2][1])[:: max(1, len(ends) - 1)]
        body = "; ".join(f"{label + ' ' if series else ''}{shown(start[1])} at {_plain(start[0])} to {shown(end[1])} at {_plain(end[0])}" for label, start, end in listed)
    return head, "; ".join(part for part in [body, *broken] if part)


def _short_title(channel_spec: dict) -> str:
    """An axis title without its parenthesis, to name a category: "batch size B (the image + ...)" -> "batch size B"."""
    return _title(channel_spec).split(" (")[0]


def _mean_at_each_x(rows: list[dict], x_field: str, y_field: str) -> list[tuple[float, float | None]]:
    """(x, mean of the finite y at that x, None when none is finite), sorted by x: seeds drawn
    as dots at one x read as their mean, as the line over them."""
    by_x: dict[float, list] = {}
    for row in rows:
        if (px := _finite(row.get(x_field))) is not None:
            by_x.setdefault(px, []).append(_finite(row.get(y_field)))
    return [(px, (sum(f) / len(f)) if (f := [v for v in values if v is not None]) else None) for px, values in sorted(by_x.items())]


def _band_end(rows: list[dict], x: dict, y: dict, y2: dict, series: tuple[str, ...]) -> tuple[str, str] | None:
    """A band (y to y2) over x: where each series' band sits at its last x."""
    parts = []
    for name, group in _groups(rows, series).items():
        finite = [(px, lo, hi) for row in group if (px := _finite(row.get(x["field"]))) is not None
                  and (lo := _finite(row.get(y["field"]))) is not None and (hi := _finite(row.get(y2["field"]))) is not None]
        if finite:
            px, lo, hi = max(finite)
            parts.append(f"{name + ' ' if name else ''}{_plain(lo)} to {_plain(hi)} at {_plain(px)}")
        else:
            parts.append(f"{name + ' ' if name else ''}no finite value (NaN or infinite)")
    return (f"{_capital(_title(y))}, band ({y['field']} to {y2['field']}) at the end", "; ".join(parts)) if parts else None


def _extremes(rows: list[dict], measure: dict, categories: tuple[str, ...], titles: dict | None = None) -> tuple[str, str] | None:
    """Bars or dots over categories: the highest and lowest (a category's rows averaged)."""
    field, title, shown = measure["field"], _title(measure), _number_format(measure)
    values, broken = [], []
    for name, group in _groups(rows, categories, titles).items():
        finite = [v for v in (_finite(row.get(field)) for row in group) if v is not None]
        if finite:
            values.append((name, sum(finite) / len(finite)))
        elif name:
            broken.append(name)
    if not values:
        return (_capital(title), "NaN or infinite everywhere") if broken else None
    values.sort(key=lambda item: -item[1])
    if len(values) == 1:
        body = f"{values[0][0] + ' ' if values[0][0] else ''}{shown(values[0][1])}"
    else:
        body = f"highest {values[0][0]} ({shown(values[0][1])}), lowest {values[-1][0]} ({shown(values[-1][1])})"
    if broken:
        body += f"; no value for {', '.join(broken)}"
    return _capital(title), body


def _histogram(rows: list[dict], x: dict, x2: dict, y: dict, series: tuple[str, ...]) -> tuple[str, str] | None:
    """Bins (x to x2, height y): where each series' tallest bin sits and the span of the values."""
    parts = []
    for name, group in _groups(rows, series).items():
        bins = [(lo, hi, h) for row in group if (lo := _finite(row.get(x["field"]))) is not None and (hi := _finite(row.get(x2["field"]))) is not None and (h := _finite(row.get(y["field"]))) is not None]
        filled = [b for b in bins if b[2] > 0]
        if not filled:
            continue
        peak = max(filled, key=lambda b: b[2])
        span = f"{_plain(min(b[0] for b in filled))} to {_plain(max(b[1] for b in filled))}"
        parts.append(f"{name + ': ' if name else ''}values from {span}, most between {_plain(peak[0])} and {_plain(peak[1])}")
    return (_capital(_title(x)), "; ".join(parts)) if parts else None


def _spreads(rows: list[dict], measure: dict, categories: tuple[str, ...], titles: dict) -> tuple[str, str] | None:
    """Box plots: the range (max − min) of each category's values, widest and narrowest."""
    field, shown = measure["field"], _number_format(measure)
    ranges = []
    for name, group in _groups(rows, categories, {k: v.split(" (")[0] for k, v in titles.items()}).items():
        finite = [v for v in (_finite(row.get(field)) for row in group) if v is not None]
        if finite:
            ranges.append((name, min(finite), max(finite)))
    if not ranges:
        return None
    ranges.sort(key=lambda r: r[1] - r[2])
    widest, narrowest = ranges[0], ranges[-1]
    text = lambda r: f"{r[0]} ({shown(r[1])} to {shown(r[2])})"  # noqa: E731
    return f"Range (max − min) of {_title(measure)}", f"widest at {text(widest)}, narrowest at {text(narrowest)}"


def _heatmap(rows: list[dict], color: dict, x: dict, y: dict) -> str | None:
    field, shown = color["field"], _number_format(color)
    cells = [(v, row) for row in rows if (v := _finite(row.get(field))) is not None]
    if not cells:
        return None
    (low, low_row), (high, high_row) = min(cells, key=lambda c: c[0]), max(cells, key=lambda c: c[0])
    where = lambda row: f"{_title(x)} {row.get(x['field'])}, {_title(y)} {row.get(y['field'])}"  # noqa: E731
    return f"{_capital(_title(color))} ranges from {shown(low)} ({where(low_row)}) to {shown(high)} ({where(high_row)})."
