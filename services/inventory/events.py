"""The events inventory consumes and emits, as frozen dataclasses named like their Avro records."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    correlation_id: str | None = None


# -- consumed: plan and operator input ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialLotReceived(Event):
    lot_id: str
    material_id: str
    quantity: float
    unit: str
    location_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialMoved(Event):
    lot_id: str
    from_location: str
    to_location: str
    quantity: float


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialLoaded(Event):
    equipment_id: str
    order_id: str | None = None
    lot_id: str
    quantity: float


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialLost(Event):
    lot_id: str
    quantity: float
    kind: str  # production | storage_and_transport | other
    location_id: str | None = None
    equipment_id: str | None = None
    reason_code: str | None = None


# -- consumed: execution's derived events --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderStarted(Event):
    order_id: str
    product_id: str
    operation: str
    equipment_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ProductionReported(Event):
    order_id: str
    operation: str
    equipment_id: str
    product_id: str
    lot_id: str
    good: int
    scrap: int
    final_operation: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialConsumed(Event):
    order_id: str
    operation: str
    equipment_id: str
    material_id: str
    quantity: float
    produced_lot_id: str
    backflushed: bool = True


# -- consumed: quality's derived events ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class LotHeld(Event):
    lot_id: str
    nonconformance_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LotReleased(Event):
    lot_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LotScrapped(Event):
    lot_id: str


# -- emitted ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class LotCreated(Event):
    lot_id: str
    material_id: str
    quantity: float
    unit: str
    location_id: str
    origin: str  # received | produced
    order_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LotConsumed(Event):
    lot_id: str
    material_id: str
    location_id: str
    quantity: float
    remaining_quantity: float
    order_id: str | None = None
    equipment_id: str | None = None
    produced_lot_id: str | None = None
    backflushed: bool
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LotStatusChanged(Event):
    lot_id: str
    material_id: str | None = None
    from_status: str | None = None
    to_status: str
    nonconformance_id: str | None = None
    reason: str
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialBelowReorderPoint(Event):
    material_id: str
    available_quantity: float
    reorder_point: float
    unit: str | None = None
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialTransactionRefused(Event):
    subject_id: str
    attempted: str
    lot_id: str | None = None
    material_id: str | None = None
    quantity: float
    lot_status: str | None = None
    order_id: str | None = None
    equipment_id: str | None = None
    reason: str
    caused_by: str


CONSUMED = (
    MaterialLotReceived, MaterialMoved, MaterialLoaded, MaterialLost,
    OrderStarted, ProductionReported, MaterialConsumed,
    LotHeld, LotReleased, LotScrapped,
)
EMITTED = (LotCreated, LotConsumed, LotStatusChanged, MaterialBelowReorderPoint, MaterialTransactionRefused)
