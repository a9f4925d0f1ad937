"""SPC's pure arithmetic: each Nelson rule fires on its pattern and stays silent on its near miss; limits
and capability indices agree with an independent exact computation (fractions, `statistics`)."""
from __future__ import annotations

import math
import random
import statistics
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.quality import capability, spc

CENTRE, SIGMA = 10.0, 0.5


def scaled(zs: list[float]) -> list[float]:
    """Points given in sigmas from the centre."""
    return [CENTRE + z * SIGMA for z in zs]


def rules_at_end(zs: list[float]) -> list[int]:
    return spc.rules_of(spc.rules_holding(scaled(zs), CENTRE, SIGMA))


ALTERNATING = [0.3, -0.3] * 7                      # fourteen points, up and down
ALTERNATING_BROKEN = [0.3, -0.3, 0.3, -0.3, 0.3, -0.3, 0.3, 0.5, -0.3, 0.3, -0.3, 0.3, -0.3, 0.3]

CASES = {
    1: ([0.2, 3.2], [0.2, 2.99]),
    2: ([-0.5] + [0.4] * 9, [-0.5] + [0.4] * 8),
    3: ([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]),
    4: (ALTERNATING, ALTERNATING_BROKEN),
    5: ([0.0, 2.5, 2.3], [2.5, 0.0, -2.5]),
    6: ([1.5, 1.2, 0.0, 1.1, 1.3], [1.5, 1.2, 0.0, 1.1, 0.9]),
    7: ([0.5, 0.4, -0.5, -0.4, 0.3, 0.5, -0.2, -0.6, 0.1, 0.2, -0.3, -0.1, 0.6, 0.4, -0.5],
        [1.2, 0.4, -0.5, -0.4, 0.3, 0.5, -0.2, -0.6, 0.1, 0.2, -0.3, -0.1, 0.6, 0.4, -0.5]),
    8: ([1.5, -1.5, 1.2, 1.4, -1.3, -1.6, 1.8, -1.1], [1.5, 1.5, 1.2, 1.4, 1.3, 1.6, 1.8, 1.1]),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_nelson_rule_fires_on_its_pattern(rule):
    fires, _ = CASES[rule]
    assert rule in rules_at_end(fires)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_nelson_rule_is_silent_on_its_near_miss(rule):
    _, near_miss = CASES[rule]
    assert rule not in rules_at_end(near_miss)


def test_the_near_misses_of_the_counting_rules_are_one_point_short():
    assert 2 not in rules_at_end([0.4] * 8) and 2 in rules_at_end([0.4] * 9)
    assert 3 not in rules_at_end([0.0, 0.1, 0.2, 0.3, 0.4]) and 3 in rules_at_end([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert 3 in rules_at_end([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])  # steadily decreasing counts as well
    assert 4 not in rules_at_end(ALTERNATING[:13])
    assert 7 not in rules_at_end([0.5, -0.5] * 7) and 7 in rules_at_end([0.5, -0.5] * 7 + [0.5])
    assert 8 not in rules_at_end([1.5, -1.5] * 3 + [1.5]) and 8 in rules_at_end([1.5, -1.5] * 4)


def test_a_point_exactly_on_a_boundary_is_not_beyond_it():
    assert 1 not in rules_at_end([3.0])
    assert 5 not in rules_at_end([2.0, 2.0, 2.0])
    assert 2 not in rules_at_end([0.4] * 4 + [0.0] + [0.4] * 4)  # a point on the centre breaks the run


def evaluate_all(zs: list[float]) -> list[list[int]]:
    limits = spc.limits_from_plan(1, 1, CENTRE, SIGMA)
    tail = spc.Tail()
    fired = []
    for value in scaled(zs):
        evaluation = spc.evaluate(limits, tail, value, None)
        tail = evaluation.tail
        fired.append(spc.rules_of(evaluation.fired))
    return fired


def test_a_rule_fires_once_per_run_of_points():
    fired = evaluate_all([0.4] * 12 + [-0.4] + [0.4] * 9)
    assert [i for i, rules in enumerate(fired) if 2 in rules] == [8, 21]


def test_a_rule_fires_again_after_its_run_ended():
    fired = evaluate_all([3.5, 3.5, 0.0, 3.5])
    assert [i for i, rules in enumerate(fired) if 1 in rules] == [0, 3]


def test_the_tail_keeps_only_the_longest_window():
    limits = spc.limits_from_plan(1, 1, CENTRE, SIGMA)
    tail = spc.Tail()
    for value in range(40):
        tail = spc.evaluate(limits, tail, float(value), None).tail
    assert len(tail.points) == spc.WINDOW


def test_the_range_chart_flags_a_range_beyond_its_limits_once_per_run():
    limits = spc.limits_from_plan(1, 5, CENTRE, SIGMA)
    tail = spc.Tail()
    flags = []
    for r in (1.0, 3.0, 3.0, 1.0, 3.0):  # UCL_R = D4 * d2 * sigma = 2.114 * 2.326 * 0.5 = 2.4586
        evaluation = spc.evaluate(limits, tail, CENTRE, r)
        tail = evaluation.tail
        flags.append((evaluation.range_beyond, evaluation.range_fired))
    assert flags == [(False, False), (True, True), (True, False), (False, False), (True, True)]


# -- limits against an exact computation ---------------------------------------------------------------

TABLE = {  # Montgomery, Appendix VI (n: d2, A2, D3, D4)
    2: (1.128, 1.880, 0, 3.267), 3: (1.693, 1.023, 0, 2.574), 4: (2.059, 0.729, 0, 2.282), 5: (2.326, 0.577, 0, 2.114),
    6: (2.534, 0.483, 0, 2.004), 7: (2.704, 0.419, 0.076, 1.924), 8: (2.847, 0.373, 0.136, 1.864),
    9: (2.970, 0.337, 0.184, 1.816), 10: (3.078, 0.308, 0.223, 1.777),
}


def close(actual: float, expected: Fraction | float) -> bool:
    expected = Fraction(expected)
    return abs(Fraction(actual) - expected) <= abs(expected) * Fraction(1, 10**9)


def test_the_constants_are_the_tabulated_ones():
    for n, (d2, a2, d3, d4) in TABLE.items():
        assert (spc.D2[n], spc.A2[n], spc.D3[n], spc.D4[n]) == (d2, a2, d3, d4)


@pytest.mark.parametrize("n", range(2, 11))
def test_xbar_r_limits_from_a_baseline_agree_with_an_exact_computation(n):
    rng = random.Random(n)
    subgroups = [[rng.gauss(25.0, 0.02) for _ in range(n)] for _ in range(25)]
    means = [math.fsum(s) / n for s in subgroups]
    ranges = [max(s) - min(s) for s in subgroups]
    limits = spc.limits_from_baseline(1, n, means, ranges)
    grand = sum(Fraction(x) for s in subgroups for x in s) / (25 * n)
    r_bar = sum(Fraction(r) for r in ranges) / 25
    d2, a2, d3, d4 = (Fraction(v) for v in TABLE[n])
    assert close(limits.centre, grand)
    assert close(limits.ucl, grand + a2 * r_bar) and close(limits.lcl, grand - a2 * r_bar)
    assert close(limits.range_centre, r_bar) and close(limits.range_ucl, d4 * r_bar)
    assert limits.range_lcl == 0 if d3 == 0 else close(limits.range_lcl, d3 * r_bar)
    assert close(limits.within_sigma, r_bar / d2)
    assert close(limits.sigma, a2 * r_bar / 3)


def test_individuals_limits_from_a_baseline_agree_with_an_exact_computation():
    rng = random.Random(7)
    values = [rng.gauss(3.2, 0.1) for _ in range(25)]
    moving = [None] + [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
    limits = spc.limits_from_baseline(1, 1, values, moving)
    mean = sum(map(Fraction, values)) / 25
    mr_bar = sum(Fraction(abs(Fraction(b) - Fraction(a))) for a, b in zip(values, values[1:], strict=False)) / 24
    sigma = mr_bar / Fraction("1.128")
    assert close(limits.centre, mean) and close(limits.sigma, sigma)
    assert close(limits.ucl, mean + 3 * sigma) and close(limits.lcl, mean - 3 * sigma)
    assert close(limits.range_ucl, Fraction("3.267") * mr_bar) and limits.range_lcl == 0


def test_limits_from_the_plan_use_the_standard_error_of_the_mean():
    limits = spc.limits_from_plan(2, 4, 10.0, 0.2)
    assert (limits.centre, limits.sigma, limits.ucl, limits.lcl) == (10.0, 0.1, pytest.approx(10.3), pytest.approx(9.7))
    assert limits.range_centre == pytest.approx(2.059 * 0.2) and limits.range_ucl == pytest.approx(2.282 * 2.059 * 0.2)


# -- capability against an exact computation -----------------------------------------------------------


def stats_of(subgroups: list[list[float]], window: int = 50) -> capability.Stats:
    stats = capability.Stats(len(subgroups[0]))
    last = None
    for s in subgroups:
        if len(s) == 1:
            r = abs(s[0] - last) if last is not None else None
            last = s[0]
        else:
            r = max(s) - min(s)
        stats.add_subgroup(s, r, window)
    return stats


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_cp_cpk_pp_ppk_cm_cmk_agree_with_an_exact_computation(n):
    rng = random.Random(100 + n)
    subgroups = [[rng.gauss(50.02, 0.03) for _ in range(n)] for _ in range(60)]
    lsl, usl = 49.9, 50.1
    found = capability.indices(stats_of(subgroups), lsl, usl)
    values = [x for s in subgroups for x in s]
    mean = statistics.fmean(values)
    overall = statistics.stdev(values)
    if n == 1:
        ranges = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
        within = statistics.fmean(ranges) / 1.128
    else:
        within = statistics.fmean([max(s) - min(s) for s in subgroups]) / spc.D2[n]
    machine = values[:50]
    m_mean, m_sd = statistics.fmean(machine), statistics.stdev(machine)
    expected = {
        "cp": (usl - lsl) / (6 * within), "cpk": min(usl - mean, mean - lsl) / (3 * within),
        "pp": (usl - lsl) / (6 * overall), "ppk": min(usl - mean, mean - lsl) / (3 * overall),
        "cm": (usl - lsl) / (6 * m_sd), "cmk": min(usl - m_mean, m_mean - lsl) / (3 * m_sd),
    }
    for name, value in expected.items():
        assert math.isclose(getattr(found, name), value, rel_tol=1e-9), name


def test_one_sided_specifications_give_only_the_critical_indices():
    stats = stats_of([[1.0, 1.2], [1.1, 1.3], [0.9, 1.0]])
    upper_only = capability.indices(stats, None, 2.0)
    assert upper_only.cp is None and upper_only.pp is None
    mean = statistics.fmean([1.0, 1.2, 1.1, 1.3, 0.9, 1.0])
    assert math.isclose(upper_only.ppk, (2.0 - mean) / (3 * statistics.stdev([1.0, 1.2, 1.1, 1.3, 0.9, 1.0])))


def test_zero_spread_or_no_limits_gives_null_indices():
    constant = capability.indices(stats_of([[5.0, 5.0], [5.0, 5.0]]), 4.0, 6.0)
    assert constant == capability.Indices(None, None, None, None, None, None)
    assert capability.indices(stats_of([[1.0, 2.0]]), None, None).cpk is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=200))
def test_running_moments_agree_with_statistics(values):
    moments = capability.Moments()
    for v in values:
        moments.add(v)
    assert math.isclose(moments.mean, statistics.fmean(values), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(moments.stdev(), statistics.stdev(values), rel_tol=1e-7, abs_tol=1e-7)


def reference_rules(points: list[float], centre: float, sigma: float) -> set[int]:
    """The eight rules written as plainly as DOMAIN.md states them (for comparison only)."""
    z = [(p - centre) / sigma for p in points]
    k, fired = len(z), set()

    def steps(xs):
        return [b - a for a, b in zip(xs, xs[1:], strict=False)]
    if abs(z[-1]) > 3:
        fired.add(1)
    if k >= 9 and (all(v > 0 for v in z[-9:]) or all(v < 0 for v in z[-9:])):
        fired.add(2)
    if k >= 6 and (all(s > 0 for s in steps(points[-6:])) or all(s < 0 for s in steps(points[-6:]))):
        fired.add(3)
    if k >= 14 and all(a * b < 0 for a, b in zip(steps(points[-14:]), steps(points[-14:])[1:], strict=False)):
        fired.add(4)
    if k >= 3 and (sum(v > 2 for v in z[-3:]) >= 2 or sum(v < -2 for v in z[-3:]) >= 2):
        fired.add(5)
    if k >= 5 and (sum(v > 1 for v in z[-5:]) >= 4 or sum(v < -1 for v in z[-5:]) >= 4):
        fired.add(6)
    if k >= 15 and all(abs(v) < 1 for v in z[-15:]):
        fired.add(7)
    if k >= 8 and all(abs(v) > 1 for v in z[-8:]) and any(v > 1 for v in z[-8:]) and any(v < -1 for v in z[-8:]):
        fired.add(8)
    return fired


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([-3.5, -2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.5, 0.2, -0.2, 1.1, -1.1]),
                min_size=1, max_size=40))
def test_the_rules_agree_with_their_plain_statement(zs):
    points = scaled(zs)
    assert set(spc.rules_of(spc.rules_holding(points, CENTRE, SIGMA))) == reference_rules(points, CENTRE, SIGMA)
