"""ISO 22400-2 time elements of one work unit: the single place that splits its time into elements.

Pure: standard library only, no clock, no I/O. A projection loads one work unit's facts for a window,
calls `compute`, and stores the `Elements`; views compute the KPIs from stored elements, so roll-ups
(hours to days, units to lines) are sums of elements (`Elements.__add__`), never averages of ratios.
All durations are `datetime.timedelta` (exact microseconds), never floats, so the invariants below
hold to the microsecond.

Project choices (DOMAIN.md gives the base; everything here is what this module implements):

Coverage
- `compute` covers [window.start, covered_until) with covered_until = min(window.end, known_until);
  nothing after `known_until` (the latest event time known for the unit) is counted. When
  known_until <= window.start nothing is covered and covered_until precedes the window; it is not
  clamped, so that the covered_until of a sum (the max) equals that of the enclosing window.
- Intervals are half-open [start, end) everywhere; an instant belongs to the interval it starts.

Machine states
- States are RUNNING, IDLE, SETUP, DOWN, BLOCKED, STARVED, PLANNED_STOP, MAINTENANCE, OFFLINE;
  anything else is refused with a ValueError. Changes may come in any order: they are sorted by `at`;
  of changes with the same `at`, the later one in the given list wins. A state holds from its `at`
  until the next change. Reason codes do not change the elements.
- Time with no known state (before the first change) counts as OFFLINE.
- data_gap = covered time (inside or outside POT, locked out or not) that is OFFLINE or unknown.

Planned operation time
- POT = the union of the shifts within the covered time: overlapping shifts are not counted twice.
- A break counts only inside its own shift (the part outside is ignored). With overlapping shifts an
  instant is on break only if no covering shift is working at that instant (break time = POT minus
  the union of each shift minus its own breaks): one crew's break does not stop another crew's plan.
- Inside POT, at every instant, in this order of precedence:
  1. under a maintenance lockout -> PDOT, whatever the state (a lockout without end lasts to the
     end of the covered time);
  2. on break and not RUNNING -> PDOT (a unit running through its break produces: that time is APT);
  3. PLANNED_STOP -> PDOT;
  4. otherwise by state: RUNNING -> APT; SETUP -> ASUT; DOWN, BLOCKED, STARVED, MAINTENANCE
     (unplanned, as no lockout covers it) and OFFLINE or unknown -> ADET; IDLE -> ADOT.
  PBT = POT - PDOT. Invariants, exact: PBT = APT + ASUT + ADET + ADOT; POT = PBT + PDOT;
  AUPT = APT + ASUT.
- Outside POT, covered time is out_of_shift only (no other time element, whatever the state, lockout
  or break); so covered time = POT + out_of_shift.

Orders and personnel
- An order window is OperationStarted to OperationCompleted of the order's operation on this unit
  (end None = still running: to the end of the covered time).
- AOET = measure of the union of order windows within the covered time (in a shift or not);
  concurrent orders are not counted twice.
- AUBT = measure of the union of order windows within PBT (inside POT and not PDOT);
  so AUBT <= AOET and AUBT <= PBT.
- APAT = sum over operators of the union of that operator's attendances within the covered time
  (two operators at once count twice; one operator signed in twice at once counts once);
  attendance without end lasts to the end of the covered time.
- APWT = sum over operators of (their attendance) intersected with (the union of order windows).
- Attendance and order time are counted whether or not they fall in POT: they describe people and
  orders, not the plan of the unit.

Quantities
- Counted by event time within [window.start, covered_until).
- PQ = good + reject; SQ = reject + scrap reported with rework=False; RQ = scrap reported with
  rework=True; GQ = good - all scrap reported. An operator's scrap report moves parts from GQ of the
  period in which it is reported (the period of the report, not of the production), so GQ of a
  period can be negative; it is never clamped, since clamping would break sums over periods.
- ideal_time = sum over production reports of PRU x PQ, PRU being the report's ideal cycle time in
  seconds, taken as the decimal it prints as (0.1 is one tenth) and rounded per report to the
  microsecond, half to even. Reports without a PRU add nothing to ideal_time; their PQ is counted in
  unrated_quantity (so effectiveness is understated, visibly, rather than guessed).

Periods
- Hours and days are the site's local clock hours and local days (IANA zone via zoneinfo; None =
  UTC), returned as UTC instants. A day with a daylight-saving change has 23 or 25 hours; the
  repeated fall-back hour gives two distinct hour windows. Hour windows start where the local clock
  shows a whole hour or where the UTC offset changes; day windows start where the local date
  advances. A Period's label is its local start (e.g. "2026-03-29T03:00+02:00"), or the shift id.
- Shifts arrive as UTC instants and are periods as they are.

KPIs (`ratios`)
- Every KPI of ISO 22400-2 that these elements allow, as floats computed from exact fractions; None
  whenever a denominator is zero (or a factor is None). effectiveness, throughput_rate,
  utilization_efficiency (APT / AUBT: a unit may run without an order) and production_process_ratio
  may exceed 1 where the data says so; the others lie in [0, 1] as long as scrap reported in a period
  does not exceed its good count.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, time, timedelta, tzinfo
from fractions import Fraction
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

STATES = frozenset({"RUNNING", "IDLE", "SETUP", "DOWN", "BLOCKED", "STARVED", "PLANNED_STOP",
                    "MAINTENANCE", "OFFLINE"})
DELAY_STATES = frozenset({"DOWN", "BLOCKED", "STARVED", "MAINTENANCE", "OFFLINE"})
UNKNOWN = "OFFLINE"  # time before the first known state
MICROSECOND = timedelta(microseconds=1)
NOTHING = timedelta(0)

Span = tuple[datetime, datetime]


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _require_order(start: datetime, end: datetime | None, name: str, *, strictly: bool = False) -> None:
    _require_aware(start, f"{name}.start")
    if end is None:
        return
    _require_aware(end, f"{name}.end")
    if end < start or (strictly and end == start):
        raise ValueError(f"{name}.end ({end.isoformat()}) must be after {name}.start ({start.isoformat()})")


def _require_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


# -- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChange:
    at: datetime
    state: str
    reason_code: str | None = None

    def __post_init__(self) -> None:
        _require_aware(self.at, "StateChange.at")
        if self.state not in STATES:
            raise ValueError(f"StateChange.state {self.state!r} is not one of {sorted(STATES)}")


@dataclass(frozen=True, slots=True)
class Shift:
    shift_id: str
    start: datetime
    end: datetime
    breaks: tuple[tuple[datetime, datetime], ...] = ()

    def __post_init__(self) -> None:
        _require_order(self.start, self.end, f"Shift {self.shift_id!r}")
        for break_start, break_end in self.breaks:
            _require_order(break_start, break_end, f"Shift {self.shift_id!r} break")


@dataclass(frozen=True, slots=True)
class Lockout:
    start: datetime
    end: datetime | None = None

    def __post_init__(self) -> None:
        _require_order(self.start, self.end, "Lockout")


@dataclass(frozen=True, slots=True)
class OrderWindow:
    order_id: str
    start: datetime
    end: datetime | None = None

    def __post_init__(self) -> None:
        _require_order(self.start, self.end, f"OrderWindow {self.order_id!r}")


@dataclass(frozen=True, slots=True)
class Attendance:
    operator_id: str
    start: datetime
    end: datetime | None = None

    def __post_init__(self) -> None:
        _require_order(self.start, self.end, f"Attendance {self.operator_id!r}")


@dataclass(frozen=True, slots=True)
class Production:
    at: datetime
    good: int
    reject: int
    ideal_cycle_time_s: float | None = None

    def __post_init__(self) -> None:
        _require_aware(self.at, "Production.at")
        _require_count(self.good, "Production.good")
        _require_count(self.reject, "Production.reject")
        pru = self.ideal_cycle_time_s
        if pru is not None and (isinstance(pru, bool) or not isinstance(pru, int | float)
                                or not math.isfinite(pru) or pru <= 0):
            raise ValueError(f"Production.ideal_cycle_time_s must be a finite number > 0 or None, got {pru!r}")


@dataclass(frozen=True, slots=True)
class Scrap:
    at: datetime
    quantity: int
    rework: bool = False

    def __post_init__(self) -> None:
        _require_aware(self.at, "Scrap.at")
        _require_count(self.quantity, "Scrap.quantity")


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_order(self.start, self.end, "Window", strictly=True)


@dataclass(frozen=True, slots=True)
class Period:
    """An hour, a day or a shift of a work unit, as UTC instants; label = local start or shift id."""

    kind: Literal["hour", "day", "shift"]
    start: datetime
    end: datetime
    label: str


# -- output -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Elements:
    """ISO 22400 elements of one work unit over one window; durations exact, quantities exact."""

    pot: timedelta
    pdot: timedelta
    pbt: timedelta
    apt: timedelta
    asut: timedelta
    adet: timedelta
    adot: timedelta
    aupt: timedelta
    aubt: timedelta
    aoet: timedelta
    apat: timedelta
    apwt: timedelta
    out_of_shift: timedelta
    data_gap: timedelta
    ideal_time: timedelta
    pq: int
    gq: int
    sq: int
    rq: int
    unrated_quantity: int
    covered_until: datetime | None

    @classmethod
    def zero(cls) -> Elements:
        """The neutral element of `+`: nothing counted, nothing covered (covered_until None)."""
        values = {f.name: (0 if f.type == "int" else NOTHING) for f in fields(cls)}
        values["covered_until"] = None
        return cls(**values)

    def __add__(self, other: Elements) -> Elements:
        if not isinstance(other, Elements):
            return NotImplemented
        values = {f.name: getattr(self, f.name) + getattr(other, f.name)
                  for f in fields(self) if f.name != "covered_until"}
        reached = [c for c in (self.covered_until, other.covered_until) if c is not None]
        return Elements(**values, covered_until=max(reached) if reached else None)


# -- interval algebra over sorted, disjoint, non-empty spans -------------------------------------


def _union(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(span for span in spans if span[1] > span[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _intersect(left: Sequence[Span], right: Sequence[Span]) -> list[Span]:
    result: list[Span] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start, end = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if start < end:
            result.append((start, end))
        if left[i][1] <= right[j][1]:
            i += 1
        else:
            j += 1
    return result


def _subtract(left: Sequence[Span], right: Sequence[Span]) -> list[Span]:
    result: list[Span] = []
    j = 0
    for start, end in left:
        cursor = start
        while j < len(right) and right[j][1] <= cursor:
            j += 1
        k = j
        while k < len(right) and right[k][0] < end:
            if right[k][0] > cursor:
                result.append((cursor, right[k][0]))
            cursor = max(cursor, right[k][1])
            k += 1
        if cursor < end:
            result.append((cursor, end))
    return result


def _measure(spans: Iterable[Span]) -> timedelta:
    return sum((end - start for start, end in spans), NOTHING)


def _within(spans: Iterable[Span], covered: Span) -> list[Span]:
    return _intersect(_union(spans), [covered])


# -- the elements ---------------------------------------------------------------------------------


def _state_spans(states: Sequence[StateChange], covered: Span) -> dict[str, list[Span]]:
    """Each state's spans over the covered time; they partition it (unknown time counts as OFFLINE)."""
    start, end = covered
    latest: dict[datetime, str] = {}
    for change in sorted(states, key=lambda c: c.at):  # stable: of equal `at`, the later in the list wins
        latest[change.at] = change.state
    timeline = sorted(latest.items())
    current = UNKNOWN
    changes: list[tuple[datetime, str]] = []
    for at, state in timeline:
        if at <= start:
            current = state
        elif at < end:
            changes.append((at, state))
    spans: dict[str, list[Span]] = defaultdict(list)
    since = start
    for at, state in changes:
        spans[current].append((since, at))
        current, since = state, at
    if since < end:
        spans[current].append((since, end))
    return {state: _union(pieces) for state, pieces in spans.items()}


