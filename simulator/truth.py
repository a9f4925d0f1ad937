"""The simulator's ground truth: ISO 22400 time elements, quantities and the material balance,
derived from the simulated timeline alone (no service code), for comparison with what the services
compute.

The rules are the project's (docs/analyst-views.md, "The project's rules"), re-derived here by a
sweep over elementary time segments rather than by interval algebra:
- covered time of a period = [start, min(end, clock)), the clock being the unit's latest state change
  or count; before the first state a unit counts as OFFLINE; of state changes at one instant the
  last one wins;
- inside a shift (POT), in order of precedence: locked out -> PDOT; on break (no covering shift
  working) and not RUNNING -> PDOT; PLANNED_STOP -> PDOT; else RUNNING -> APT, SETUP -> ASUT, IDLE
  -> ADOT, anything else -> ADET; outside every shift -> out of shift;
- AOET = time in an order window (any order), AUBT = that inside PBT; APAT = per operator the time
  signed in, summed; APWT = that while an order runs;
- PQ = good + reject, SQ = reject + scrap, RQ = rework, GQ = good - scrap - rework, counted by the
  event time of the report; ideal time = sum per report of PRU x PQ rounded to the microsecond
  (half to even, PRU read as the decimal it prints as).
All durations are integers of microseconds, so sums are exact.
"""
from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from simulator.engine import US_PER_S, Facts, Simulation, at, micros

TIME_ELEMENTS = ("pot", "pdot", "pbt", "apt", "asut", "adet", "adot", "aupt", "aubt", "aoet", "apat", "apwt",
                 "out_of_shift", "data_gap", "ideal")
QUANTITIES = ("pq", "gq", "sq", "rq")


@dataclass(frozen=True)
class Elements:
    """One work unit's elements over one period; durations in microseconds."""

    equipment_id: str
    period: str
    period_start: datetime
    period_end: datetime
    label: str
    pot: int
    pdot: int
    pbt: int
    apt: int
    asut: int
    adet: int
    adot: int
    aupt: int
    aubt: int
    aoet: int
    apat: int
    apwt: int
    out_of_shift: int
    data_gap: int
    ideal: int
    pq: int
    gq: int
    sq: int
    rq: int

    def seconds(self, element: str) -> Fraction:
        return Fraction(getattr(self, element), US_PER_S)

    @property
    def availability(self) -> Fraction | None:
        return Fraction(self.apt, self.pbt) if self.pbt else None

    @property
    def effectiveness(self) -> Fraction | None:
        return Fraction(self.ideal, self.apt) if self.apt else None

    @property
    def quality_ratio(self) -> Fraction | None:
        return Fraction(self.gq, self.pq) if self.pq else None

    @property
    def oee(self) -> Fraction | None:
        factors = (self.availability, self.effectiveness, self.quality_ratio)
        return None if any(f is None for f in factors) else factors[0] * factors[1] * factors[2]  # type: ignore[operator]

    def as_dict(self) -> dict:
        return asdict(self)


def ideal_micros(pru_s: float, quantity: int) -> int:
    return round(Fraction(repr(float(pru_s))) * quantity * US_PER_S)  # round() of a Fraction: half to even


def _covers(spans: list[tuple[int, int]], t: int) -> bool:
    return any(s <= t < e for s, e in spans)


