"""Maintenance's pure core: failures, work orders, preventive dues and condition triggers.

No I/O, no clock: time comes from the events alone. The projection loads what a batch touches into a
`BatchState`, folds the events through `handlers.py`, and writes what changed. Every decision about a
work unit's failures and conditions is taken from the unit's machine events, which share one
partition, in order; so live runs and replays decide alike whatever the batch boundaries.

The rules (docs/maintenance.md):
- a failure starts when a unit enters DOWN with a technical reason, or while DOWN has (or gets) an
  active critical alarm; it ends (is restored) when the unit next enters RUNNING, IDLE or SETUP.
  A stop shorter than the minor-stop threshold is a minor stop, not a failure. A failure is
  confirmed, and its corrective work order opened, as soon as a machine event of the unit shows the
  stop has lasted the threshold (at the latest at its restoration);
- a work order moves OPEN -> IN_PROGRESS (STARTED) -> CLOSED (COMPLETED); COMPLETED straight from
  OPEN closes it with no work time. Planned work (preventive and condition-triggered orders) locks
  the unit out at STARTED and releases it at COMPLETED;
- a plan's k-th due is crossed when the unit's machine clock reaches defined_at + k x interval
  (calendar), or its runtime / cycles since the definition reach k x the plan's amount;
- a process value beyond its configured limits for the configured duration opens one
  condition-triggered work order per excursion.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from services.maintenance.events import (
    AlarmCleared,
    AlarmRaised,
    DowntimeEnded,
    DowntimeStarted,
    EquipmentLockedOut,
    EquipmentReleased,
    Event,
    MachineStateChanged,
    MaintenanceInputRefused,
    MaintenancePlanDefined,
    MaintenanceWorkReported,
    PreventiveMaintenanceDue,
    ProcessValueMeasured,
    RuntimeAccumulated,
    WorkOrderClosed,
    WorkOrderOpened,
)

SERVICE = "maintenance"
US = timedelta(microseconds=1)
OPERATING = frozenset({"RUNNING", "SETUP"})          # operating time: production and setup (ISO 22400 TBF)
RESTORING = frozenset({"RUNNING", "IDLE", "SETUP"})  # entering one of these ends a failure
CRITICAL = "critical"
DEFAULT_MINOR_STOP = timedelta(seconds=120)
DEFAULT_NON_TECHNICAL = frozenset({
    "BREAK", "CHANGEOVER", "CLEANING", "END-OF-SHIFT", "NO-MATERIAL", "NO-OPERATOR", "NO-ORDER", "MEETING",
    "QUALITY-CHECK", "TRAINING", "PLANNED",
})
MAX_DUES_PER_CROSSING = 100  # a clock jump past more thresholds than this emits the latest ones only

CORRECTIVE, PREVENTIVE, CONDITION = "corrective", "preventive", "condition"
PLANNED_KINDS = frozenset({PREVENTIVE, CONDITION})
OPEN, IN_PROGRESS, CLOSED = "OPEN", "IN_PROGRESS", "CLOSED"
TRIGGER_KINDS = ("calendar", "runtime_hours", "cycles")


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConditionLimit:
    """A process value outside [low, high] for `for_s` seconds opens a maintenance request."""

    parameter: str
    low: float | None = None
    high: float | None = None
    for_s: float = 0.0
    equipment_prefix: str = ""  # applies to units whose id starts with this ("" = every unit)

    def applies_to(self, equipment_id: str, parameter: str) -> bool:
        return parameter == self.parameter and equipment_id.startswith(self.equipment_prefix)

    def breach(self, value: float) -> str | None:
        if self.high is not None and value > self.high:
            return "above"
        if self.low is not None and value < self.low:
            return "below"
        return None


@dataclass(frozen=True, slots=True)
class Rules:
    minor_stop: timedelta = DEFAULT_MINOR_STOP
    non_technical_reasons: frozenset[str] = DEFAULT_NON_TECHNICAL
    condition_limits: tuple[ConditionLimit, ...] = ()

    def is_technical(self, reason_code: str | None) -> bool:
        """A reason is technical unless it is missing or listed as non-technical (case-insensitive)."""
        return bool(reason_code and reason_code.strip()) and reason_code.strip().upper() not in self.non_technical_reasons

    def limit_for(self, equipment_id: str, parameter: str) -> ConditionLimit | None:
        """The most specific limit (longest equipment prefix) for a unit's parameter."""
        matching = [lim for lim in self.condition_limits if lim.applies_to(equipment_id, parameter)]
        return max(matching, key=lambda lim: len(lim.equipment_prefix)) if matching else None