def ideal_time_of(pru_s: float, quantity: int) -> timedelta:
    microseconds = Fraction(repr(float(pru_s))) * quantity * 1_000_000
    return timedelta(microseconds=round(microseconds))  # round() of a Fraction is half to even


def compute(
    window: Window | Period,
    known_until: datetime,
    states: Sequence[StateChange] = (),
    shifts: Sequence[Shift] = (),
    lockouts: Sequence[Lockout] = (),
    orders: Sequence[OrderWindow] = (),
    attendance: Sequence[Attendance] = (),
    production: Sequence[Production] = (),
    scrap: Sequence[Scrap] = (),
) -> Elements:
    """The ISO 22400 elements of one work unit over [window.start, min(window.end, known_until))."""
    _require_aware(known_until, "known_until")
    covered_until = min(window.end, known_until)
    covered: Span = (window.start, max(window.start, covered_until))
    start, end = covered

    by_state = _state_spans(states, covered)

    def in_state(*names: str) -> list[Span]:
        return _union(span for name in names for span in by_state.get(name, ()))

    planned_operation = _within(((s.start, s.end) for s in shifts), covered)
    working = _within((piece for s in shifts
                       for piece in _subtract([(s.start, s.end)], _union(s.breaks))), covered)
    on_break = _subtract(planned_operation, working)
    locked = _within(((lock.start, lock.end or end) for lock in lockouts), covered)
    running = in_state("RUNNING")
    planned_down = _intersect(planned_operation, _union(
        [*locked, *_subtract(on_break, running), *in_state("PLANNED_STOP")]))
    planned_busy = _subtract(planned_operation, planned_down)

    production_time = _measure(_intersect(planned_busy, running))
    setup_time = _measure(_intersect(planned_busy, in_state("SETUP")))
    order_spans = _within(((o.start, o.end or end) for o in orders), covered)

    attendance_by_operator: dict[str, list[Span]] = defaultdict(list)
    for presence in attendance:
        attendance_by_operator[presence.operator_id].append((presence.start, presence.end or end))
    present = [_within(spans, covered) for spans in attendance_by_operator.values()]

    counted_production = [p for p in production if start <= p.at < end]
    counted_scrap = [s for s in scrap if start <= s.at < end]
    produced = sum(p.good + p.reject for p in counted_production)
    scrapped = sum(s.quantity for s in counted_scrap if not s.rework)
    reworked = sum(s.quantity for s in counted_scrap if s.rework)

    return Elements(
        pot=_measure(planned_operation),
        pdot=_measure(planned_down),
        pbt=_measure(planned_busy),
        apt=production_time,
        asut=setup_time,
        adet=_measure(_intersect(planned_busy, in_state(*DELAY_STATES))),
        adot=_measure(_intersect(planned_busy, in_state("IDLE"))),
        aupt=production_time + setup_time,
        aubt=_measure(_intersect(order_spans, planned_busy)),
        aoet=_measure(order_spans),
        apat=sum((_measure(spans) for spans in present), NOTHING),
        apwt=sum((_measure(_intersect(spans, order_spans)) for spans in present), NOTHING),
        out_of_shift=(end - start) - _measure(planned_operation),
        data_gap=_measure(in_state("OFFLINE")),
        ideal_time=sum((ideal_time_of(p.ideal_cycle_time_s, p.good + p.reject)
                        for p in counted_production if p.ideal_cycle_time_s is not None), NOTHING),
        pq=produced,
        gq=sum(p.good for p in counted_production) - scrapped - reworked,
        sq=sum(p.reject for p in counted_production) + scrapped,
        rq=reworked,
        unrated_quantity=sum(p.good + p.reject for p in counted_production if p.ideal_cycle_time_s is None),
        covered_until=covered_until,
    )