def unit_elements(facts: Facts, equipment_id: str, period: str, start: int, end: int, label: str) -> Elements:
    changes = facts.states.get(equipment_id, [])
    reports = facts.production.get(equipment_id, [])
    clock = max([t for t, _, _ in changes] + [t for t, _, _, _ in reports], default=start)
    covered_end = max(start, min(end, clock))
    # the state at each instant: the last change at or before it (of one instant, the last listed wins)
    latest: dict[int, str] = {}
    for t, state, _ in sorted(changes, key=lambda c: c[0]):
        latest[t] = state
    times = sorted(latest)
    shifts = [(s, e, breaks) for _, s, e, breaks in facts.shifts]
    lockouts = facts.lockouts.get(equipment_id, [])
    orders = [(s, e if e is not None else covered_end) for _, s, e in facts.orders.get(equipment_id, [])]
    operators: dict[str, list[tuple[int, int]]] = {}
    for operator, s, e in facts.attendance.get(equipment_id, []):
        operators.setdefault(operator, []).append((s, e))
    cuts = {start, covered_end, *times}
    for s, e, breaks in shifts:
        cuts.update((s, e, *(x for b in breaks for x in b)))
    for spans in (lockouts, orders, *operators.values()):
        cuts.update(x for span in spans for x in span)
    points = sorted(c for c in cuts if start <= c <= covered_end)
    totals = dict.fromkeys(TIME_ELEMENTS, 0)
    for a, b in zip(points, points[1:], strict=False):
        length = b - a
        i = bisect.bisect_right(times, a) - 1
        state = latest[times[i]] if i >= 0 else "OFFLINE"
        covering = [(s, e, breaks) for s, e, breaks in shifts if s <= a < e]
        in_order = _covers(orders, a)
        present = sum(1 for spans in operators.values() if _covers(spans, a))
        totals["aoet"] += length if in_order else 0
        totals["apat"] += length * present
        totals["apwt"] += length * present if in_order else 0
        totals["data_gap"] += length if state == "OFFLINE" else 0
        if not covering:
            totals["out_of_shift"] += length
            continue
        totals["pot"] += length
        on_break = all(_covers(list(breaks), a) for _, _, breaks in covering)
        if _covers(lockouts, a) or (on_break and state != "RUNNING") or state == "PLANNED_STOP":
            totals["pdot"] += length
            continue
        totals["pbt"] += length
        totals["aubt"] += length if in_order else 0
        element = {"RUNNING": "apt", "SETUP": "asut", "IDLE": "adot"}.get(state, "adet")
        totals[element] += length
    totals["aupt"] = totals["apt"] + totals["asut"]
    counted = [r for r in reports if start <= r[0] < covered_end]
    scrap = [s for s in facts.scrap.get(equipment_id, []) if start <= s[0] < covered_end]
    scrapped = sum(q for _, q, rework in scrap if not rework)
    reworked = sum(q for _, q, rework in scrap if rework)
    totals["ideal"] = sum(ideal_micros(pru, good + reject) for _, good, reject, pru in counted)
    return Elements(
        equipment_id=equipment_id, period=period, period_start=at(start), period_end=at(end), label=label,
        **totals, pq=sum(g + r for _, g, r, _ in counted), gq=sum(g for _, g, _, _ in counted) - scrapped - reworked,
        sq=sum(r for _, _, r, _ in counted) + scrapped, rq=reworked)


def local_hours(facts: Facts, start: int, end: int) -> list[tuple[int, int, str]]:
    """The site's local clock hours overlapping [start, end): (start, end, label)."""
    zone = ZoneInfo(facts.time_zone)
    hour = at(start).astimezone(zone).replace(minute=0, second=0, microsecond=0)
    hours = []
    while micros(hour.astimezone(UTC)) < end:
        following = (hour.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
        hours.append((micros(hour.astimezone(UTC)), micros(following.astimezone(UTC)),
                      hour.isoformat(timespec="minutes")))
        hour = following
    return hours


def shift_truth(sim: Simulation) -> list[Elements]:
    """Elements per work unit and shift."""
    facts = sim.facts
    return [unit_elements(facts, eq, "shift", s, e, shift_id)
            for shift_id, s, e, _ in facts.shifts for eq in sorted(facts.states)]


def hour_truth(sim: Simulation) -> list[Elements]:
    """Elements per work unit and local hour, over the hours of the shifts."""
    facts = sim.facts
    first, last = facts.shifts[0][1], facts.shifts[-1][2]
    return [unit_elements(facts, eq, "hour", s, e, label)
            for s, e, label in local_hours(facts, first, last) for eq in sorted(facts.states)]


def line_oee(sim: Simulation, elements: list[Elements]) -> dict[str, Fraction | None]:
    """OEE of each line: from the sums of its units' elements (never an average of ratios)."""
    result: dict[str, Fraction | None] = {}
    for line, units in sim.facts.lines.items():
        mine = [e for e in elements if e.equipment_id in units]
        apt, pbt = sum(e.apt for e in mine), sum(e.pbt for e in mine)
        ideal, gq, pq = sum(e.ideal for e in mine), sum(e.gq for e in mine), sum(e.pq for e in mine)
        result[line] = (Fraction(apt, pbt) * Fraction(ideal, apt) * Fraction(gq, pq)) if apt and pbt and pq else None
    return result


def material_balance(sim: Simulation) -> dict[tuple[str, str], float]:
    """On-hand per (material, location) after the shift; locations with nothing left are left out."""
    return {key: round(value, 6) for key, value in sorted(sim.facts.stock.items()) if abs(value) > 1e-6}


def summary(sim: Simulation) -> dict:
    """The headline figures of the shift, for printing next to the report."""
    shifts = shift_truth(sim)
    failures = [f for units in sim.facts.failures.values() for f in units]
    return {
        "units": {e.equipment_id: {"availability": e.availability, "effectiveness": e.effectiveness,
                                   "quality_ratio": e.quality_ratio, "oee": e.oee, "pq": e.pq, "gq": e.gq}
                  for e in shifts},
        "lines": line_oee(sim, shifts),
        "failures": len(failures),
        "inspections": len(sim.facts.inspections),
        "out_of_spec_inspections": sum(1 for i in sim.facts.inspections if i["outside"]),
        "on_hand": material_balance(sim),
    }
