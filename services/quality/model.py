"""Quality's pure core: how each event changes what a batch holds, and which events follow.

No I/O, no clock: time comes from the events alone, so a replay decides exactly what the live run did.
The projection loads what a batch needs into a `BatchState` (plans, order progress, charts, lots,
capability statistics), folds the events through `handlers.py`, and writes what changed.

Ids of derived events are functions of their causes (plan, characteristic, order, point number,
limits version, rule, lot, the causing event's id), so a replay derives the same ids.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.quality import spc
from services.quality.capability import Moments, Stats
from services.quality.events import (
    Characteristic,
    ControlLimitsChanged,
    Event,
    InspectionDue,
    InspectionPlanDefined,
    InspectionRecorded,
    LotDispositioned,
    LotHeld,
    LotReleased,
    LotScrapped,
    LotSentToRework,
    NonconformanceClosed,
    NonconformanceOpened,
    OrderStarted,
    ProductionReported,
    QualityInputRefused,
    ScrapReported,
    SpcRuleViolated,
)

SERVICE = "quality"
DEFAULT_BASELINE = 25
DEFAULT_MACHINE_STUDY_VALUES = 50
EVERY_N_PARTS, PER_LOT, ORDER_START = "every_n_parts", "per_lot", "order_start"
PERIODS = ("day", "month", "all")
ALL_TIME = datetime(1970, 1, 1, tzinfo=UTC)
DISPOSITIONS = ("RELEASE", "SCRAP", "REWORK")


def period_starts(occurred_at: datetime) -> tuple[tuple[str, datetime], ...]:
    """The capability periods an instant falls in: its UTC day, its UTC month, and all time."""
    t = occurred_at.astimezone(UTC)
    day = datetime(t.year, t.month, t.day, tzinfo=UTC)
    return (("day", day), ("month", day.replace(day=1)), ("all", ALL_TIME))


@dataclass(slots=True)
class Plan:
    plan_id: str
    product_id: str
    operation: str
    occurred_at: datetime
    characteristics: dict[str, Characteristic]


@dataclass(frozen=True, slots=True)
class Subgroup:
    """One plotted point: a sample's values, their mean and range (for individuals: the moving range)."""

    seq: int
    event_id: str
    occurred_at: datetime
    values: tuple[float, ...]
    mean: float
    range: float | None
    equipment_id: str | None = None
    order_id: str | None = None
    lot_id: str | None = None


@dataclass(slots=True)
class Chart:
    plan_id: str
    characteristic_id: str
    subgroup_size: int
    points: int = 0
    limits: spc.Limits | None = None
    versions: int = 0                       # the highest limits version given so far
    tail: spc.Tail = field(default_factory=spc.Tail)
    last_value: float | None = None         # for the moving range of individuals
    history: list[Subgroup] | None = None   # every point, loaded when this batch may change the limits


@dataclass(slots=True)
class Progress:
    """Parts produced so far by one operation of one order, and the lots they went to."""

    order_id: str
    operation: str
    parts: int = 0
    lots: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Lot:
    lot_id: str
    status: str = "NEW"                     # NEW, HELD, RELEASED, SCRAPPED, REWORK
    open_ncs: list[str] = field(default_factory=list)
    holds: int = 0                          # holds so far; the current hold's number when HELD
    reworked: bool = False                  # inspections after a rework are not first pass


@dataclass(frozen=True, slots=True)
class PointRow:
    plan_id: str
    characteristic_id: str
    point: int
    version: int
    subgroup: Subgroup
    limits: spc.Limits | None
    holding: int = 0
    fired: int = 0
    range_beyond: bool = False


@dataclass(frozen=True, slots=True)
class InspectionRow:
    event: InspectionRecorded
    product_id: str | None
    kind: str
    mean: float | None
    range: float | None
    values_outside: int
    inspected: int
    good: int
    first_pass: bool
    nonconformance_id: str | None
    point: int | None = None                # the chart point the values made


@dataclass(frozen=True, slots=True)
class ProductionRow:
    event_id: str
    equipment_id: str
    order_id: str | None
    product_id: str | None
    occurred_at: datetime
    produced: int
    scrap: int
    rework: int


