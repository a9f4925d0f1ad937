"""Execution's pure core: how machine events change equipment status and counts, and what follows.

No I/O, no clock: time comes from the events alone, so a replay decides exactly what the live run did.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from services.execution.events import (
    DowntimeEnded,
    DowntimeStarted,
    Event,
    MachineStateChanged,
    PartsProduced,
)

SERVICE = "execution"
DOWN_STATES = frozenset({"DOWN"})


@dataclass(frozen=True, slots=True)
class EquipmentStatus:
    """A work unit's current state and since when (event time)."""

    equipment_id: str
    state: str
    reason_code: str | None
    since: datetime
    last_event_id: str


@dataclass(slots=True)
class BatchState:
    """What one batch folds into: statuses it loaded and changed, count deltas per hour."""

    statuses: dict[str, EquipmentStatus | None]
    changed: set[str] = field(default_factory=set)
    counts: dict[tuple[str, datetime], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))


def hour_of(instant: datetime) -> datetime:
    return instant.replace(minute=0, second=0, microsecond=0)


def evolve_status(status: EquipmentStatus | None, event: MachineStateChanged) -> EquipmentStatus | None:
    """The latest state by event time wins; an older event does not move the current state back."""
    if status is not None and event.occurred_at < status.since:
        return status
    if status is not None and status.state == event.state and status.reason_code == event.reason_code:
        return status
    return EquipmentStatus(event.equipment_id, event.state, event.reason_code, event.occurred_at, event.event_id)


def decide_downtime(status: EquipmentStatus | None, event: MachineStateChanged) -> list[Event]:
    """Entering a down state starts a downtime; leaving it ends one. Late events decide nothing here."""
    if status is not None and event.occurred_at < status.since:
        return []
    was_down = status is not None and status.state in DOWN_STATES
    is_down = event.state in DOWN_STATES
    envelope = {"occurred_at": event.occurred_at, "recorded_at": event.recorded_at, "source": SERVICE,
                "correlation_id": event.correlation_id or event.event_id}
    if is_down and not was_down:
        return [DowntimeStarted(event_id=f"{event.event_id}:downtime-started", equipment_id=event.equipment_id,
                                state=event.state, reason_code=event.reason_code, **envelope)]
    if was_down and not is_down:
        assert status is not None
        return [DowntimeEnded(event_id=f"{event.event_id}:downtime-ended", equipment_id=event.equipment_id,
                              state=status.state, reason_code=status.reason_code, started_at=status.since,
                              duration_s=(event.occurred_at - status.since).total_seconds(), **envelope)]
    return []


def on_state_changed(batch: BatchState, event: MachineStateChanged) -> list[Event]:
    status = batch.statuses.get(event.equipment_id)
    derived = decide_downtime(status, event)
    updated = evolve_status(status, event)
    if updated is not status:
        batch.statuses[event.equipment_id] = updated
        batch.changed.add(event.equipment_id)
    return derived


def on_parts_produced(batch: BatchState, event: PartsProduced) -> list[Event]:
    bucket = batch.counts[(event.equipment_id, hour_of(event.occurred_at))]
    bucket[0] += event.good
    bucket[1] += event.reject
    return []