# -- periods --------------------------------------------------------------------------------------


def _zone(tz: str | None) -> tzinfo:
    if tz is None:
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"time zone {tz!r} is not an IANA time zone name") from error


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone)


def _offset_change(lower: datetime, upper: datetime, zone: tzinfo) -> datetime:
    """The first instant in (lower, upper) with another UTC offset than at lower (bisection)."""
    offset = _wall(lower, zone).utcoffset()
    low, high = 0, (upper - lower) // MICROSECOND
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(lower + middle * MICROSECOND, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return lower + high * MICROSECOND


def _starts_an_hour(boundary: datetime, zone: tzinfo) -> bool:
    wall, before = _wall(boundary, zone), _wall(boundary - MICROSECOND, zone)
    on_the_hour = wall.minute == 0 and wall.second == 0 and wall.microsecond == 0
    return on_the_hour or wall.utcoffset() != before.utcoffset()


def _starts_a_day(boundary: datetime, zone: tzinfo) -> bool:
    return _wall(boundary, zone).date() > _wall(boundary - MICROSECOND, zone).date()


def _local_windows(kind: Literal["hour", "day"], start: datetime, end: datetime, tz: str | None) -> list[Period]:
    _require_order(start, end, f"{kind} windows", strictly=False)
    zone = _zone(tz)
    step = timedelta(hours=1) if kind == "hour" else timedelta(days=1)
    starts_window = _starts_an_hour if kind == "hour" else _starts_a_day
    # Candidates: each local whole hour (or midnight) read with both folds, so that a repeated hour
    # yields both instants and a skipped one the instant of the jump; the filter drops the rest.
    first = _wall(start, zone).replace(tzinfo=None) - 2 * step
    last = _wall(end, zone).replace(tzinfo=None) + 2 * step
    wall = first.replace(minute=0, second=0, microsecond=0)
    if kind == "day":
        wall = datetime.combine(first.date(), time())
    candidates: set[datetime] = set()
    while wall <= last:
        for fold in (0, 1):
            candidates.add(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC))
        wall += step
    ordered = sorted(candidates)
    candidates.update(_offset_change(lower, upper, zone) for lower, upper in zip(ordered, ordered[1:], strict=False)
                      if _wall(lower, zone).utcoffset() != _wall(upper - MICROSECOND, zone).utcoffset())
    boundaries = sorted(b for b in candidates if starts_window(b, zone))
    return [Period(kind, lower, upper, _wall(lower, zone).isoformat(timespec="minutes"))
            for lower, upper in zip(boundaries, boundaries[1:], strict=False)
            if lower < end and upper > start]


