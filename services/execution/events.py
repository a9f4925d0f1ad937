"""The events execution consumes and emits, as frozen dataclasses named like their Avro records."""
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


@dataclass(frozen=True, kw_only=True, slots=True)
class DowntimeEnded(Event):
    equipment_id: str
    state: str
    reason_code: str | None = None
    started_at: datetime
    duration_s: float


CONSUMED = (MachineStateChanged, PartsProduced)
EMITTED = (DowntimeStarted, DowntimeEnded)
