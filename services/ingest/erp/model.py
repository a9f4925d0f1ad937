"""What the ERP parsers produce, pure: canonical plan events with the line they came from, and refusals."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

SOURCE = "erp-import"


@dataclass(frozen=True, slots=True)
class Row:
    """One canonical event and where it came from (file and 1-based line)."""
    file: str
    line: int
    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowError:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ParseResult:
    rows: list[Row] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    def extend(self, other: ParseResult) -> None:
        self.rows.extend(other.rows)
        self.errors.extend(other.errors)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> str:
    """An RFC 3339 / ISO 8601 date-time (UTC when it has no offset) as ingest's UTC form; ValueError."""
    text = text.strip()
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return rfc3339(moment)


def event(event_type: str, key: str, occurred_at: str, body: dict[str, Any]) -> dict[str, Any]:
    """A canonical plan event whose id is its type, key and a digest of its content: importing the same
    export again gives the same ids (applied once), a changed row a new event."""
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return {"type": event_type, "event_id": f"erp:{event_type}:{key}:{digest}", "occurred_at": occurred_at,
            "source": SOURCE, **body}


def number(text: str, what: str, *, positive: bool = True) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be a finite number, got {text!r}")
    if positive and value <= 0:
        raise ValueError(f"{what} must be greater than 0, got {text!r}")
    return value