# -- state -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alarm:
    equipment_id: str
    alarm_code: str
    severity: str
    text: str | None
    raised_at: datetime
    raised_event_id: str
    cleared_at: datetime | None = None


@dataclass(slots=True)
class UnitState:
    """What maintenance knows of one work unit, folded from its machine events."""

    equipment_id: str
    state: str | None = None
    accounted_until: datetime | None = None  # operating time is counted up to here
    clock: datetime | None = None             # latest machine event time of the unit
    operating_us: int = 0                     # RUNNING + SETUP time since the unit's first event
    operating_at_restore: int = 0             # operating_us at the last restoration (0: none yet)
    stop_start: datetime | None = None        # start of the DOWN chain that may be a failure
    stop_reason: str | None = None
    stop_alarm: str | None = None
    stop_ttf_us: int | None = None            # operating time from the last restoration to stop_start
    failure_id: str | None = None             # set once the open stop is confirmed as a failure
    active_alarms: dict[str, Alarm] = field(default_factory=dict)

    def qualifies(self, rules: Rules) -> bool:
        return self.stop_start is not None and (self.stop_alarm is not None or rules.is_technical(self.stop_reason))


@dataclass(frozen=True, slots=True)
class Failure:
    failure_id: str
    equipment_id: str
    started_at: datetime
    reason_code: str | None
    alarm_code: str | None
    ttf_us: int
    work_order_id: str
    confirmed_at: datetime
    restored_at: datetime | None = None

    @property
    def ttr_us(self) -> int | None:
        return None if self.restored_at is None else (self.restored_at - self.started_at) // US


@dataclass(frozen=True, slots=True)
class WorkOrder:
    work_order_id: str
    kind: str
    equipment_id: str
    status: str
    opened_at: datetime
    description: str
    failure_id: str | None = None
    plan_id: str | None = None
    due_index: int | None = None
    alarm_code: str | None = None
    reason_code: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    technician_id: str | None = None
    locked_out: bool = False

    @property
    def work_us(self) -> int | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at) // US


@dataclass(frozen=True, slots=True)
class Plan:
    plan_id: str
    equipment_id: str
    task: str
    kind: str
    interval_s: float | None
    hours: float | None
    cycles: int | None
    defined_at: datetime
    revision: int
    base_runtime_us: int   # the unit's runtime total when the plan was (re)defined
    base_cycles: int
    dues: int = 0          # thresholds crossed so far (the last due index)


@dataclass(frozen=True, slots=True)
class RuntimeTotals:
    equipment_id: str
    through: datetime      # end of the latest closed hour counted
    runtime_us: int
    cycles: int


@dataclass(frozen=True, slots=True)
class ConditionState:
    equipment_id: str
    parameter: str
    excursion_since: datetime | None = None
    direction: str | None = None
    worst_value: float | None = None
    work_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Due:
    plan: Plan
    index: int
    due_at: datetime | None
    due_runtime_h: float | None
    due_cycles: int | None
    crossed_at: datetime
    work_order_id: str


