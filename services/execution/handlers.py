"""The registry: which pure handler each consumed event type goes to."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from services.execution import model
from services.execution.events import (
    DowntimeReasonAssigned,
    EquipmentLockedOut,
    EquipmentRegistered,
    EquipmentReleased,
    Event,
    MachineStateChanged,
    MaterialLoaded,
    OperationCompleted,
    OperationStarted,
    OperatorSignedIn,
    OperatorSignedOut,
    PartsProduced,
    ProductDefined,
    ProductionOrderReleased,
    ScrapReported,
    ShiftScheduled,
)

Handler = Callable[[model.BatchState, Event], list[Event]]

HANDLERS: dict[type, Handler] = {
    EquipmentRegistered: model.on_equipment_registered,
    ShiftScheduled: model.on_shift_scheduled,
    ProductDefined: model.on_order_event,
    ProductionOrderReleased: model.on_order_event,
    MachineStateChanged: model.on_state_changed,
    PartsProduced: model.on_parts_produced,
    OperationStarted: model.on_operation_event,
    OperationCompleted: model.on_operation_event,
    MaterialLoaded: model.on_operation_event,
    ScrapReported: model.on_scrap_reported,
    OperatorSignedIn: model.on_attendance,
    OperatorSignedOut: model.on_attendance,
    DowntimeReasonAssigned: model.on_reason_assigned,
    EquipmentLockedOut: model.on_lockout,
    EquipmentReleased: model.on_lockout,
}


def fold(batch: model.BatchState, events: Sequence[Event]) -> list[Event]:
    """Fold a batch of events in log order; returns the derived events in the order they were decided."""
    derived: list[Event] = []
    for event in events:
        derived.extend(HANDLERS[type(event)](batch, event))
    return derived
