"""Execution's pure core: how each event changes what a batch holds, and which events follow.

No I/O, no clock: time comes from the events alone, so a replay decides exactly what the live run did.
The projection loads what a batch needs into a `BatchState`, folds the events through `handlers.py`,
and writes what changed; period figures are then recomputed from the stored facts with `kpi.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.execution import orders
from services.execution.events import (
    DowntimeEnded,
    DowntimeReasonAssigned,
    DowntimeStarted,
    EquipmentLockedOut,
    EquipmentRegistered,
    EquipmentReleased,
    Event,
    MachineStateChanged,
    OperatorSignedIn,
    OperatorSignedOut,
    PartsProduced,
    ScrapReported,
    ShiftScheduled,
)
from services.execution.kpi import ideal_time_of

SERVICE = "execution"
DEFAULT_LATENESS = timedelta(hours=24)
DEFAULT_MINOR_STOP = timedelta(seconds=120)

# The states that make a stop, and how execution classifies each (DOMAIN.md; the rest is this project's).
STOP_CLASSIFICATION = {
    "DOWN": "unplanned_stop", "SETUP": "setup", "BLOCKED": "blocked", "STARVED": "starved",
    "PLANNED_STOP": "planned", "MAINTENANCE": "maintenance", "OFFLINE": "offline",
}


@dataclass(frozen=True, slots=True)
class EquipmentStatus:
    """A work unit's current state and since when (event time)."""

    equipment_id: str
    state: str
    reason_code: str | None
    since: datetime
    last_event_id: str


@dataclass(frozen=True, slots=True)
class ProductionFact:
    event: PartsProduced
    ideal_us: int | None  # PRU x PQ in microseconds; None when no ideal cycle time is known


@dataclass(frozen=True, slots=True)
class LateFact:
    event: Event
    equipment_id: str
    known_until: datetime


@dataclass(slots=True)
class BatchState:
    """What one batch folds into: the state it loaded and the facts and changes it produced."""

    statuses: dict[str, EquipmentStatus | None]
    clocks: dict[str, datetime | None] = field(default_factory=dict)  # latest machine event time per unit
    book: orders.OrderBook = field(default_factory=orders.OrderBook)
    lateness: timedelta = DEFAULT_LATENESS
    minor_stop: timedelta = DEFAULT_MINOR_STOP
    changed: set[str] = field(default_factory=set)
    state_changes: list[MachineStateChanged] = field(default_factory=list)
    production: list[ProductionFact] = field(default_factory=list)
    scrap: list[ScrapReported] = field(default_factory=list)
    late: list[LateFact] = field(default_factory=list)
    equipment: list[EquipmentRegistered] = field(default_factory=list)
    shifts: list[ShiftScheduled] = field(default_factory=list)
    lockouts: list[EquipmentLockedOut | EquipmentReleased] = field(default_factory=list)
    attendance: list[OperatorSignedIn | OperatorSignedOut] = field(default_factory=list)
    reasons: list[DowntimeReasonAssigned] = field(default_factory=list)
    touched: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)  # unit -> time range to recompute

    def touch(self, equipment_id: str, start: datetime, end: datetime | None = None) -> None:
        if end is None or end < start:
            end = start
        span = self.touched.get(equipment_id)
        if span is None:
            self.touched[equipment_id] = (start, end)
        elif start < span[0] or end > span[1]:  # once per event: plain comparisons, no new tuple unless it grows
            self.touched[equipment_id] = (start if start < span[0] else span[0], end if end > span[1] else span[1])


def is_too_late(known_until: datetime | None, occurred_at: datetime, lateness: timedelta) -> bool:
    """Later than the lateness behind the unit's latest event time: kept and reported, not applied."""
    return known_until is not None and occurred_at < known_until - lateness


def advance_clock(batch: BatchState, equipment_id: str, occurred_at: datetime) -> None:
    before = batch.clocks.get(equipment_id)
    if before is None or occurred_at > before:
        batch.clocks[equipment_id] = occurred_at
        batch.touch(equipment_id, before or occurred_at, occurred_at)
    else:
        batch.touch(equipment_id, occurred_at, occurred_at)


def evolve_status(status: EquipmentStatus | None, event: MachineStateChanged) -> EquipmentStatus | None:
    """The latest state by event time wins; an older event does not move the current state back."""
    if status is not None and event.occurred_at < status.since:
        return status
    if status is not None and status.state == event.state and status.reason_code == event.reason_code:
        return status
    if status is not None and status.state == event.state:
        return EquipmentStatus(event.equipment_id, event.state, event.reason_code, status.since, event.event_id)
    return EquipmentStatus(event.equipment_id, event.state, event.reason_code, event.occurred_at, event.event_id)


def classify_end(state: str, duration: timedelta, minor_stop: timedelta) -> str:
    if state == "DOWN" and duration < minor_stop:
        return "minor_stop"
    return STOP_CLASSIFICATION[state]


