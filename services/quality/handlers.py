"""The registry: which pure handler each consumed event type goes to."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from services.quality import model
from services.quality.events import (
    Event,
    InspectionPlanDefined,
    InspectionRecorded,
    LotDispositioned,
    OrderStarted,
    ProductionReported,
    ScrapReported,
)

Handler = Callable[[model.BatchState, Event], list[Event]]

HANDLERS: dict[type, Handler] = {
    InspectionPlanDefined: model.on_plan_defined,
    OrderStarted: model.on_order_started,
    ProductionReported: model.on_production_reported,
    ScrapReported: model.on_scrap_reported,
    InspectionRecorded: model.on_inspection_recorded,
    LotDispositioned: model.on_lot_dispositioned,
}


def fold(batch: model.BatchState, events: Sequence[Event]) -> list[Event]:
    """Fold a batch of events in log order; returns the derived events in the order they were decided."""
    derived: list[Event] = []
    for event in events:
        derived.extend(HANDLERS[type(event)](batch, event))
    return derived
