"""Verdict words from per-seed measurements: an effect, a 95% interval over seeds, a margin.

Every verdict word a page shows ("supported", "steadier", "wins") comes from
:func:`judge`: a claim "arm A beats arm B by more than ``margin``" is

- **supported** when the whole 95% interval of the effect lies beyond the margin,
- **not supported** when the whole interval lies short of the margin (a tie
  within the margin, or the reverse; ``reversed`` says which),
- **inconclusive** otherwise, and always at one seed (one seed has no interval).

The effect, per seed s (arms paired by seed: same init, same batches):

- ``scale="difference"``: d_s = a_s - b_s;
- ``scale="ratio"``: d_s = log(a_s / b_s) (scale-free: a ratio is compared,
  the interval is taken on the log scale and reported as a factor).

Over n seeds, ``effect = mean(d)`` and the interval is
``effect ± t_{0.975, n-1} · std(d, ddof=1) / sqrt(n)`` (Student's t, paired).
Arms measured on different seeds are compared unpaired (Welch's t interval).
"Higher is better" unless ``higher_is_better=False`` (then the effect is
b - a, or log(b / a)): the effect is always signed so that positive favours A.

Pure functions, deterministic: the same numbers give the same words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import check

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
WORDS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
SCALES = ("difference", "ratio")

# Two-sided 95% critical values of Student's t, by degrees of freedom;
# from any t table, e.g. NIST/SEMATECH e-Handbook of Statistical Methods, 1.3.6.7.2.
T_CRITICAL_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179}
NORMAL_CRITICAL_95 = 1.96  # beyond the table (12 degrees of freedom) the normal is within 1%


def t_critical(degrees_of_freedom: float) -> float:
    """Two-sided 95% Student's t; between table rows the smaller row (the wider interval)."""
    if degrees_of_freedom < 1:
        return math.inf
    row = int(math.floor(degrees_of_freedom))
    return T_CRITICAL_95.get(row, NORMAL_CRITICAL_95)


@dataclass(frozen=True)
class Interval:
    """``mean ± half_width`` over ``seeds`` (half_width inf at one seed)."""

    mean: float
    half_width: float
    seeds: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def paired_interval(differences: Sequence[float]) -> Interval:
    """Paired t interval of per-seed differences: mean ± t·s/sqrt(n). Shape: (seeds,)."""
    d = np.asarray(differences, dtype=float)
    check(d.ndim == 1 and len(d) >= 1, "A verdict needs at least one measurement per arm.")
    n = len(d)
    half_width = math.inf if n < 2 else float(t_critical(n - 1) * d.std(ddof=1) / math.sqrt(n))
    return Interval(float(d.mean()), half_width, n)


