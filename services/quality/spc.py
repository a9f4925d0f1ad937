"""SPC's pure arithmetic: control chart constants, control limits, and the eight Nelson rules.

Charts (DOMAIN.md): an I-MR chart for single values (subgroup size 1) and an X-bar/R chart for
subgroups of 2 to 10. The constants are the tabulated control chart factors (ASTM STP 15D; Montgomery,
"Introduction to Statistical Quality Control", Appendix VI), used exactly as tabulated:

- d2[n]: expected range of n normal values in units of sigma; within sigma = R-bar / d2.
  An I-MR chart uses d2[2] = 1.128 for moving ranges of two consecutive values.
- A2[n]: X-bar limits are X-double-bar +/- A2 * R-bar.
- D3[n], D4[n]: R (and MR, with n = 2) limits are D3 * R-bar and D4 * R-bar.

Limits of a version come from either
- a baseline (the first `baseline` subgroups, 25 by default): X-bar/R: centre = mean of the subgroup
  means, sigma of the plotted mean = A2 * R-bar / 3; I-MR: centre = mean of the values, sigma =
  MR-bar / d2[2] (so the limits are centre +/- 3 MR-bar / 1.128);
- the plan's target and sigma: centre = target, sigma of the plotted statistic = sigma / sqrt(n), the
  range chart's centre d2[n] * sigma with D3/D4 limits around it.

The Nelson rules are evaluated on the location chart (I or X-bar) against its centre and sigma; the
range chart (MR or R) is checked against its limits (a point beyond them is reported as rule 1 of the
range chart). A rule "holds" at a point when its pattern ends there; it *fires* (one event) only at
the first point of a run in which it holds, i.e. when it holds now and did not hold at the previous
point of the same limits version.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SUBGROUP_SIZES = range(1, 11)  # 1 = individuals (I-MR); 2..10 = X-bar/R

D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078}
A2 = {2: 1.880, 3: 1.023, 4: 0.729, 5: 0.577, 6: 0.483, 7: 0.419, 8: 0.373, 9: 0.337, 10: 0.308}
D3 = {2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.076, 8: 0.136, 9: 0.184, 10: 0.223}
D4 = {2: 3.267, 3: 2.574, 4: 2.282, 5: 2.114, 6: 2.004, 7: 1.924, 8: 1.864, 9: 1.816, 10: 1.777}

RULES = {
    1: "one point beyond 3 sigma",
    2: "nine points in a row on the same side of the centre",
    3: "six points in a row steadily increasing or decreasing",
    4: "fourteen points in a row alternating up and down",
    5: "two of three points in a row beyond 2 sigma on the same side",
    6: "four of five points in a row beyond 1 sigma on the same side",
    7: "fifteen points in a row within 1 sigma",
    8: "eight points in a row beyond 1 sigma with points on both sides",
}
RANGE_RULE_TEXT = "range beyond its control limits"
WINDOW = 15  # the longest pattern (rule 7) spans fifteen points


def range_size(subgroup_size: int) -> int:
    """The n whose constants the range chart uses: moving ranges of two values for individuals."""
    return 2 if subgroup_size == 1 else subgroup_size


def chart_names(subgroup_size: int) -> tuple[str, str]:
    return ("I", "MR") if subgroup_size == 1 else ("XBAR", "R")


@dataclass(frozen=True, slots=True)
class Limits:
    """One version of a chart's control limits."""

    version: int
    source: str            # `baseline` or `plan`
    subgroup_size: int
    centre: float
    sigma: float           # sigma of the plotted statistic (the zone width of the Nelson rules)
    ucl: float
    lcl: float
    range_centre: float
    range_ucl: float
    range_lcl: float
    within_sigma: float    # the process sigma: R-bar / d2 (baseline) or the plan's sigma
    baseline_subgroups: int = 0  # subgroups the baseline used; 0 for plan limits
    target: float | None = None
    plan_sigma: float | None = None


def limits_from_baseline(version: int, subgroup_size: int, means: Sequence[float],
                         ranges: Sequence[float | None]) -> Limits:
    """Limits from baseline subgroups: their means and ranges (for individuals, the moving ranges,
    the first of which is None)."""
    k = len(means)
    if k == 0:
        raise ValueError("a baseline needs at least one subgroup")
    centre = math.fsum(means) / k
    known = [r for r in ranges if r is not None]
    if subgroup_size == 1 and not known:
        raise ValueError("an individuals baseline needs at least two values")
    r_bar = math.fsum(known) / len(known)
    n = range_size(subgroup_size)
    if subgroup_size == 1:
        sigma = r_bar / D2[2]
        half_width = 3 * sigma
    else:
        half_width = A2[n] * r_bar
        sigma = half_width / 3
    return Limits(version=version, source="baseline", subgroup_size=subgroup_size, centre=centre, sigma=sigma,
                  ucl=centre + half_width, lcl=centre - half_width, range_centre=r_bar, range_ucl=D4[n] * r_bar,
                  range_lcl=D3[n] * r_bar, within_sigma=r_bar / D2[n], baseline_subgroups=k)