@dataclass(frozen=True, slots=True)
class HoldChange:
    lot_id: str
    hold_no: int
    at: datetime
    nonconformance_id: str | None = None   # the one that opened the hold
    equipment_id: str | None = None
    order_id: str | None = None
    outcome: str | None = None              # RELEASE, SCRAP or REWORK for the end of a hold
    caused_by: str | None = None


@dataclass(slots=True)
class BatchState:
    """What one batch folds into: the state it loaded and the facts and changes it produced."""

    plans: dict[str, Plan | None] = field(default_factory=dict)
    plans_by_product: dict[str, set[str]] = field(default_factory=dict)
    progress: dict[tuple[str, str], Progress | None] = field(default_factory=dict)
    charts: dict[tuple[str, str], Chart | None] = field(default_factory=dict)
    lots: dict[str, Lot | None] = field(default_factory=dict)
    stats: dict[tuple[str, str, str, datetime], Stats | None] = field(default_factory=dict)
    baseline: int = DEFAULT_BASELINE
    machine_study_values: int = DEFAULT_MACHINE_STUDY_VALUES
    # what changed
    changed_plans: set[str] = field(default_factory=set)
    changed_progress: set[tuple[str, str]] = field(default_factory=set)
    changed_charts: set[tuple[str, str]] = field(default_factory=set)
    changed_lots: set[str] = field(default_factory=set)
    changed_stats: set[tuple[str, str, str, datetime]] = field(default_factory=set)
    orders: dict[str, str] = field(default_factory=dict)                 # order -> product
    subgroups: list[tuple[str, str, Subgroup]] = field(default_factory=list)
    points: list[PointRow] = field(default_factory=list)
    limits: list[tuple[str, str, spc.Limits, datetime, str]] = field(default_factory=list)  # + occurred_at, caused_by
    inspections: list[InspectionRow] = field(default_factory=list)
    dues: list[InspectionDue] = field(default_factory=list)
    production: list[ProductionRow] = field(default_factory=list)
    opened: list[NonconformanceOpened] = field(default_factory=list)
    closed: list[NonconformanceClosed] = field(default_factory=list)
    holds_opened: list[HoldChange] = field(default_factory=list)
    holds_ended: list[HoldChange] = field(default_factory=list)
    refused: list[QualityInputRefused] = field(default_factory=list)


def _envelope(cause: Event) -> dict:
    return {"occurred_at": cause.occurred_at, "recorded_at": cause.recorded_at, "source": SERVICE,
            "correlation_id": cause.correlation_id or cause.event_id}


def refuse(batch: BatchState, event: Event, subject_id: str, reason: str) -> list[Event]:
    refusal = QualityInputRefused(event_id=f"{event.event_id}:refused", subject_id=subject_id,
                                  refused_type=type(event).__name__, reason=reason, caused_by=event.event_id,
                                  **_envelope(event))
    batch.refused.append(refusal)
    return [refusal]


# -- inspection plans ----------------------------------------------------------------------------------


def on_plan_defined(batch: BatchState, event: InspectionPlanDefined) -> list[Event]:
    current = batch.plans.get(event.plan_id)
    if current is not None and event.occurred_at < current.occurred_at:
        return []  # an older definition than the one known: the latest by event time wins
    ids = [c.characteristic_id for c in event.characteristics]
    if len(set(ids)) != len(ids):
        return refuse(batch, event, event.plan_id, f"characteristics of plan {event.plan_id} must have unique ids")
    plan = Plan(event.plan_id, event.product_id, event.operation, event.occurred_at,
                {c.characteristic_id: c for c in event.characteristics})
    if current is not None and current.product_id != plan.product_id:
        batch.plans_by_product.get(current.product_id, set()).discard(plan.plan_id)
    batch.plans[plan.plan_id] = plan
    batch.plans_by_product.setdefault(plan.product_id, set()).add(plan.plan_id)
    batch.changed_plans.add(plan.plan_id)
    derived: list[Event] = []
    for c in event.characteristics:
        chart = batch.charts.get((plan.plan_id, c.characteristic_id))
        if chart is not None:
            derived.extend(_limits_after_plan_change(batch, chart, c, event))
    for key in batch.stats:  # capability indices follow the new specification limits
        if key[0] == plan.plan_id and batch.stats[key] is not None:
            batch.changed_stats.add(key)
    return derived


def _plan_limits_wanted(c: Characteristic | None) -> bool:
    return c is not None and c.target is not None and c.sigma is not None and c.sigma > 0


