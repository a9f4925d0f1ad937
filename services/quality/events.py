"""The events quality consumes and emits, as frozen dataclasses named like their Avro records."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ENVELOPE = ("event_id", "occurred_at", "recorded_at", "source", "correlation_id")


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    correlation_id: str | None = None


# -- consumed ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Characteristic:
    characteristic_id: str
    name: str
    kind: str                      # variable | attribute
    lsl: float | None = None
    usl: float | None = None
    target: float | None = None
    sigma: float | None = None
    unit: str | None = None
    sample_size: int = 1
    every_n_parts: int = 1
    sampling: str | None = None    # every_n_parts (default) | per_lot | order_start


CHARACTERISTIC_FIELDS = ("characteristic_id", "name", "kind", "lsl", "usl", "target", "sigma", "unit", "sample_size",
                         "every_n_parts", "sampling")


@dataclass(frozen=True, kw_only=True, slots=True)
class InspectionPlanDefined(Event):
    plan_id: str
    product_id: str
    operation: str
    characteristics: tuple[Characteristic, ...] = ()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> InspectionPlanDefined:
        return cls(**{k: record.get(k) for k in (*ENVELOPE, "plan_id", "product_id", "operation")},
                   characteristics=tuple(Characteristic(**{k: c.get(k) for k in CHARACTERISTIC_FIELDS if k in c})
                                         for c in record.get("characteristics") or ()))

    def to_record(self) -> dict[str, Any]:
        record = {k: getattr(self, k) for k in (*ENVELOPE, "plan_id", "product_id", "operation")}
        record["characteristics"] = [{k: getattr(c, k) for k in CHARACTERISTIC_FIELDS} for c in self.characteristics]
        return record


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderStarted(Event):
    order_id: str
    product_id: str
    quantity: float
    due_at: datetime | None = None
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
class ScrapReported(Event):
    equipment_id: str
    order_id: str | None = None
    quantity: int
    reason_code: str | None = None
    rework: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class InspectionRecorded(Event):
    characteristic_id: str
    plan_id: str
    equipment_id: str | None = None
    order_id: str | None = None
    lot_id: str | None = None
    values: list[float] | None = None
    passed: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LotDispositioned(Event):
    lot_id: str
    disposition: str               # RELEASE | SCRAP | REWORK
    nonconformance_id: str | None = None


# -- emitted -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class InspectionDue(Event):
    plan_id: str
    characteristic_id: str
    product_id: str
    operation: str
    order_id: str
    lot_id: str | None = None
    equipment_id: str | None = None
    reason: str
    parts_produced: int
    sample_size: int
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ControlLimitsChanged(Event):
    plan_id: str
    characteristic_id: str
    version: int
    limits_source: str
    subgroup_size: int
    centre: float
    sigma: float
    ucl: float
    lcl: float
    range_centre: float
    range_ucl: float
    range_lcl: float
    within_sigma: float
    baseline_subgroups: int
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SpcRuleViolated(Event):
    plan_id: str
    characteristic_id: str
    chart: str
    rule: int
    rule_text: str
    limits_version: int
    point: int
    value: float
    centre: float
    sigma: float
    equipment_id: str | None = None
    order_id: str | None = None
    lot_id: str | None = None
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class NonconformanceOpened(Event):
    nonconformance_id: str
    plan_id: str
    characteristic_id: str
    lot_id: str | None = None
    equipment_id: str | None = None
    order_id: str | None = None
    reason: str
    values_outside: int
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class NonconformanceClosed(Event):
    nonconformance_id: str
    lot_id: str | None = None
    disposition: str
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LotHeld(Event):
    lot_id: str
    nonconformance_id: str
    equipment_id: str | None = None
    order_id: str | None = None
    reason: str
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LotDisposition(Event):
    """The shared body of the three ends of a hold."""

    lot_id: str
    nonconformance_ids: list[str]
    caused_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LotReleased(LotDisposition):
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class LotScrapped(LotDisposition):
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class LotSentToRework(LotDisposition):
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class QualityInputRefused(Event):
    subject_id: str
    refused_type: str
    reason: str
    caused_by: str


CONSUMED = (InspectionPlanDefined, OrderStarted, ProductionReported, ScrapReported, InspectionRecorded, LotDispositioned)
EMITTED = (InspectionDue, ControlLimitsChanged, SpcRuleViolated, NonconformanceOpened, NonconformanceClosed, LotHeld,
           LotReleased, LotScrapped, LotSentToRework, QualityInputRefused)