def limits_from_plan(version: int, subgroup_size: int, target: float, sigma: float) -> Limits:
    """Limits from the plan's target and process sigma."""
    n = range_size(subgroup_size)
    zone = sigma / math.sqrt(subgroup_size)
    r_bar = D2[n] * sigma
    return Limits(version=version, source="plan", subgroup_size=subgroup_size, centre=target, sigma=zone,
                  ucl=target + 3 * zone, lcl=target - 3 * zone, range_centre=r_bar, range_ucl=D4[n] * r_bar,
                  range_lcl=D3[n] * r_bar, within_sigma=sigma, target=target, plan_sigma=sigma)


def rule_mask(rules: Sequence[int]) -> int:
    mask = 0
    for rule in rules:
        mask |= 1 << (rule - 1)
    return mask


def rules_of(mask: int) -> list[int]:
    return [rule for rule in range(1, 9) if mask & (1 << (rule - 1))]


def rules_holding(points: Sequence[float], centre: float, sigma: float) -> int:
    """Bit mask (bit r-1 for rule r) of the Nelson rules whose pattern ends at the last of `points`
    (the most recent points of one limits version, oldest first)."""
    k = len(points)
    if k == 0:
        return 0
    window = points[-WINDOW:]
    if sigma > 0:
        z = [(p - centre) / sigma for p in window]
    else:  # a degenerate chart: any distance from the centre is beyond every zone
        z = [math.copysign(math.inf, p - centre) if p != centre else 0.0 for p in window]
    last = z[-1]
    mask = 1 if (last > 3 or last < -3) else 0
    if k >= 9:
        run = z[-9:]
        if min(run) > 0 or max(run) < 0:
            mask |= 2
    if k >= 6:
        a, b, c, d, e, f = window[-6:]
        if a < b < c < d < e < f or a > b > c > d > e > f:
            mask |= 4
    if k >= 14:
        last14 = window[-14:]
        steps = [y - x for x, y in zip(last14, last14[1:], strict=False)]
        if all(x * y < 0 for x, y in zip(steps, steps[1:], strict=False)):
            mask |= 8
    if k >= 3:
        p, q = z[-3], z[-2]
        if (p > 2) + (q > 2) + (last > 2) >= 2 or (p < -2) + (q < -2) + (last < -2) >= 2:
            mask |= 16
    if k >= 5:
        five = z[-5:]
        if sum(v > 1 for v in five) >= 4 or sum(v < -1 for v in five) >= 4:
            mask |= 32
    if k >= 15 and max(z) < 1 and min(z) > -1:  # z holds exactly the last fifteen points here
        mask |= 64
    if k >= 8:
        eight = z[-8:]
        if min(map(abs, eight)) > 1 and max(eight) > 1 and min(eight) < -1:
            mask |= 128
    return mask


@dataclass(frozen=True, slots=True)
class Tail:
    """What evaluating the next point of a version needs: its recent points and what held at the last one."""

    points: tuple[float, ...] = ()
    holding: int = 0             # rules holding at the last point
    range_holding: bool = False  # the last range was beyond its limits


@dataclass(frozen=True, slots=True)
class Evaluation:
    holding: int        # rules whose pattern ends at this point
    fired: int          # rules that start a run here (one SpcRuleViolated each)
    range_beyond: bool  # the range (or moving range) is beyond its limits
    range_fired: bool   # ... and was not at the previous point
    tail: Tail


def evaluate(limits: Limits, tail: Tail, value: float, range_value: float | None) -> Evaluation:
    """Evaluate one new point of a chart under one limits version."""
    points = (*tail.points, value)[-WINDOW:]
    holding = rules_holding(points, limits.centre, limits.sigma)
    beyond = range_value is not None and (range_value > limits.range_ucl or range_value < limits.range_lcl)
    return Evaluation(holding=holding, fired=holding & ~tail.holding, range_beyond=beyond,
                      range_fired=beyond and not tail.range_holding,
                      tail=Tail(points, holding, beyond))
