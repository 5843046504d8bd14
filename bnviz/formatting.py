"""How numbers read on screen: one percent format for the whole app, text and charts alike.

The rule: a share (an accuracy, a fraction of units or predictions) is shown as a percent
with :data:`PERCENT_DECIMALS` decimal, i.e. to a tenth of a point, and a difference of two
shares in points with the same decimals. A tenth of a point is 10 images of a 10,000-image
test set, finer than what changes between two seeds of one model here (0.1-0.5 points), so a
second decimal would only show noise; one decimal everywhere also keeps a metric, its
sentence and the chart beside it saying the same number. Chart axes that show a share are
in percent too (:data:`PERCENT_AXIS_FORMAT`, whole percents on tick labels), with
tooltips at the text's precision (:data:`PERCENT_FORMAT`, d3-format).
"""
from __future__ import annotations

import math

PERCENT_DECIMALS = 1
PERCENT_FORMAT = f".{PERCENT_DECIMALS}%"  # d3-format, for chart tooltips and text marks
PERCENT_AXIS_FORMAT = "~%"  # d3-format for tick labels: 80%, 85%, 87.5% (no trailing zeros)


def format_percent(value: float | None) -> str:
    """``0.8342`` -> ``"83.4%"``; None, NaN or inf (a diverged run) -> ``"n/a"``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.{PERCENT_DECIMALS}f}%"


def format_points(difference: float | None) -> str:
    """A difference of two shares in percentage points, signed: ``0.0123`` -> ``"+1.2 points"``."""
    if difference is None or not math.isfinite(difference):
        return "n/a"
    return f"{100 * difference:+.{PERCENT_DECIMALS}f} points"
