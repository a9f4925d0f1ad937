"""The registry: which pure handler each consumed event type goes to."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from services.maintenance import model
from services.maintenance.events import (
    AlarmCleared,
    AlarmRaised,
    DowntimeEnded,
    DowntimeStarted,
    Event,
    MachineStateChanged,
    MaintenancePlanDefined,
    MaintenanceWorkReported,
    ProcessValueMeasured,
    RuntimeAccumulated,
)

Handler = Callable[[model.BatchState, Event], list[Event]]

HANDLERS: dict[type, Handler] = {
    MachineStateChanged: model.on_state_changed,
    AlarmRaised: model.on_alarm_raised,
    AlarmCleared: model.on_alarm_cleared,
    ProcessValueMeasured: model.on_process_value,
    DowntimeStarted: model.on_downtime,
    DowntimeEnded: model.on_downtime,
    RuntimeAccumulated: model.on_runtime,
    MaintenancePlanDefined: model.on_plan_defined,
    MaintenanceWorkReported: model.on_work_reported,
}


def fold(batch: model.BatchState, events: Sequence[Event]) -> list[Event]:
    """Fold a batch of events in log order; returns the derived events in the order they were decided."""
    derived: list[Event] = []
    for event in events:
        derived.extend(HANDLERS[type(event)](batch, event))
    return derived