@lru_cache(maxsize=4096)
def _windows_of_utc_days(kind: Literal["hour", "day"], first_day: datetime, last_day: datetime,
                         tz: str | None) -> tuple[Period, ...]:
    return tuple(_local_windows(kind, first_day, last_day, tz))


def _windows(kind: Literal["hour", "day"], start: datetime, end: datetime, tz: str | None) -> list[Period]:
    """The windows are a fixed partition of the timeline, so those overlapping [start, end) are those of
    the enclosing whole UTC days that overlap it; the days' windows are computed once and kept."""
    _require_order(start, end, f"{kind} windows", strictly=False)
    first_day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last_day = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return [p for p in _windows_of_utc_days(kind, first_day, last_day, tz) if p.start < end and p.end > start]


def hour_windows(start: datetime, end: datetime, tz: str | None) -> list[Period]:
    """The site's local clock hours that overlap [start, end), as UTC instants."""
    return _windows("hour", start, end, tz)


def day_windows(start: datetime, end: datetime, tz: str | None) -> list[Period]:
    """The site's local days that overlap [start, end), as UTC instants (23 or 25 h on DST days)."""
    return _windows("day", start, end, tz)


def calendar(preferred: Iterable[Shift]) -> list[Shift]:
    """A work unit's shifts without overlaps, in time order. `preferred` lists the candidate shifts
    best first (the caller puts shifts scheduled on the unit itself before those inherited from its
    line, area and site); a shift that overlaps one already kept is dropped, since a unit works in one
    shift at a time and two overlapping calendars would count its time twice."""
    kept: list[Shift] = []
    for shift in preferred:
        if all(shift.end <= k.start or shift.start >= k.end for k in kept):
            kept.append(shift)
    return sorted(kept, key=lambda s: (s.start, s.shift_id))


