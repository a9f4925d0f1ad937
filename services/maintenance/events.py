"""The events maintenance consumes and emits, as frozen dataclasses named like their Avro records."""
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


# -- consumed: machines -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class MachineStateChanged(Event):
    equipment_id: str
    state: str
    reason_code: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AlarmRaised(Event):
    equipment_id: str
    alarm_code: str
    severity: str
    text: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AlarmCleared(Event):
    equipment_id: str
    alarm_code: str
    severity: str | None = None
    text: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessValueMeasured(Event):
    equipment_id: str
    parameter: str
    value: float
    unit: str | None = None


# -- consumed: execution ----------------------------------------------------------------------------


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


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeAccumulated(Event):
    equipment_id: str
    period_start: datetime
    period_end: datetime
    runtime_s: float
    cycles: int
    total_runtime_s: float
    total_cycles: int


# -- consumed: plans and technicians ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class MaintenanceTrigger:
    kind: str
    interval_s: float | None = None
    hours: float | None = None
    cycles: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MaintenancePlanDefined(Event):
    plan_id: str
    equipment_id: str
    task: str
    trigger: MaintenanceTrigger

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MaintenancePlanDefined:
        """Avro gives the trigger as a dict; the domain holds a frozen trigger."""
        trigger = record["trigger"]
        return cls(
            event_id=record["event_id"], occurred_at=record["occurred_at"], recorded_at=record["recorded_at"],
            source=record["source"], correlation_id=record.get("correlation_id"), plan_id=record["plan_id"],
            equipment_id=record["equipment_id"], task=record["task"],
            trigger=MaintenanceTrigger(kind=trigger["kind"], interval_s=trigger.get("interval_s"),
                                       hours=trigger.get("hours"), cycles=trigger.get("cycles")))

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "occurred_at": self.occurred_at, "recorded_at": self.recorded_at,
            "source": self.source, "correlation_id": self.correlation_id, "plan_id": self.plan_id,
            "equipment_id": self.equipment_id, "task": self.task,
            "trigger": {"kind": self.trigger.kind, "interval_s": self.trigger.interval_s, "hours": self.trigger.hours,
                        "cycles": self.trigger.cycles},
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class MaintenanceWorkReported(Event):
    work_order_id: str
    status: str
    technician_id: str | None = None


# -- emitted ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkOrderOpened(Event):
    work_order_id: str
    equipment_id: str
    kind: str
    description: str
    failure_id: str | None = None
    failure_started_at: datetime | None = None
    alarm_code: str | None = None
    reason_code: str | None = None
    plan_id: str | None = None
    due_index: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkOrderClosed(Event):
    work_order_id: str
    equipment_id: str
    kind: str
    failure_id: str | None = None
    plan_id: str | None = None
    started_at: datetime | None = None
    work_duration_s: float | None = None
    technician_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PreventiveMaintenanceDue(Event):
    plan_id: str
    revision: int
    due_index: int
    equipment_id: str
    task: str
    trigger_kind: str
    due_at: datetime | None = None
    due_runtime_h: float | None = None
    due_cycles: int | None = None
    work_order_id: str


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
class MaintenanceInputRefused(Event):
    subject: str
    refused_event_id: str
    refused_event_type: str
    reason: str
    equipment_id: str | None = None


CONSUMED = (
    MachineStateChanged, AlarmRaised, AlarmCleared, ProcessValueMeasured,
    DowntimeStarted, DowntimeEnded, RuntimeAccumulated,
    MaintenancePlanDefined, MaintenanceWorkReported,
)
EMITTED = (
    WorkOrderOpened, WorkOrderClosed, PreventiveMaintenanceDue, EquipmentLockedOut, EquipmentReleased,
    MaintenanceInputRefused,
)