def decide_downtime(status: EquipmentStatus | None, event: MachineStateChanged,
                    minor_stop: timedelta = DEFAULT_MINOR_STOP) -> list[Event]:
    """Entering a stop state starts a downtime; leaving it ends one. Late events decide nothing here."""
    if status is not None and event.occurred_at < status.since:
        return []
    was = status.state if status is not None else None
    if was == event.state:
        return []
    envelope = {"occurred_at": event.occurred_at, "recorded_at": event.recorded_at, "source": SERVICE,
                "correlation_id": event.correlation_id or event.event_id}
    derived: list[Event] = []
    if status is not None and was in STOP_CLASSIFICATION:
        duration = event.occurred_at - status.since
        derived.append(DowntimeEnded(
            event_id=f"{event.event_id}:downtime-ended", equipment_id=event.equipment_id, state=status.state,
            reason_code=status.reason_code, started_at=status.since, duration_s=duration.total_seconds(),
            classification=classify_end(status.state, duration, minor_stop), **envelope))
    if event.state in STOP_CLASSIFICATION:
        derived.append(DowntimeStarted(
            event_id=f"{event.event_id}:downtime-started", equipment_id=event.equipment_id, state=event.state,
            reason_code=event.reason_code, classification=STOP_CLASSIFICATION[event.state], **envelope))
    return derived


def ideal_cycle_time(book: orders.OrderBook, event: PartsProduced) -> float | None:
    """PRU of a report: the routing step's ideal cycle time on this unit for the operation the parts
    are attributed to, else the product's; None when the parts belong to no single operation."""
    if event.order_id is None and not book.has_operations_on(event.equipment_id):
        return None  # the common case of a unit that runs no order: nothing to look up
    attribution = orders.attribute_to_running(event.order_id, event.equipment_id, book.orders,
                                              book.running_on(event.equipment_id), "PartsProduced")
    if attribution.key is None:
        return None
    order = book.order(attribution.key.order_id)
    product = book.product(order.product_id) if order is not None else None
    if product is None:
        return None
    for step in product.routing:
        if step.operation == attribution.key.operation and step.equipment_id == event.equipment_id:
            return step.ideal_cycle_time_s
    return product.ideal_cycle_time_s


# -- handlers: one per consumed event type (registered in handlers.py) --------------------------------


def on_state_changed(batch: BatchState, event: MachineStateChanged) -> list[Event]:
    unit = event.equipment_id
    if is_too_late(batch.clocks.get(unit), event.occurred_at, batch.lateness):
        batch.late.append(LateFact(event, unit, batch.clocks[unit]))  # type: ignore[arg-type]
        return []
    status = batch.statuses.get(unit)
    derived = decide_downtime(status, event, batch.minor_stop)
    updated = evolve_status(status, event)
    if updated is not status:
        batch.statuses[unit] = updated
        batch.changed.add(unit)
    batch.state_changes.append(event)
    advance_clock(batch, unit, event.occurred_at)
    return derived


def on_parts_produced(batch: BatchState, event: PartsProduced) -> list[Event]:
    unit = event.equipment_id
    if is_too_late(batch.clocks.get(unit), event.occurred_at, batch.lateness):
        batch.late.append(LateFact(event, unit, batch.clocks[unit]))  # type: ignore[arg-type]
        return []
    pru = ideal_cycle_time(batch.book, event)
    ideal = ideal_time_of(pru, event.good + event.reject) if pru is not None else None
    batch.production.append(ProductionFact(event, None if ideal is None else ideal // timedelta(microseconds=1)))
    advance_clock(batch, unit, event.occurred_at)
    return orders.on_parts_produced(batch.book, event)


def on_scrap_reported(batch: BatchState, event: ScrapReported) -> list[Event]:
    unit = event.equipment_id
    if is_too_late(batch.clocks.get(unit), event.occurred_at, batch.lateness):
        batch.late.append(LateFact(event, unit, batch.clocks[unit]))  # type: ignore[arg-type]
        return []
    batch.scrap.append(event)
    batch.touch(unit, event.occurred_at)
    return orders.on_scrap_reported(batch.book, event)


def on_operation_event(batch: BatchState, event: Event) -> list[Event]:
    batch.touch(event.equipment_id, event.occurred_at)  # type: ignore[attr-defined]
    return orders.ORDER_HANDLERS[type(event)](batch.book, event)


def on_order_event(batch: BatchState, event: Event) -> list[Event]:
    return orders.ORDER_HANDLERS[type(event)](batch.book, event)


def on_equipment_registered(batch: BatchState, event: EquipmentRegistered) -> list[Event]:
    batch.equipment.append(event)
    return []


def on_shift_scheduled(batch: BatchState, event: ShiftScheduled) -> list[Event]:
    batch.shifts.append(event)
    return []


def on_lockout(batch: BatchState, event: EquipmentLockedOut | EquipmentReleased) -> list[Event]:
    batch.lockouts.append(event)
    batch.touch(event.equipment_id, event.occurred_at)
    return []


def on_attendance(batch: BatchState, event: OperatorSignedIn | OperatorSignedOut) -> list[Event]:
    batch.attendance.append(event)
    batch.touch(event.equipment_id, event.occurred_at)
    return []


def on_reason_assigned(batch: BatchState, event: DowntimeReasonAssigned) -> list[Event]:
    batch.reasons.append(event)
    return []