def _limits_after_plan_change(batch: BatchState, chart: Chart, c: Characteristic, cause: Event) -> list[Event]:
    current = chart.limits
    if _plan_limits_wanted(c):
        if current is not None and current.source == "plan" and (current.target, current.plan_sigma) == (c.target, c.sigma):
            return []
        limits = spc.limits_from_plan(chart.versions + 1, chart.subgroup_size, c.target, c.sigma)  # type: ignore[arg-type]
        return _new_limits(batch, chart, limits, cause)
    if current is None or current.source != "plan":
        return []
    history = _history(chart)
    if len(history) >= batch.baseline:
        return _new_limits(batch, chart, _baseline_limits(batch, chart), cause)
    chart.limits = None  # back to collecting a baseline
    chart.tail = spc.Tail()
    batch.changed_charts.add((chart.plan_id, chart.characteristic_id))
    return []


def _history(chart: Chart) -> list[Subgroup]:
    if chart.history is None:
        raise RuntimeError(f"chart {chart.plan_id}/{chart.characteristic_id}: its history was not loaded")
    return chart.history


def _baseline_limits(batch: BatchState, chart: Chart) -> spc.Limits:
    base = _history(chart)[:batch.baseline]
    ranges = [s.range for s in base]
    if chart.subgroup_size == 1 and ranges:
        ranges[0] = None  # the first baseline value's moving range reaches before the baseline
    return spc.limits_from_baseline(chart.versions + 1, chart.subgroup_size, [s.mean for s in base], ranges)


def _new_limits(batch: BatchState, chart: Chart, limits: spc.Limits, cause: Event) -> list[Event]:
    """A new limits version: every point so far is evaluated again under it, as rows of the new version."""
    key = (chart.plan_id, chart.characteristic_id)
    chart.limits = limits
    chart.versions = limits.version
    chart.tail = spc.Tail()
    batch.changed_charts.add(key)
    batch.limits.append((chart.plan_id, chart.characteristic_id, limits, cause.occurred_at, cause.event_id))
    derived: list[Event] = [ControlLimitsChanged(
        event_id=f"{chart.plan_id}:{chart.characteristic_id}:limits:v{limits.version}", plan_id=chart.plan_id,
        characteristic_id=chart.characteristic_id, version=limits.version, limits_source=limits.source,
        subgroup_size=chart.subgroup_size, centre=limits.centre, sigma=limits.sigma, ucl=limits.ucl, lcl=limits.lcl,
        range_centre=limits.range_centre, range_ucl=limits.range_ucl, range_lcl=limits.range_lcl,
        within_sigma=limits.within_sigma, baseline_subgroups=limits.baseline_subgroups, caused_by=cause.event_id,
        **_envelope(cause))]
    for subgroup in _history(chart):
        derived.extend(_plot(batch, chart, subgroup, cause))
    return derived


def _plot(batch: BatchState, chart: Chart, subgroup: Subgroup, cause: Event) -> list[Event]:
    """Evaluate one point under the chart's current limits: a row of spc_points and the rules that fired."""
    limits = chart.limits
    if limits is None:
        batch.points.append(PointRow(chart.plan_id, chart.characteristic_id, subgroup.seq, 0, subgroup, None))
        return []
    evaluation = spc.evaluate(limits, chart.tail, subgroup.mean, subgroup.range)
    chart.tail = evaluation.tail
    batch.points.append(PointRow(chart.plan_id, chart.characteristic_id, subgroup.seq, limits.version, subgroup, limits,
                                 evaluation.holding, evaluation.fired, evaluation.range_beyond))
    if not evaluation.fired and not evaluation.range_fired:
        return []
    location, dispersion = spc.chart_names(chart.subgroup_size)
    fired = [(location, rule, spc.RULES[rule], subgroup.mean, limits.centre, limits.sigma)
             for rule in spc.rules_of(evaluation.fired)]
    if evaluation.range_fired:
        fired.append((dispersion, 1, spc.RANGE_RULE_TEXT, subgroup.range, limits.range_centre,
                      (limits.range_ucl - limits.range_centre) / 3))
    envelope = {"occurred_at": subgroup.occurred_at, "recorded_at": cause.recorded_at, "source": SERVICE,
                "correlation_id": cause.correlation_id or cause.event_id}
    return [SpcRuleViolated(
        event_id=f"{chart.plan_id}:{chart.characteristic_id}:v{limits.version}:p{subgroup.seq}:{name}{rule}",
        plan_id=chart.plan_id, characteristic_id=chart.characteristic_id, chart=name, rule=rule, rule_text=text,
        limits_version=limits.version, point=subgroup.seq, value=value, centre=centre, sigma=sigma,
        equipment_id=subgroup.equipment_id, order_id=subgroup.order_id, lot_id=subgroup.lot_id,
        caused_by=subgroup.event_id, **envelope) for name, rule, text, value, centre, sigma in fired]


