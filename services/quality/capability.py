"""Process and machine capability: Cp/Cpk (within sigma), Pp/Ppk (overall sigma), Cm/Cmk (machine study).

Per characteristic and period the projection keeps sufficient statistics that merge exactly in one
pass (Welford's mean and sum of squared deviations, the sum and count of ranges), so an index never
needs the raw values again:

- within sigma  = R-bar / d2[n] (subgroups of n) or MR-bar / d2[2] (individuals; moving ranges of
  consecutive values of the chart);
- overall sigma = the sample standard deviation (n - 1) of all values of the period;
- machine sigma = the sample standard deviation of the machine study window: the first
  `machine_study_values` values of the period (50 by default), consecutive parts of one chart.

Cp = (USL - LSL) / (6 sigma_within); Cpk = min(USL - mean, mean - LSL) / (3 sigma_within); Pp and Ppk
likewise with the overall sigma, Cm and Cmk with the machine sigma and the window's mean. With only
one specification limit, Cp/Pp/Cm are undefined (None) and Cpk/Ppk/Cmk use the one side there is.
An index whose sigma is zero or unknown is None (a KPI with a zero denominator is NULL).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.quality.spc import D2, range_size


@dataclass(slots=True)
class Moments:
    """Count, mean and sum of squared deviations from the mean (Welford), updated one value at a time."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def merge(self, count: int, mean: float, m2: float) -> None:
        """Add a group of values given by its own count, mean and m2 (Chan et al.'s parallel update)."""
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    def stdev(self) -> float | None:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else None


@dataclass(slots=True)
class Stats:
    """Sufficient statistics of one characteristic in one period."""

    subgroup_size: int
    values: Moments = field(default_factory=Moments)
    subgroups: int = 0
    range_sum: float = 0.0
    ranges: int = 0
    machine: Moments = field(default_factory=Moments)

    def add_subgroup(self, values: list[float], range_value: float | None, machine_study_values: int,
                     summary: Moments | None = None) -> None:
        """Add one subgroup; `summary` (its own moments) saves recomputing them for every period it is in."""
        self.subgroups += 1
        if summary is None:
            summary = Moments()
            for value in values:
                summary.add(value)
        if self.values.count == 0:
            self.values = Moments(summary.count, summary.mean, summary.m2)
        else:
            self.values.merge(summary.count, summary.mean, summary.m2)
        if self.machine.count < machine_study_values:
            for value in values[:machine_study_values - self.machine.count]:
                self.machine.add(value)
        if range_value is not None:
            self.range_sum += range_value
            self.ranges += 1

    def within_sigma(self) -> float | None:
        if self.ranges == 0:
            return None
        return (self.range_sum / self.ranges) / D2[range_size(self.subgroup_size)]


@dataclass(frozen=True, slots=True)
class Indices:
    cp: float | None
    cpk: float | None
    pp: float | None
    ppk: float | None
    cm: float | None
    cmk: float | None


def potential(lsl: float | None, usl: float | None, sigma: float | None) -> float | None:
    """(USL - LSL) / (6 sigma)."""
    if lsl is None or usl is None or not sigma:
        return None
    return (usl - lsl) / (6 * sigma)


def critical(lsl: float | None, usl: float | None, mean: float, sigma: float | None) -> float | None:
    """min(USL - mean, mean - LSL) / (3 sigma), over the limits there are."""
    if not sigma or (lsl is None and usl is None):
        return None
    sides = [d for d in ((usl - mean) if usl is not None else None, (mean - lsl) if lsl is not None else None)
             if d is not None]
    return min(sides) / (3 * sigma)


def indices(stats: Stats, lsl: float | None, usl: float | None) -> Indices:
    within = stats.within_sigma()
    overall = stats.values.stdev()
    machine = stats.machine.stdev()
    mean = stats.values.mean
    return Indices(
        cp=potential(lsl, usl, within), cpk=critical(lsl, usl, mean, within) if stats.values.count else None,
        pp=potential(lsl, usl, overall), ppk=critical(lsl, usl, mean, overall) if stats.values.count else None,
        cm=potential(lsl, usl, machine),
        cmk=critical(lsl, usl, stats.machine.mean, machine) if stats.machine.count else None,
    )
