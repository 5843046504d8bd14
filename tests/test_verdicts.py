"""The verdict rule (bnviz/verdicts.py) on constructed cases: win, tie, reversal, one seed, scales."""
import math

import numpy as np
import pytest

from bnviz.errors import BnvizError
from bnviz.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, T_CRITICAL_95, band_relative, judge, paired_interval, welch_interval


def test_paired_interval_is_the_t_interval_by_hand():
    d = [0.01, 0.02, 0.03]
    interval = paired_interval(d)
    assert interval.mean == pytest.approx(0.02)
    assert interval.half_width == pytest.approx(T_CRITICAL_95[2] * 0.01 / math.sqrt(3))
    assert paired_interval([0.5]).half_width == math.inf


def test_clear_win_is_supported_and_the_rule_says_why():
    bn = [0.95, 0.96, 0.95, 0.96, 0.955]
    plain = [0.92, 0.93, 0.925, 0.93, 0.92]
    v = judge("BN is more accurate", bn, plain, margin=0.5, unit="points", display_scale=100)
    assert v.word == SUPPORTED and v.paired and v.seeds == 5 and not v.reversed
    assert v.effect == pytest.approx(3.0, abs=0.01) and v.low > 0.5
    assert v.rule.startswith("supported: the mean difference paired over 5 seeds is +3.0 points, 95% interval [")
    assert "above the 0.5 points margin" in v.rule


def test_tie_within_the_margin_is_not_supported():
    a = [0.950, 0.951, 0.949, 0.950]
    b = [0.949, 0.950, 0.950, 0.950]
    v = judge("A beats B", a, b, margin=0.5, unit="points", display_scale=100)
    assert v.word == NOT_SUPPORTED and not v.reversed and v.high < 0.5


def test_a_gap_as_large_as_the_noise_is_inconclusive():
    v = judge("A beats B", [0.95, 0.90, 0.97], [0.92, 0.93, 0.92], margin=0.5, unit="points", display_scale=100)
    assert v.word == INCONCLUSIVE and v.label == "inconclusive at 3 seeds" and "straddling" in v.rule


def test_reversal_is_not_supported_and_marked_reversed():
    v = judge("A beats B", [0.90, 0.91, 0.90], [0.95, 0.96, 0.955], margin=0.5, unit="points", display_scale=100)
    assert v.word == NOT_SUPPORTED and v.reversed and "reverse" in v.rule
    # the same numbers read the other way round are a clear win for B
    assert judge("B beats A", [0.95, 0.96, 0.955], [0.90, 0.91, 0.90], margin=0.5, display_scale=100).word == SUPPORTED


def test_one_seed_is_inconclusive_whatever_the_gap():
    v = judge("A beats B", [0.99], [0.10], margin=0.5, unit="points", display_scale=100)
    assert v.word == INCONCLUSIVE and v.label == "inconclusive at 1 seed" and v.seeds == 1
    assert v.rule.startswith("inconclusive at 1 seed")


def test_lower_is_better_flips_the_sign():
    drift_bn, drift_plain = [0.1, 0.12, 0.11], [0.5, 0.55, 0.52]
    assert judge("BN drifts less", drift_bn, drift_plain, margin=0.05, higher_is_better=False).word == SUPPORTED
    assert judge("BN drifts less", drift_plain, drift_bn, margin=0.05, higher_is_better=False).reversed


def test_scale_mismatch_a_ratio_is_scale_free_where_a_difference_is_not():
    # arm A lives on a 10x larger scale: its raw drift is larger, its drift per band width the same
    drift_a, band_a = np.array([3.0, 3.3, 2.9]), np.array([30.0, 33.0, 29.0])
    drift_b, band_b = np.array([0.30, 0.33, 0.29]), np.array([3.0, 3.3, 2.9])
    raw = judge("B is steadier", drift_b, drift_a, margin=0.05, higher_is_better=False)
    assert raw.word == SUPPORTED  # what the raw difference would (wrongly) say
    relative = judge("B is steadier", band_relative(drift_b, band_b), band_relative(drift_a, band_a), margin=0.05, higher_is_better=False)
    assert relative.word == NOT_SUPPORTED and relative.effect == pytest.approx(0.0, abs=1e-12)
    ratio = judge("B is steadier", drift_b / band_b, drift_a / band_a, margin=1.25, scale="ratio", higher_is_better=False)
    assert ratio.word == NOT_SUPPORTED and ratio.effect == pytest.approx(1.0) and "×" in ratio.rule
    # multiplying one arm by 1,000 leaves a ratio verdict's interval where it was, relative to the arms' ratio
    a, b = np.array([2.0, 2.2, 2.1]), np.array([1.0, 1.05, 1.0])
    assert judge("a", a * 1000, b * 1000, margin=1.25, scale="ratio").low == pytest.approx(judge("a", a, b, margin=1.25, scale="ratio").low)


def test_ratio_win_and_its_margin():
    v = judge("A is larger", [4.0, 4.4, 3.8], [1.0, 1.1, 0.95], margin=1.25, scale="ratio")
    assert v.word == SUPPORTED and v.effect == pytest.approx(4.0, rel=0.01)
    assert judge("A is larger", [1.1, 1.12, 1.09], [1.0, 1.0, 1.0], margin=1.25, scale="ratio").word == NOT_SUPPORTED


def test_unpaired_arms_use_welch_and_say_so():
    v = judge("A beats B", [0.95, 0.96, 0.955, 0.95], [0.90, 0.91, 0.905], margin=0.5, display_scale=100)
    assert not v.paired and v.seeds == 3 and v.word == SUPPORTED and "paired" not in v.rule
    interval = welch_interval([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert interval.mean == pytest.approx(-1.0) and interval.half_width > 0


def test_a_diverged_run_makes_the_verdict_inconclusive():
    v = judge("A beats B", [0.9, float("nan"), 0.9], [0.8, 0.8, 0.8], margin=0.5, display_scale=100)
    assert v.word == INCONCLUSIVE and "diverged" in v.rule


def test_the_same_numbers_give_the_same_words_and_bad_input_is_refused():
    args = ("A beats B", [0.93, 0.94, 0.95], [0.92, 0.92, 0.92])
    assert judge(*args, margin=0.5, display_scale=100) == judge(*args, margin=0.5, display_scale=100)
    with pytest.raises(BnvizError):
        judge("x", [1.0, 2.0], [1.0], margin=0.1, paired=True)
    with pytest.raises(BnvizError):
        judge("x", [1.0], [1.0], margin=0.5, scale="ratio")
    with pytest.raises(BnvizError):
        judge("x", [], [], margin=0.1)