@dataclass(slots=True)
class BatchState:
    """What one batch folds into: the state it loaded and what it changed."""

    rules: Rules = field(default_factory=Rules)
    units: dict[str, UnitState] = field(default_factory=dict)
    work_orders: dict[str, WorkOrder | None] = field(default_factory=dict)
    plans: dict[str, Plan | None] = field(default_factory=dict)
    runtime: dict[str, RuntimeTotals | None] = field(default_factory=dict)
    history: dict[str, list[RuntimeTotals]] = field(default_factory=dict)  # runtime facts a plan's base may need
    new_runtime_facts: list[RuntimeTotals] = field(default_factory=list)
    parked: list[MaintenanceWorkReported] = field(default_factory=list)   # reports for orders not (yet) known
    opened: list[str] = field(default_factory=list)                       # work orders opened in this batch
    conditions: dict[tuple[str, str], ConditionState] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)     # confirmed or restored in this batch
    changed_units: set[str] = field(default_factory=set)
    changed_work_orders: set[str] = field(default_factory=set)
    changed_plans: set[str] = field(default_factory=set)
    changed_runtime: set[str] = field(default_factory=set)
    changed_conditions: set[tuple[str, str]] = field(default_factory=set)
    new_alarms: list[Alarm] = field(default_factory=list)
    cleared_alarms: list[Alarm] = field(default_factory=list)
    operating: dict[tuple[str, date], int] = field(default_factory=dict)  # (unit, UTC day) -> operating us added
    dues: list[Due] = field(default_factory=list)
    downtime: list[DowntimeStarted | DowntimeEnded] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)
    unmatched_clears: int = 0

    def unit(self, equipment_id: str) -> UnitState:
        unit = self.units.get(equipment_id)
        if unit is None:
            unit = self.units[equipment_id] = UnitState(equipment_id)
        self.changed_units.add(equipment_id)
        return unit

    def plans_of(self, equipment_id: str) -> list[Plan]:
        return sorted((p for p in self.plans.values() if p is not None and p.equipment_id == equipment_id),
                      key=lambda p: p.plan_id)

    def put_work_order(self, order: WorkOrder) -> None:
        if self.work_orders.get(order.work_order_id) is None:
            self.opened.append(order.work_order_id)
        self.work_orders[order.work_order_id] = order
        self.changed_work_orders.add(order.work_order_id)

    def put_failure(self, failure: Failure) -> None:
        self.failures[failure.failure_id] = failure


# -- ids: derived from the cause, so replays derive the same ---------------------------------------------


