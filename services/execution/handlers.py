"""The registry: which pure handler each consumed event type goes to."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from services.execution import model
from services.execution.events import Event, MachineStateChanged, PartsProduced

Handler = Callable[[model.BatchState, Event], list[Event]]

HANDLERS: dict[type, Handler] = {
    MachineStateChanged: model.on_state_changed,
    PartsProduced: model.on_parts_produced,
}


def fold(batch: model.BatchState, events: Sequence[Event]) -> list[Event]:
    """Fold a batch of events in log order; returns the derived events in the order they were decided."""
    derived: list[Event] = []
    for event in events:
        derived.extend(HANDLERS[type(event)](batch, event))
    return derived
