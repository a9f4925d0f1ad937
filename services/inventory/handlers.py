"""The registry: which pure handler each consumed event type goes to."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from services.inventory import model
from services.inventory.events import (
    Event,
    LotHeld,
    LotReleased,
    LotScrapped,
    MaterialConsumed,
    MaterialLoaded,
    MaterialLost,
    MaterialLotReceived,
    MaterialMoved,
    OrderStarted,
    ProductionReported,
)

Handler = Callable[[model.Book, Event], list[Event]]


def _all_it_derived(handler: Handler) -> Handler:
    """A handler's derived events are everything it added to the book, reorder reports included."""
    def run(book: model.Book, event: Event) -> list[Event]:
        start = len(book.derived)
        handler(book, event)
        return book.derived[start:]
    return run


HANDLERS: dict[type, Handler] = {
    MaterialLotReceived: model.on_lot_received,
    MaterialMoved: model.on_material_moved,
    MaterialLoaded: model.on_material_loaded,
    MaterialLost: model.on_material_lost,
    OrderStarted: model.on_order_started,
    ProductionReported: model.on_production_reported,
    MaterialConsumed: model.on_material_consumed,
    LotHeld: model.on_lot_held,
    LotReleased: model.on_lot_released,
    LotScrapped: model.on_lot_scrapped,
}
HANDLERS = {event_type: _all_it_derived(handler) for event_type, handler in HANDLERS.items()}


def fold(book: model.Book, events: Sequence[Event]) -> list[Event]:
    """Fold a batch of events in log order; returns the derived events in the order they were decided."""
    derived: list[Event] = []
    for event in events:
        derived.extend(HANDLERS[type(event)](book, event))
    return derived
