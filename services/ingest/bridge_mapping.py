"""Tag readings -> canonical JSON events, pure: the mapping rules of the bridges.

A reading is (equipment, tag, value, timestamp) from any bridge (MQTT JSON, Sparkplug B, OPC UA). Its
rule says what it becomes: a state tag a `MachineStateChanged` (when the state changes), a counter
tag a `PartsProduced` with the increase since the previous reading (a counter that went down was
reset and counts from 0, or wrapped at its `rollover`), an analog tag a `ProcessValueMeasured`. A
reason tag makes nothing itself: its text is the `reason_code` of the unit's state change with the
same timestamp (read before it; an empty text is no reason).

Event ids are derived from the reading (origin, equipment, tag, timestamp, value), never from
arrival or a random source, so a reading delivered again (MQTT redelivery, a bridge restart before
the buffer's offset was committed, an OPC UA resubscription) gives the same id and is applied once.
The items are ingest's canonical JSON; they are validated by ingest's translator like any HTTP item.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.ingest.bridge_config import BridgeConfig, Equipment, TagRule

MAX_EVENT_ID = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339_ms(timestamp_ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=timestamp_ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_id(*parts: Any) -> str:
    """Parts joined by ':'; when too long for ingest, a prefix and a SHA-256 of the whole."""
    text = ":".join(str(p) for p in parts)
    if len(text) <= MAX_EVENT_ID:
        return text
    return f"{parts[0]}:{hashlib.sha256(text.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class Reading:
    origin: str                  # mqtt | sparkplug | opcua: part of the event id
    equipment_id: str
    tag: str
    value: Any
    timestamp_ms: int
    reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """A unit went offline (a death certificate): becomes MachineStateChanged OFFLINE; `cause` makes the id."""
    origin: str
    equipment_id: str
    timestamp_ms: int
    cause: str
    reason_code: str


def _value_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Mapper:
    """Turns readings into canonical events; keeps the last value per counter and state tag.

    `state()` / `restore()` carry that memory across a restart (the bridge stores it next to its
    buffer), so the first count after a restart still gives the increase since the last one before it.
    """

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self._equipment = {e.equipment_id: e for e in config.equipment}
        self._last: dict[str, Any] = {}   # "<equipment>|<tag>" -> last value (counters, states)

    def equipment(self, equipment_id: str) -> Equipment | None:
        return self._equipment.get(equipment_id)

    def rule(self, equipment_id: str, tag: str) -> TagRule | None:
        return self.config.rule(self._equipment.get(equipment_id), tag)

    def state(self) -> dict[str, Any]:
        return dict(self._last)

    def restore(self, state: Mapping[str, Any]) -> None:
        self._last = dict(state)

    def map(self, reading: Reading | Outage) -> list[dict[str, Any]]:
        """The events of one reading: none (unmapped tag, unchanged state, first counter value) or one."""
        if isinstance(reading, Outage):
            return [self.offline(reading.origin, reading.equipment_id, reading.timestamp_ms, reading.cause,
                                 reading.reason_code)]
        rule = self.rule(reading.equipment_id, reading.tag)
        if rule is None or reading.value is None:  # no rule, or no value yet (an OPC UA null)
            return []
        if rule.kind == "state":
            return self._state(rule, reading)
        if rule.kind == "counter":
            return self._counter(rule, reading)
        if rule.kind == "reason":
            self._last[f"{reading.equipment_id}|reason"] = [_value_text(reading.value).strip(), reading.timestamp_ms]
            return []
        return self._analog(rule, reading)

    def offline(self, origin: str, equipment_id: str, timestamp_ms: int, cause: str, reason_code: str) -> dict[str, Any]:
        """MachineStateChanged OFFLINE for a death certificate or a lost connection; `cause` makes the id."""
        self._last[f"{equipment_id}|state"] = "OFFLINE"
        return self._envelope("MachineStateChanged", event_id(origin, equipment_id, "offline", cause),
                              timestamp_ms, equipment_id=equipment_id, state="OFFLINE", reason_code=reason_code)

    # ------------------------------------------------------------------------------------------

    def _envelope(self, event_type: str, the_id: str, timestamp_ms: int, **body: Any) -> dict[str, Any]:
        return {"type": event_type, "event_id": the_id, "occurred_at": rfc3339_ms(timestamp_ms),
                "source": self.config.source, **body}

    def _state(self, rule: TagRule, reading: Reading) -> list[dict[str, Any]]:
        raw = reading.value
        if isinstance(raw, str):
            text = raw.strip()
            state = rule.states.get(text, text.upper())
        else:
            state = rule.states.get(_value_text(raw), _value_text(raw))
        key = f"{reading.equipment_id}|{rule.tag}"
        last_key = f"{reading.equipment_id}|state"
        if self._last.get(last_key) == state and self._last.get(key) == state:
            return []
        self._last[key] = self._last[last_key] = state
        body: dict[str, Any] = {"equipment_id": reading.equipment_id, "state": state}
        reason = reading.reason_code or self._reason_at(reading.equipment_id, reading.timestamp_ms)
        if reason:
            body["reason_code"] = reason
        return [self._envelope("MachineStateChanged",
                               event_id(reading.origin, reading.equipment_id, rule.tag, reading.timestamp_ms, state),
                               reading.timestamp_ms, **body)]

    def _reason_at(self, equipment_id: str, timestamp_ms: int) -> str | None:
        """The unit's reason reading of this instant: a reason read for an earlier change never carries over."""
        text, at = self._last.get(f"{equipment_id}|reason") or (None, None)
        return text if at == timestamp_ms and text else None

    def _counter(self, rule: TagRule, reading: Reading) -> list[dict[str, Any]]:
        value = reading.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            # not a count: let ingest refuse it, with the reason, onto the dead-letter topic
            return [self._envelope("PartsProduced", event_id(reading.origin, reading.equipment_id, rule.tag,
                                                             reading.timestamp_ms, "invalid"),
                                   reading.timestamp_ms, equipment_id=reading.equipment_id,
                                   good=value if rule.counter_field == "good" else 0,
                                   reject=value if rule.counter_field == "reject" else 0)]
        value = int(value)
        key = f"{reading.equipment_id}|{rule.tag}"
        last = self._last.get(key)
        self._last[key] = value
        if last is None:
            return []  # the baseline: what was counted before it is not known
        delta = counter_delta(last, value, rule.rollover)
        if delta == 0:
            return []
        counts = {"good": 0, "reject": 0, rule.counter_field: delta}
        return [self._envelope("PartsProduced",
                               event_id(reading.origin, reading.equipment_id, rule.tag, reading.timestamp_ms, value),
                               reading.timestamp_ms, equipment_id=reading.equipment_id, **counts)]

    def _analog(self, rule: TagRule, reading: Reading) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"equipment_id": reading.equipment_id, "parameter": rule.parameter,
                                "value": reading.value}
        if rule.unit:
            body["unit"] = rule.unit
        return [self._envelope("ProcessValueMeasured",
                               event_id(reading.origin, reading.equipment_id, rule.tag, reading.timestamp_ms),
                               reading.timestamp_ms, **body)]


def counter_delta(last: int, value: int, rollover: int | None) -> int:
    """The parts counted between two readings of a counter.

    Up: the difference. Down: with a `rollover` and a drop of more than half its range the counter
    wrapped (rollover - last + value); otherwise it was reset to 0 and counted `value` since.
    """
    if value >= last:
        return value - last
    if rollover is not None and last - value > rollover // 2:
        return rollover - last + value
    return value
