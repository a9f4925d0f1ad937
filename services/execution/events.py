"""The events execution consumes and emits, as frozen dataclasses named like their Avro records."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    correlation_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MachineStateChanged(Event):
    equipment_id: str
    state: str
    reason_code: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PartsProduced(Event):
    equipment_id: str
    good: int
    reject: int
    order_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DowntimeStarted(Event):
    equipment_id: str
    state: str
    reason_code: str | None = None
    classification: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DowntimeEnded(Event):
    equipment_id: str
    state: str
    reason_code: str | None = None
    started_at: datetime
    duration_s: float
    classification: str | None = None



# Production orders and operations: products, orders and their operations (services/execution/orders.py).


@dataclass(frozen=True, kw_only=True, slots=True)
class BomLine:
    material_id: str
    quantity_per_unit: float


@dataclass(frozen=True, kw_only=True, slots=True)
class RoutingStep:
    operation: str
    equipment_id: str
    ideal_cycle_time_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ProductDefined(Event):
    product_id: str
    name: str
    unit: str | None = None
    ideal_cycle_time_s: float
    bom: tuple[BomLine, ...] = ()
    routing: tuple[RoutingStep, ...] = ()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ProductDefined:
        """Avro gives the BOM and routing as lists of dicts; the domain holds tuples of frozen lines."""
        return cls(
            event_id=record["event_id"],
            occurred_at=record["occurred_at"],
            recorded_at=record["recorded_at"],
            source=record["source"],
            correlation_id=record.get("correlation_id"),
            product_id=record["product_id"],
            name=record["name"],
            unit=record.get("unit"),
            ideal_cycle_time_s=record["ideal_cycle_time_s"],
            bom=tuple(BomLine(material_id=line["material_id"], quantity_per_unit=line["quantity_per_unit"])
                      for line in record.get("bom") or ()),
            routing=tuple(RoutingStep(operation=step["operation"], equipment_id=step["equipment_id"],
                                      ideal_cycle_time_s=step["ideal_cycle_time_s"])
                          for step in record.get("routing") or ()),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at,
            "source": self.source,
            "correlation_id": self.correlation_id,
            "product_id": self.product_id,
            "name": self.name,
            "unit": self.unit,
            "ideal_cycle_time_s": self.ideal_cycle_time_s,
            "bom": [{"material_id": line.material_id, "quantity_per_unit": line.quantity_per_unit}
                    for line in self.bom],
            "routing": [{"operation": step.operation, "equipment_id": step.equipment_id,
                         "ideal_cycle_time_s": step.ideal_cycle_time_s} for step in self.routing],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ProductionOrderReleased(Event):
    order_id: str
    product_id: str
    quantity: float
    due_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OperationStarted(Event):
    order_id: str
    operation: str
    equipment_id: str
    operator_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OperationCompleted(Event):
    order_id: str
    operation: str
    equipment_id: str
    operator_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ScrapReported(Event):
    equipment_id: str
    order_id: str | None = None
    quantity: int
    reason_code: str | None = None
    rework: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterialLoaded(Event):
    equipment_id: str
    order_id: str | None = None
    lot_id: str
    quantity: float


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderStarted(Event):
    order_id: str
    product_id: str
    quantity: float
    due_at: datetime | None = None
    operation: str
    equipment_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderCompleted(Event):
    order_id: str
    product_id: str
    quantity: float
    operation: str
    equipment_id: str
    good: int
    scrap: int
    rework: int
    started_at: datetime
    duration_s: float


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


@dataclass(frozen=True, kw_only=True, slots=True)
class TransitionRefused(Event):
    entity: str
    entity_id: str
    order_id: str
    equipment_id: str | None = None
    attempted: str
    current_status: str | None = None
    reason: str
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class EquipmentRegistered(Event):
    equipment_id: str
    name: str
    parent_id: str | None = None
    level: str
    time_zone: str | None = None
    capacity_per_hour: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ShiftScheduled(Event):
    shift_id: str
    equipment_id: str
    starts_at: datetime
    ends_at: datetime
    breaks: tuple[tuple[datetime, datetime], ...] = ()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ShiftScheduled:
        fields = {k: record.get(k) for k in ("event_id", "occurred_at", "recorded_at", "source", "correlation_id",
                                             "shift_id", "equipment_id", "starts_at", "ends_at")}
        return cls(**fields, breaks=tuple((b["starts_at"], b["ends_at"]) for b in record.get("breaks") or ()))

    def to_record(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in ("event_id", "occurred_at", "recorded_at", "source",
                                                          "correlation_id", "shift_id", "equipment_id",
                                                          "starts_at", "ends_at")}
        record["breaks"] = [{"starts_at": s, "ends_at": e} for s, e in self.breaks]
        return record


@dataclass(frozen=True, kw_only=True, slots=True)
class OperatorSignedIn(Event):
    operator_id: str
    equipment_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class OperatorSignedOut(Event):
    operator_id: str
    equipment_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class DowntimeReasonAssigned(Event):
    equipment_id: str
    since: datetime
    reason_code: str


@dataclass(frozen=True, kw_only=True, slots=True)
class EquipmentLockedOut(Event):
    equipment_id: str
    work_order_id: str
    plan_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class EquipmentReleased(Event):
    equipment_id: str
    work_order_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PeriodElements(Event):
    """The shared body of PeriodClosed and PeriodRevised: a period's ISO 22400 elements."""

    equipment_id: str
    period: str
    period_start: datetime
    period_end: datetime
    shift_id: str | None = None
    version: int
    pot_s: float
    pdot_s: float
    pbt_s: float
    apt_s: float
    asut_s: float
    adet_s: float
    adot_s: float
    aupt_s: float
    aubt_s: float
    aoet_s: float
    apat_s: float
    apwt_s: float
    out_of_shift_s: float
    data_gap_s: float
    ideal_s: float
    pq: int
    gq: int
    sq: int
    rq: int
    covered_until: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class PeriodClosed(PeriodElements):
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class PeriodRevised(PeriodElements):
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeAccumulated(Event):
    equipment_id: str
    period_start: datetime
    period_end: datetime
    runtime_s: float
    cycles: int
    total_runtime_s: float
    total_cycles: int


CONSUMED = (
    EquipmentRegistered, ShiftScheduled, ProductDefined, ProductionOrderReleased,
    MachineStateChanged, PartsProduced,
    OperationStarted, OperationCompleted, OperatorSignedIn, OperatorSignedOut, DowntimeReasonAssigned,
    ScrapReported, MaterialLoaded,
    EquipmentLockedOut, EquipmentReleased,
)
EMITTED = (
    DowntimeStarted, DowntimeEnded, OrderStarted, OrderCompleted, ProductionReported, MaterialConsumed,
    TransitionRefused, PeriodClosed, PeriodRevised, RuntimeAccumulated,
)