def compact(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def failure_id(equipment_id: str, started_at: datetime) -> str:
    return f"{equipment_id}@{compact(started_at)}"


def corrective_order_id(equipment_id: str, started_at: datetime) -> str:
    return f"CM-{equipment_id}-{compact(started_at)}"


def preventive_order_id(plan_id: str, revision: int, index: int) -> str:
    return f"PM-{plan_id}-r{revision}-{index}"


def condition_order_id(equipment_id: str, parameter: str, since: datetime) -> str:
    return f"CBM-{equipment_id}-{parameter}-{compact(since)}"


def _envelope(cause: Event, occurred_at: datetime | None = None) -> dict:
    return {"occurred_at": occurred_at or cause.occurred_at, "recorded_at": cause.recorded_at, "source": SERVICE,
            "correlation_id": cause.correlation_id or cause.event_id}


def refuse(event: Event, subject: str, reason: str, equipment_id: str | None = None) -> MaintenanceInputRefused:
    return MaintenanceInputRefused(
        event_id=f"{event.event_id}:refused", **_envelope(event), subject=subject, refused_event_id=event.event_id,
        refused_event_type=type(event).__name__, reason=reason, equipment_id=equipment_id)


# -- operating time ------------------------------------------------------------------------------------


def split_by_day(start: datetime, end: datetime) -> list[tuple[date, int]]:
    """[start, end) cut at UTC midnights: (day, microseconds) pieces."""
    pieces = []
    while start < end:
        midnight = datetime.combine(start.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
        stop = min(end, midnight)
        pieces.append((start.astimezone(UTC).date(), (stop - start) // US))
        start = stop
    return pieces


def _account(batch: BatchState, unit: UnitState, until: datetime) -> None:
    """Count operating time from accounted_until up to `until` (state unchanged meanwhile)."""
    if unit.accounted_until is not None and until > unit.accounted_until and unit.state in OPERATING:
        for day, us in split_by_day(unit.accounted_until, until):
            key = (unit.equipment_id, day)
            batch.operating[key] = batch.operating.get(key, 0) + us
            unit.operating_us += us
    if unit.accounted_until is None or until > unit.accounted_until:
        unit.accounted_until = until


# -- failures ----------------------------------------------------------------------------------------------


def _confirm_if_due(batch: BatchState, unit: UnitState, cause: Event) -> list[Event]:
    """A qualifying stop that has lasted the minor-stop threshold by the cause's time is a failure."""
    if unit.failure_id is not None or not unit.qualifies(batch.rules):
        return []
    assert unit.stop_start is not None
    if cause.occurred_at - unit.stop_start < batch.rules.minor_stop:
        return []
    start = unit.stop_start
    failure = Failure(
        failure_id=failure_id(unit.equipment_id, start), equipment_id=unit.equipment_id, started_at=start,
        reason_code=unit.stop_reason, alarm_code=unit.stop_alarm, ttf_us=unit.stop_ttf_us or 0,
        work_order_id=corrective_order_id(unit.equipment_id, start), confirmed_at=cause.occurred_at)
    unit.failure_id = failure.failure_id
    batch.put_failure(failure)
    alarm = unit.active_alarms.get(unit.stop_alarm) if unit.stop_alarm else None
    description = "; ".join(x for x in (
        f"failure since {start.isoformat()}",
        f"reason {unit.stop_reason}" if unit.stop_reason else None,
        f"alarm {unit.stop_alarm}" + (f": {alarm.text}" if alarm and alarm.text else "") if unit.stop_alarm else None,
    ) if x)
    order = WorkOrder(work_order_id=failure.work_order_id, kind=CORRECTIVE, equipment_id=unit.equipment_id, status=OPEN,
                      opened_at=cause.occurred_at, description=description, failure_id=failure.failure_id,
                      alarm_code=unit.stop_alarm, reason_code=unit.stop_reason)
    batch.put_work_order(order)
    return [_opened(order, cause, failure_started_at=start)]


def _opened(order: WorkOrder, cause: Event, failure_started_at: datetime | None = None) -> WorkOrderOpened:
    return WorkOrderOpened(
        event_id=f"{order.work_order_id}:opened", **_envelope(cause, order.opened_at), work_order_id=order.work_order_id,
        equipment_id=order.equipment_id, kind=order.kind, description=order.description, failure_id=order.failure_id,
        failure_started_at=failure_started_at, alarm_code=order.alarm_code, reason_code=order.reason_code,
        plan_id=order.plan_id, due_index=order.due_index)


def _end_stop(batch: BatchState, unit: UnitState, at: datetime) -> None:
    """The unit entered RUNNING, IDLE or SETUP: a confirmed failure is restored, anything else forgotten."""
    if unit.failure_id is not None:
        failure = batch.failures.get(unit.failure_id)
        if failure is None:  # confirmed in an earlier batch: only the restoration is written
            failure = Failure(unit.failure_id, unit.equipment_id, unit.stop_start, unit.stop_reason,  # type: ignore[arg-type]
                              unit.stop_alarm, unit.stop_ttf_us or 0, corrective_order_id(unit.equipment_id, unit.stop_start),  # type: ignore[arg-type]
                              at)
        batch.put_failure(replace(failure, restored_at=at))
        unit.operating_at_restore = unit.operating_us
    unit.stop_start = unit.stop_reason = unit.stop_alarm = unit.failure_id = None
    unit.stop_ttf_us = None


def _first_critical(unit: UnitState) -> str | None:
    critical = sorted((a.raised_at, a.alarm_code) for a in unit.active_alarms.values() if a.severity == CRITICAL)
    return critical[0][1] if critical else None


def _is_late(batch: BatchState, unit: UnitState, event: Event) -> bool:
    if unit.clock is not None and event.occurred_at < unit.clock:
        batch.late.append(event)
        return True
    return False


def _tick(batch: BatchState, unit: UnitState, event: Event) -> list[Event]:
    """What any machine event of a unit may decide: confirm a failure, cross calendar thresholds."""
    unit.clock = event.occurred_at if unit.clock is None else max(unit.clock, event.occurred_at)
    derived = _confirm_if_due(batch, unit, event)
    for plan in batch.plans_of(unit.equipment_id):
        derived.extend(_dues(batch, plan, event))
    return derived


def on_state_changed(batch: BatchState, event: MachineStateChanged) -> list[Event]:
    unit = batch.unit(event.equipment_id)
    if _is_late(batch, unit, event):
        return []
    _account(batch, unit, event.occurred_at)
    derived = _tick(batch, unit, event)
    if unit.stop_start is not None:
        if event.state in RESTORING:
            _end_stop(batch, unit, event.occurred_at)
        elif event.state == "DOWN" and not batch.rules.is_technical(unit.stop_reason) and batch.rules.is_technical(event.reason_code):
            unit.stop_reason = event.reason_code
            derived.extend(_confirm_if_due(batch, unit, event))
    elif event.state == "DOWN":
        unit.stop_start = event.occurred_at
        unit.stop_reason = event.reason_code
        unit.stop_alarm = _first_critical(unit)
        unit.stop_ttf_us = unit.operating_us - unit.operating_at_restore
    unit.state = event.state
    return derived


def on_alarm_raised(batch: BatchState, event: AlarmRaised) -> list[Event]:
    unit = batch.unit(event.equipment_id)
    if _is_late(batch, unit, event):
        return []
    _account(batch, unit, event.occurred_at)
    if event.alarm_code not in unit.active_alarms:
        alarm = Alarm(event.equipment_id, event.alarm_code, event.severity, event.text, event.occurred_at, event.event_id)
        unit.active_alarms[event.alarm_code] = alarm
        batch.new_alarms.append(alarm)
        if event.severity == CRITICAL and unit.stop_start is not None and unit.stop_alarm is None:
            unit.stop_alarm = event.alarm_code
    return _tick(batch, unit, event)


def on_alarm_cleared(batch: BatchState, event: AlarmCleared) -> list[Event]:
    unit = batch.unit(event.equipment_id)
    if _is_late(batch, unit, event):
        return []
    _account(batch, unit, event.occurred_at)
    alarm = unit.active_alarms.pop(event.alarm_code, None)
    if alarm is None:
        batch.unmatched_clears += 1
    else:
        batch.cleared_alarms.append(replace(alarm, cleared_at=event.occurred_at))
    return _tick(batch, unit, event)


# -- condition triggers ------------------------------------------------------------------------------


def on_process_value(batch: BatchState, event: ProcessValueMeasured) -> list[Event]:
    unit = batch.unit(event.equipment_id)
    if _is_late(batch, unit, event):
        return []
    _account(batch, unit, event.occurred_at)
    derived = _tick(batch, unit, event)
    limit = batch.rules.limit_for(event.equipment_id, event.parameter)
    if limit is None:
        return derived
    key = (event.equipment_id, event.parameter)
    before = batch.conditions.get(key) or ConditionState(event.equipment_id, event.parameter)
    direction = limit.breach(event.value)
    if direction is None:
        after = ConditionState(event.equipment_id, event.parameter)
    elif before.excursion_since is None or before.direction != direction:
        after = ConditionState(event.equipment_id, event.parameter, event.occurred_at, direction, event.value)
    else:
        worst = max(before.worst_value, event.value) if direction == "above" else min(before.worst_value, event.value)  # type: ignore[type-var]
        after = replace(before, worst_value=worst)
    if (after.excursion_since is not None and after.work_order_id is None
            and (event.occurred_at - after.excursion_since).total_seconds() >= limit.for_s):
        bound = limit.high if direction == "above" else limit.low
        order = WorkOrder(
            work_order_id=condition_order_id(event.equipment_id, event.parameter, after.excursion_since), kind=CONDITION,
            equipment_id=event.equipment_id, status=OPEN, opened_at=event.occurred_at,
            description=(f"{event.parameter} {direction} {bound:g}{' ' + event.unit if event.unit else ''} "
                         f"since {after.excursion_since.isoformat()} (worst {after.worst_value:g})"),
            reason_code=f"{event.parameter}:{direction}")
        batch.put_work_order(order)
        after = replace(after, work_order_id=order.work_order_id)
        derived.append(_opened(order, event))
    if after != before:
        batch.conditions[key] = after
        batch.changed_conditions.add(key)
    return derived


# -- execution's facts -------------------------------------------------------------------------------


def on_downtime(batch: BatchState, event: DowntimeStarted | DowntimeEnded) -> list[Event]:
    batch.downtime.append(event)
    return []


def on_runtime(batch: BatchState, event: RuntimeAccumulated) -> list[Event]:
    before = batch.runtime.get(event.equipment_id)
    if before is not None and event.period_end <= before.through:
        return []  # an older hour: the totals already count it
    fact = RuntimeTotals(event.equipment_id, event.period_end, round(event.total_runtime_s * 1e6), event.total_cycles)
    batch.runtime[event.equipment_id] = fact
    batch.changed_runtime.add(event.equipment_id)
    batch.new_runtime_facts.append(fact)
    batch.history.setdefault(event.equipment_id, []).append(fact)
    derived: list[Event] = []
    for plan in batch.plans_of(event.equipment_id):
        if plan.kind == "calendar":
            continue
        if fact.through <= plan.defined_at:
            # an hour before the definition, folded after it (execution lagged): the base moves, nothing is due
            batch.plans[plan.plan_id] = replace(plan, base_runtime_us=fact.runtime_us, base_cycles=fact.cycles)
            batch.changed_plans.add(plan.plan_id)
        else:
            derived.extend(_dues(batch, plan, event, fact))
    return derived


# -- preventive maintenance --------------------------------------------------------------------------


def plan_problem(event: MaintenancePlanDefined) -> str | None:
    trigger = event.trigger
    if trigger.kind not in TRIGGER_KINDS:
        return f"trigger.kind {trigger.kind!r}: must be one of {', '.join(TRIGGER_KINDS)}"
    amount, name = {"calendar": (trigger.interval_s, "interval_s"), "runtime_hours": (trigger.hours, "hours"),
                    "cycles": (trigger.cycles, "cycles")}[trigger.kind]
    if amount is None or amount <= 0:
        return f"trigger.{name}: must be set and greater than 0 for a {trigger.kind} trigger"
    return None


def crossed(plan: Plan, clock: datetime | None, totals: RuntimeTotals | None) -> int:
    """How many thresholds of the plan the unit has crossed: a pure function of its clock (calendar) or of
    its runtime totals at the end of an hour after the definition."""
    if plan.kind == "calendar":
        if clock is None or clock < plan.defined_at:
            return 0
        return int((clock - plan.defined_at) // timedelta(seconds=plan.interval_s))  # type: ignore[arg-type]
    if totals is None:
        return 0
    if plan.kind == "runtime_hours":
        return max(totals.runtime_us - plan.base_runtime_us, 0) // round(plan.hours * 3600e6)  # type: ignore[operator]
    return max(totals.cycles - plan.base_cycles, 0) // plan.cycles  # type: ignore[operator]


def _dues(batch: BatchState, plan: Plan, cause: Event, fact: RuntimeTotals | None = None) -> list[Event]:
    """Dues of thresholds crossed by the unit's clock (calendar) or by a runtime fact (the hour that
    crossed them; its end is when they fell due, whenever the plan and the fact were folded)."""
    plan = batch.plans.get(plan.plan_id) or plan
    unit = batch.units.get(plan.equipment_id)
    count = crossed(plan, unit.clock if unit else None, fact)
    if count <= plan.dues:
        return []
    derived: list[Event] = []
    for index in range(max(plan.dues + 1, count - MAX_DUES_PER_CROSSING + 1), count + 1):
        due_at = due_runtime_h = due_cycles = None
        if plan.kind == "calendar":
            due_at = plan.defined_at + index * timedelta(seconds=plan.interval_s)  # type: ignore[arg-type]
        elif plan.kind == "runtime_hours":
            due_runtime_h = round(plan.base_runtime_us / 3600e6 + index * plan.hours, 6)  # type: ignore[operator]
        else:
            due_cycles = plan.base_cycles + index * plan.cycles  # type: ignore[operator]
        occurred = due_at or fact.through  # type: ignore[union-attr]
        due = Due(plan, index, due_at, due_runtime_h, due_cycles, occurred,
                  preventive_order_id(plan.plan_id, plan.revision, index))
        batch.dues.append(due)
        derived.append(PreventiveMaintenanceDue(
            event_id=f"{plan.plan_id}:r{plan.revision}:due:{index}", **_envelope(cause, occurred), plan_id=plan.plan_id,
            revision=plan.revision, due_index=index, equipment_id=plan.equipment_id, task=plan.task,
            trigger_kind=plan.kind, due_at=due_at, due_runtime_h=due_runtime_h, due_cycles=due_cycles,
            work_order_id=due.work_order_id))
        order = WorkOrder(work_order_id=due.work_order_id, kind=PREVENTIVE, equipment_id=plan.equipment_id, status=OPEN,
                          opened_at=occurred, description=plan.task, plan_id=plan.plan_id, due_index=index)
        batch.put_work_order(order)
        derived.append(_opened(order, cause))
    batch.plans[plan.plan_id] = replace(plan, dues=count)
    batch.changed_plans.add(plan.plan_id)
    return derived


def on_plan_defined(batch: BatchState, event: MaintenancePlanDefined) -> list[Event]:
    problem = plan_problem(event)
    if problem is not None:
        return [refuse(event, event.plan_id, problem, event.equipment_id)]
    before = batch.plans.get(event.plan_id)
    if before is not None and event.occurred_at <= before.defined_at:
        return []  # an older (or the same) definition: the latest by event time holds
    trigger = event.trigger
    history = sorted(batch.history.get(event.equipment_id, ()), key=lambda f: f.through)
    base = None
    if trigger.kind != "calendar":  # the totals at the definition: the last hour that ended by then
        base = next((f for f in reversed(history) if f.through <= event.occurred_at), None)
    plan = Plan(event.plan_id, event.equipment_id, event.task, trigger.kind, trigger.interval_s, trigger.hours,
                trigger.cycles, event.occurred_at, (before.revision + 1) if before else 1,
                base.runtime_us if base else 0, base.cycles if base else 0)
    batch.plans[plan.plan_id] = plan
    batch.changed_plans.add(plan.plan_id)
    if trigger.kind == "calendar":
        return _dues(batch, plan, event)
    derived: list[Event] = []
    for fact in history:  # hours after the definition that were folded before it (the plan came late)
        if fact.through > event.occurred_at:
            derived.extend(_dues(batch, plan, event, fact))
    return derived


# -- work orders -------------------------------------------------------------------------------------


def on_work_reported(batch: BatchState, event: MaintenanceWorkReported) -> list[Event]:
    order = batch.work_orders.get(event.work_order_id)
    if order is None:
        # kept: should the order be opened later (its cause folded after this report), the report applies then
        batch.parked.append(event)
        return [refuse(event, event.work_order_id, f"work_order_id {event.work_order_id!r}: no such work order (yet)")]
    refused = work_problem(order, event)
    if refused is not None:
        return [refuse(event, event.work_order_id, refused, order.equipment_id)]
    technician = event.technician_id or order.technician_id
    derived: list[Event] = []
    if event.status == "STARTED":
        locks = order.kind in PLANNED_KINDS
        batch.put_work_order(replace(order, status=IN_PROGRESS, started_at=event.occurred_at, technician_id=technician,
                                     locked_out=locks))
        if locks:
            derived.append(EquipmentLockedOut(
                event_id=f"{order.work_order_id}:locked-out", **_envelope(event), equipment_id=order.equipment_id,
                work_order_id=order.work_order_id, plan_id=order.plan_id, reason=order.description))
        return derived
    closed = replace(order, status=CLOSED, completed_at=event.occurred_at, technician_id=technician)
    batch.put_work_order(closed)
    derived.append(WorkOrderClosed(
        event_id=f"{order.work_order_id}:closed", **_envelope(event), work_order_id=order.work_order_id,
        equipment_id=order.equipment_id, kind=order.kind, failure_id=order.failure_id, plan_id=order.plan_id,
        started_at=order.started_at, work_duration_s=None if closed.work_us is None else closed.work_us / 1e6,
        technician_id=technician))
    if order.locked_out:
        derived.append(EquipmentReleased(event_id=f"{order.work_order_id}:released", **_envelope(event),
                                         equipment_id=order.equipment_id, work_order_id=order.work_order_id))
    return derived


def apply_parked(batch: BatchState, reports: list[MaintenanceWorkReported]) -> list[Event]:
    """Reports kept for orders this batch opened, applied in event-time order."""
    derived: list[Event] = []
    for report in sorted(reports, key=lambda r: (r.occurred_at, r.event_id)):
        if batch.work_orders.get(report.work_order_id) is not None:
            derived.extend(on_work_reported(batch, report))
    return derived


def work_problem(order: WorkOrder, event: MaintenanceWorkReported) -> str | None:
    """Why a report cannot move the order, or None: OPEN -> IN_PROGRESS -> CLOSED, time never backwards."""
    if order.status == CLOSED:
        return f"status {event.status}: work order {order.work_order_id} is already closed"
    if event.status == "STARTED" and order.status != OPEN:
        return f"status STARTED: work order {order.work_order_id} was started at {order.started_at.isoformat()}"  # type: ignore[union-attr]
    if event.status not in ("STARTED", "COMPLETED"):
        return f"status {event.status!r}: must be STARTED or COMPLETED"
    if order.started_at is not None and event.occurred_at < order.started_at:
        return f"occurred_at {event.occurred_at.isoformat()}: before the work started ({order.started_at.isoformat()})"
    return None