# -- production and sampling ---------------------------------------------------------------------------


def _due(plan: Plan, c: Characteristic, cause: Event, order_id: str, reason: str, suffix: str, parts: int,
         lot_id: str | None, equipment_id: str | None) -> InspectionDue:
    return InspectionDue(
        event_id=f"{plan.plan_id}:{c.characteristic_id}:{order_id}:{suffix}", plan_id=plan.plan_id,
        characteristic_id=c.characteristic_id, product_id=plan.product_id, operation=plan.operation, order_id=order_id,
        lot_id=lot_id, equipment_id=equipment_id, reason=reason, parts_produced=parts, sample_size=c.sample_size,
        caused_by=cause.event_id, **_envelope(cause))


def _plans_of(batch: BatchState, product_id: str) -> list[Plan]:
    plans = (batch.plans.get(p) for p in sorted(batch.plans_by_product.get(product_id, ())))
    return [p for p in plans if p is not None and p.product_id == product_id]


def on_order_started(batch: BatchState, event: OrderStarted) -> list[Event]:
    batch.orders[event.order_id] = event.product_id
    dues = [_due(plan, c, event, event.order_id, ORDER_START, "start", 0, None, event.equipment_id)
            for plan in _plans_of(batch, event.product_id) for c in plan.characteristics.values()
            if c.sampling == ORDER_START]
    batch.dues.extend(dues)
    return list(dues)


