"""The event ingest emits of its own: EventRejected, one per refused input item (mom.ingest schemas)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RejectionError:
    """One reason an item was refused: the JSON path of the field, the rule broken, an explanation."""

    field: str
    rule: str
    message: str

    def to_record(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


@dataclass(frozen=True, slots=True)
class EventRejected:
    """Ingest refused one item of a request; the item is kept verbatim with the reasons."""

    event_id: str               # rejected:<request_id>:<index>, so a re-published rejection keeps its id
    occurred_at: datetime       # when ingest refused it (= recorded_at)
    recorded_at: datetime
    source: str                 # the client that posted the item; the Kafka key
    correlation_id: str | None
    request_id: str
    index: int
    event_type: str | None      # the `type` the item claimed, None when it had none
    errors: tuple[RejectionError, ...]
    payload: str                # the original item, verbatim JSON text

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at,
            "source": self.source,
            "correlation_id": self.correlation_id,
            "request_id": self.request_id,
            "index": self.index,
            "event_type": self.event_type,
            "errors": [error.to_record() for error in self.errors],
            "payload": self.payload,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EventRejected:
        return cls(
            event_id=record["event_id"],
            occurred_at=record["occurred_at"],
            recorded_at=record["recorded_at"],
            source=record["source"],
            correlation_id=record.get("correlation_id"),
            request_id=record["request_id"],
            index=record["index"],
            event_type=record.get("event_type"),
            errors=tuple(RejectionError(**error) for error in record["errors"]),
            payload=record["payload"],
        )