def welch_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """Unpaired (Welch) t interval of mean(a) - mean(b); ``seeds`` is the smaller arm's count."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = min(len(a), len(b))
    mean = float(a.mean() - b.mean())
    if n < 2:
        return Interval(mean, math.inf, n)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(mean, 0.0, n)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    return Interval(mean, float(t_critical(dof) * se), n)


@dataclass(frozen=True)
class Verdict:
    """A claim judged over seeds.

    ``effect``, ``low``, ``high`` and ``margin`` are on the display scale (a
    difference times ``display_scale``; a ratio as a factor, e.g. 1.8 for
    "1.8x"). ``word`` is one of :data:`WORDS`; ``rule`` is the sentence a page
    shows. ``reversed``: the interval lies wholly on the other side of zero (B
    beats A beyond the noise).
    """

    claim: str
    word: str
    effect: float
    low: float
    high: float
    margin: float
    seeds: int
    paired: bool
    scale: str
    unit: str
    reversed: bool
    rule: str

    @property
    def supported(self) -> bool:
        return self.word == SUPPORTED

    @property
    def reason(self) -> str:
        """The rule without its leading word, for a sentence that already shows :attr:`label`."""
        head, _, rest = self.rule.partition(": ")
        return rest if head.startswith(self.word) and rest else self.rule

    @property
    def label(self) -> str:
        """The word with its seed count where that is why: "inconclusive at 1 seed"."""
        if self.word == INCONCLUSIVE:
            return f"inconclusive at {self.seeds} seed{'s' if self.seeds != 1 else ''}"
        return self.word


def _format(value: float, scale: str, unit: str, decimals: int, signed: bool = True) -> str:
    if not math.isfinite(value):
        return "∞" if value > 0 else "-∞"
    if scale == "ratio":
        return f"{value:.{decimals}f}×"
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return f"{text} {unit}".rstrip()


def judge(
    claim: str,
    a: Sequence[float],
    b: Sequence[float],
    margin: float,
    *,
    scale: str = "difference",
    higher_is_better: bool = True,
    paired: bool | None = None,
    unit: str = "",
    display_scale: float = 1.0,
    decimals: int = 1,
) -> Verdict:
    """Judge "A beats B by more than ``margin``" from per-seed values of each arm.

    ``a``, ``b``: one value per seed, shape (seeds,), in the same seed order
    when ``paired`` (None: paired when both arms have the same number of seeds).
    ``margin``: on the display scale (a difference times ``display_scale``, e.g.
    0.5 points for accuracies given in 0-1 with ``display_scale=100``; for
    ``scale="ratio"`` a factor >= 1, e.g. 1.25). Non-finite values (a diverged
    run) make the verdict inconclusive, with the reason in the rule.
    """
    check(scale in SCALES, f"scale must be one of {SCALES}.")
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    check(a_values.ndim == 1 and b_values.ndim == 1 and len(a_values) >= 1 and len(b_values) >= 1, "A verdict needs at least one measurement per arm.")
    paired = len(a_values) == len(b_values) if paired is None else paired
    check(not paired or len(a_values) == len(b_values), "Paired arms need one value per seed each.")
    if scale == "ratio":
        check(margin >= 1.0, "A ratio's margin is a factor of at least 1 (e.g. 1.25).")
    else:
        check(margin >= 0.0, "The margin must be zero or more.")
    if not higher_is_better:
        a_values, b_values = b_values, a_values
    seeds = min(len(a_values), len(b_values))
    where = f"{'paired ' if paired else ''}over {seeds} seed{'s' if seeds != 1 else ''}"
    finite = np.all(np.isfinite(a_values)) and np.all(np.isfinite(b_values))
    positive = scale != "ratio" or (np.all(a_values > 0) and np.all(b_values > 0))
    if not finite or not positive:
        reason = "a run diverged (a value is NaN or infinite)" if not finite else "a ratio needs positive values"
        return Verdict(claim, INCONCLUSIVE, math.nan, math.nan, math.nan, margin, seeds, paired, scale, unit, False, f"{INCONCLUSIVE}: {reason}, so {where} no interval can be formed.")
    if scale == "ratio":
        a_values, b_values = np.log(a_values), np.log(b_values)
        threshold = math.log(margin)
    else:
        threshold = margin / display_scale
    interval = paired_interval(a_values - b_values) if paired else welch_interval(a_values, b_values)
    if interval.seeds < 2:
        word = INCONCLUSIVE
    elif interval.low > threshold:
        word = SUPPORTED
    elif interval.high < threshold:
        word = NOT_SUPPORTED
    else:
        word = INCONCLUSIVE
    reversed_ = interval.high < (-threshold if threshold > 0 else 0.0)
    if scale == "ratio":
        effect, low, high = (math.exp(v) if math.isfinite(v) else (math.inf if v > 0 else 0.0) for v in (interval.mean, interval.low, interval.high))
        measure = "geometric-mean ratio"
    else:
        effect, low, high = (v * display_scale for v in (interval.mean, interval.low, interval.high))
        measure = "mean difference"
    shown = lambda v, signed=True: _format(v, scale, unit, decimals, signed)  # noqa: E731
    margin_text = f"the {shown(margin, signed=False)} margin"
    if interval.seeds < 2:
        rule = f"{INCONCLUSIVE} at 1 seed: the {measure} is {shown(effect)}, but one seed gives no interval; more seeds are needed."
    else:
        position = {SUPPORTED: "wholly above", NOT_SUPPORTED: "wholly below", INCONCLUSIVE: "straddling"}[word]
        rule = (
            f"{word}: the {measure} {where} is {shown(effect)}, 95% interval [{shown(low)}, {shown(high)}], "
            f"{position} {margin_text}"
            + (" (the reverse holds beyond the noise)" if reversed_ else "")
            + "."
        )
    return Verdict(claim, word, effect, low, high, margin, seeds, paired, scale, unit, reversed_, rule)


def band_relative(values: np.ndarray, band_width: np.ndarray) -> np.ndarray:
    """``values / band_width`` elementwise: a scale-free measure (e.g. a median's drift in
    units of the unit's own 15th-85th percentile band). A zero-width band gives NaN."""
    values, band_width = np.asarray(values, dtype=float), np.asarray(band_width, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(band_width > 0, values / np.where(band_width > 0, band_width, 1.0), np.nan)