def on_production_reported(batch: BatchState, event: ProductionReported) -> list[Event]:
    batch.orders[event.order_id] = event.product_id
    batch.production.append(ProductionRow(event.event_id, event.equipment_id, event.order_id, event.product_id,
                                          event.occurred_at, event.good + event.scrap, event.scrap, 0))
    key = (event.order_id, event.operation)
    progress = batch.progress.get(key) or Progress(event.order_id, event.operation)
    batch.progress[key] = progress
    batch.changed_progress.add(key)
    before, after = progress.parts, progress.parts + event.good + event.scrap
    new_lot = event.lot_id not in progress.lots
    dues: list[InspectionDue] = []
    for plan in _plans_of(batch, event.product_id):
        if plan.operation != event.operation:
            continue
        for c in plan.characteristics.values():
            rule = c.sampling or EVERY_N_PARTS
            if rule == EVERY_N_PARTS:
                n = max(c.every_n_parts, 1)
                dues.extend(_due(plan, c, event, event.order_id, EVERY_N_PARTS, f"{event.operation}:n{k * n}", k * n,
                                 event.lot_id, event.equipment_id) for k in range(before // n + 1, after // n + 1))
            elif rule == PER_LOT and new_lot:
                dues.append(_due(plan, c, event, event.order_id, PER_LOT, f"{event.operation}:lot:{event.lot_id}",
                                 after, event.lot_id, event.equipment_id))
    progress.parts = after
    progress.lots.add(event.lot_id)
    batch.dues.extend(dues)
    return list(dues)


def on_scrap_reported(batch: BatchState, event: ScrapReported) -> list[Event]:
    if event.quantity < 0:
        return refuse(batch, event, event.equipment_id, "ScrapReported.quantity must not be negative")
    batch.production.append(ProductionRow(
        event.event_id, event.equipment_id, event.order_id, None, event.occurred_at, 0,
        0 if event.rework else event.quantity, event.quantity if event.rework else 0))
    return []


# -- inspections ---------------------------------------------------------------------------------------


def _problem(event: InspectionRecorded, c: Characteristic | None, chart: Chart | None) -> str | None:
    if (event.values is None) == (event.passed is None):
        return "exactly one of InspectionRecorded.values and InspectionRecorded.passed must be set"
    if event.values is not None:
        n = len(event.values)
        if n == 0:
            return "InspectionRecorded.values must hold at least one value"
        if n > max(spc.SUBGROUP_SIZES):
            return f"InspectionRecorded.values has {n} values; SPC subgroups hold 1 to 10"
        if not all(math.isfinite(v) for v in event.values):
            return "InspectionRecorded.values must be finite numbers"
        if c is not None and c.kind == "attribute":
            return f"characteristic {event.characteristic_id} is an attribute: set passed, not values"
        if chart is not None and chart.subgroup_size != n:
            return (f"characteristic {event.characteristic_id} is charted in subgroups of {chart.subgroup_size}; "
                    f"got {n} values")
    elif c is not None and c.kind == "variable":
        return f"characteristic {event.characteristic_id} is a variable: set values, not passed"
    return None


def on_inspection_recorded(batch: BatchState, event: InspectionRecorded) -> list[Event]:
    plan = batch.plans.get(event.plan_id)
    c = plan.characteristics.get(event.characteristic_id) if plan is not None else None
    key = (event.plan_id, event.characteristic_id)
    chart = batch.charts.get(key)
    problem = _problem(event, c, chart)
    if problem is not None:
        return refuse(batch, event, event.characteristic_id, problem)
    lot = batch.lots.get(event.lot_id) if event.lot_id is not None else None
    first_pass = lot is None or not lot.reworked
    derived: list[Event] = []
    if event.values is not None:
        values = tuple(float(v) for v in event.values)
        lsl, usl = (c.lsl, c.usl) if c is not None else (None, None)
        outside = sum(1 for v in values if (lsl is not None and v < lsl) or (usl is not None and v > usl))
        inspected, good = len(values), len(values) - outside
        failed = outside > 0
        reason = f"{outside} of {len(values)} values outside the specification [{lsl}, {usl}]"
    else:
        values, outside = (), 0
        inspected = max(c.sample_size, 1) if c is not None else 1
        good = inspected if event.passed else 0
        failed = not event.passed
        reason = f"attribute check of {event.characteristic_id} failed"
    nonconformance_id = f"NC-{event.event_id}" if failed else None
    mean = rng = point = None
    if values:
        if chart is None:
            chart = batch.charts[key] = Chart(event.plan_id, event.characteristic_id, len(values), history=[])
            if _plan_limits_wanted(c):
                limits = spc.limits_from_plan(1, len(values), c.target, c.sigma)  # type: ignore[union-attr,arg-type]
                derived.extend(_new_limits(batch, chart, limits, event))
        subgroup = _add_point(batch, event, chart, values)
        mean, rng, point = subgroup.mean, subgroup.range, subgroup.seq
        derived.extend(_plot(batch, chart, subgroup, event))
        if chart.limits is None and chart.history is not None and len(chart.history) >= batch.baseline \
                and not _plan_limits_wanted(c):
            derived.extend(_new_limits(batch, chart, _baseline_limits(batch, chart), event))
    batch.inspections.append(InspectionRow(event, plan.product_id if plan is not None else None,
                                           "variable" if values else "attribute", mean, rng, outside, inspected, good,
                                           first_pass, nonconformance_id, point))
    if nonconformance_id is not None:
        derived.extend(_open_nonconformance(batch, event, nonconformance_id, reason, outside))
    return derived


def _add_point(batch: BatchState, event: InspectionRecorded, chart: Chart, values: tuple[float, ...]) -> Subgroup:
    batch.changed_charts.add((chart.plan_id, chart.characteristic_id))
    chart.points += 1
    if len(values) == 1:
        rng = abs(values[0] - chart.last_value) if chart.last_value is not None else None
        chart.last_value = values[0]
    else:
        rng = max(values) - min(values)
    subgroup = Subgroup(chart.points, event.event_id, event.occurred_at, values, math.fsum(values) / len(values), rng,
                        event.equipment_id, event.order_id, event.lot_id)
    batch.subgroups.append((chart.plan_id, chart.characteristic_id, subgroup))
    if chart.history is not None:
        chart.history.append(subgroup)
    summary = Moments()
    for value in values:
        summary.add(value)
    for period, start in period_starts(event.occurred_at):
        stats_key = (chart.plan_id, chart.characteristic_id, period, start)
        stats = batch.stats.get(stats_key)
        if stats is None:
            stats = batch.stats[stats_key] = Stats(chart.subgroup_size)
        stats.add_subgroup(list(values), rng, batch.machine_study_values, summary)
        batch.changed_stats.add(stats_key)
    return subgroup


def _open_nonconformance(batch: BatchState, event: InspectionRecorded, nonconformance_id: str, reason: str,
                         outside: int) -> list[Event]:
    opened = NonconformanceOpened(
        event_id=f"{nonconformance_id}:opened", nonconformance_id=nonconformance_id, plan_id=event.plan_id,
        characteristic_id=event.characteristic_id, lot_id=event.lot_id, equipment_id=event.equipment_id,
        order_id=event.order_id, reason=reason, values_outside=outside, caused_by=event.event_id, **_envelope(event))
    batch.opened.append(opened)
    derived: list[Event] = [opened]
    if event.lot_id is None:
        return derived
    lot = batch.lots.get(event.lot_id)
    if lot is None:
        lot = batch.lots[event.lot_id] = Lot(event.lot_id)
    batch.changed_lots.add(lot.lot_id)
    lot.open_ncs.append(nonconformance_id)
    if lot.status in ("HELD", "SCRAPPED"):
        return derived  # held already (the hold now waits for this one too), or gone
    lot.status = "HELD"
    lot.holds += 1
    batch.holds_opened.append(HoldChange(lot.lot_id, lot.holds, event.occurred_at, nonconformance_id,
                                         event.equipment_id, event.order_id, caused_by=event.event_id))
    derived.append(LotHeld(event_id=f"{nonconformance_id}:held", lot_id=lot.lot_id, nonconformance_id=nonconformance_id,
                           equipment_id=event.equipment_id, order_id=event.order_id, reason=reason,
                           caused_by=event.event_id, **_envelope(event)))
    return derived


# -- dispositions --------------------------------------------------------------------------------------

OUTCOMES = {"RELEASE": (LotReleased, "RELEASED", "released"), "SCRAP": (LotScrapped, "SCRAPPED", "scrapped"),
            "REWORK": (LotSentToRework, "REWORK", "rework")}


def on_lot_dispositioned(batch: BatchState, event: LotDispositioned) -> list[Event]:
    if event.disposition not in DISPOSITIONS:
        return refuse(batch, event, event.lot_id, f"LotDispositioned.disposition must be one of {', '.join(DISPOSITIONS)}")
    lot = batch.lots.get(event.lot_id)
    if lot is None or not lot.open_ncs:
        return refuse(batch, event, event.lot_id, f"lot {event.lot_id} has no open nonconformance to disposition")
    if event.nonconformance_id is not None and event.nonconformance_id not in lot.open_ncs:
        return refuse(batch, event, event.lot_id,
                      f"nonconformance {event.nonconformance_id} is not open on lot {event.lot_id}")
    if event.disposition == "RELEASE" and event.nonconformance_id is not None:
        closing = [event.nonconformance_id]
    else:  # scrapping or reworking a lot settles every open nonconformance of it
        closing = list(lot.open_ncs)
    derived: list[Event] = []
    for nonconformance_id in closing:
        closed = NonconformanceClosed(event_id=f"{event.event_id}:closed:{nonconformance_id}",
                                      nonconformance_id=nonconformance_id, lot_id=lot.lot_id,
                                      disposition=event.disposition, caused_by=event.event_id, **_envelope(event))
        batch.closed.append(closed)
        derived.append(closed)
        lot.open_ncs.remove(nonconformance_id)
    batch.changed_lots.add(lot.lot_id)
    if lot.open_ncs:
        return derived  # released from one nonconformance, still held for another
    outcome_class, status, suffix = OUTCOMES[event.disposition]
    if lot.status == "HELD":
        batch.holds_ended.append(HoldChange(lot.lot_id, lot.holds, event.occurred_at, outcome=event.disposition,
                                            caused_by=event.event_id))
    lot.status = status
    lot.reworked = lot.reworked or event.disposition == "REWORK"
    derived.append(outcome_class(event_id=f"{event.event_id}:{suffix}", lot_id=lot.lot_id, nonconformance_ids=closing,
                                 caused_by=event.event_id, **_envelope(event)))
    return derived