def shift_periods(shifts: Iterable[Shift]) -> list[Period]:
    return sorted((Period("shift", s.start.astimezone(UTC), s.end.astimezone(UTC), s.shift_id) for s in shifts),
                  key=lambda p: (p.start, p.end, p.label))


def periods_touched(at: datetime, tz: str | None, shifts: Iterable[Shift]) -> list[Period]:
    """The hour, the day and the shifts (start <= at < end) that an event at `at` changes."""
    _require_aware(at, "at")
    instant = (at, at + MICROSECOND)
    return [*hour_windows(*instant, tz), *day_windows(*instant, tz),
            *(p for p in shift_periods(shifts) if p.start <= at < p.end)]


# -- KPIs -----------------------------------------------------------------------------------------


def _ratio(numerator: int | timedelta, denominator: int | timedelta) -> Fraction | None:
    if isinstance(numerator, timedelta):
        numerator = numerator // MICROSECOND
    if isinstance(denominator, timedelta):
        denominator = denominator // MICROSECOND
    return None if denominator == 0 else Fraction(numerator, denominator)


def _product(*factors: Fraction | None) -> Fraction | None:
    if any(f is None for f in factors):
        return None
    return math.prod(factors, start=Fraction(1))  # type: ignore[arg-type]


def ratios(e: Elements, capacity: int | None = None) -> dict[str, float | None]:
    """ISO 22400-2 KPIs that the elements allow; None where a denominator is zero.

    `capacity` is the equipment production capacity (EPC, pieces) of the same period.
    """
    if capacity is not None:
        _require_count(capacity, "capacity")
    availability = _ratio(e.apt, e.pbt)
    effectiveness = _ratio(e.ideal_time, e.apt)
    quality_ratio = _ratio(e.gq, e.pq)
    exact = {
        "availability": availability,
        "effectiveness": effectiveness,
        "quality_ratio": quality_ratio,
        "oee": _product(availability, effectiveness, quality_ratio),
        "nee": _product(_ratio(e.aupt, e.pbt), effectiveness, quality_ratio),
        "setup_ratio": _ratio(e.asut, e.aupt),
        "technical_efficiency": _ratio(e.apt, e.apt + e.adet),
        "allocation_efficiency": _ratio(e.aubt, e.pbt),
        "utilization_efficiency": _ratio(e.apt, e.aubt),
        "throughput_rate": _ratio(e.pq * 1_000_000, e.aoet // MICROSECOND),  # pieces per second
        "production_process_ratio": _ratio(e.apt, e.aoet),
        "allocation_ratio": _ratio(e.aubt, e.aoet),
        "scrap_ratio": _ratio(e.sq, e.pq),
        "rework_ratio": _ratio(e.rq, e.pq),
        "worker_efficiency": _ratio(e.apwt, e.apat),
        "equipment_load_ratio": _ratio(e.pq, capacity or 0),
    }
    return {name: None if value is None else float(value) for name, value in exact.items()}
