"""Generated payloads for ingest, from the Avro schemas of every canonical input type (schemas/plan,
schemas/machine, schemas/operator): good items, items broken on purpose (each with the field and rule
its refusal must name) and arbitrary JSON. Used by the fuzz tests (tests/unit/test_fuzz_translators.py,
tests/integration/test_fuzz_ingest.py) and by the chaos driver for its bad input.
"""
from __future__ import annotations

import string
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.settings import REPO_ROOT
from services.ingest.translators import ENVELOPE_FIELDS, MAX_STRING_LENGTH, Translator

CATALOGUE = Catalogue.load()
INPUT_TYPES = tuple(sorted(event for topic in CATALOGUE.written_by("ingest") for event in topic.events
                           if event != "EventRejected"))
TIME_ZONES = frozenset(zoneinfo.available_timezones())
ZONE_NAMES = tuple(sorted(TIME_ZONES))
NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # the arrival time the unit tests translate at
RULES = frozenset({"required", "type", "allowed", "format", "minimum", "exclusiveMinimum", "minItems", "minLength",
                   "maxLength", "noNul", "unknown_field", "unknown_type", "future_timestamp", "too_old", "schema"})
# An empty field path names the item itself (an item that is not an object), or a key that is the empty string.
NAMELESS = frozenset({"type", "unknown_field"})
EQUIPMENT_ID = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,8}(\.[a-z0-9][a-z0-9_-]{0,8}){0,5}\Z")
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)  # NUL: refused (noNul)

TRANSLATOR = Translator(CATALOGUE.schemas, INPUT_TYPES, time_zones=TIME_ZONES)
CODEC = codec_for(CATALOGUE, "", REPO_ROOT / "schemas")


# --------------------------------------------------------------------------------------------
# Strategies from the Avro schemas


def timestamps(start: datetime = datetime(2000, 1, 1, tzinfo=UTC), end: datetime = NOW) -> st.SearchStrategy[str]:
    """RFC 3339 UTC strings (Z or +00:00, 0 to 9 fraction digits) in [start, end]."""
    moments = st.datetimes(min_value=start.replace(tzinfo=None), max_value=end.replace(tzinfo=None))

    def render(moment: datetime, digits: int, zulu: bool) -> str:
        fraction = f"{moment.microsecond:06d}{'123'}"[:digits]
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "") + ("Z" if zulu else "+00:00")
    return st.builds(render, moments, st.integers(0, 9), st.booleans())


def _is_timestamp(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("logicalType") == "timestamp-micros"


@dataclass(frozen=True)
class Tame:
    """Narrower good values for a live system whose topics other tests read: ids under a prefix, event
    times within one hour, moderate numbers (the full ranges are fuzzed against the translator alone)."""
    prefix: str
    hour: datetime


def value_of(avro_type: Any, attributes: Mapping[str, Any], named: dict[str, Any],
             tame: Tame | None = None) -> st.SearchStrategy[Any]:
    """A valid JSON value for an Avro type with the schema's extra attributes (allowed, format, minimum ...)."""
    if isinstance(avro_type, list):
        (inner,) = [t for t in avro_type if t != "null"]
        return st.one_of(st.none(), value_of(inner, attributes, named, tame))
    if _is_timestamp(avro_type):
        return timestamps(tame.hour, tame.hour + timedelta(hours=1)) if tame else timestamps()
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "array":
            return st.lists(value_of(avro_type["items"], {}, named, tame), min_size=attributes.get("minItems", 0),
                            max_size=3)
        if kind == "record":
            named[avro_type["name"]] = avro_type
            return record_of(avro_type["fields"], named, tame)
        return value_of(kind, attributes, named, tame)
    if avro_type == "string":
        if "allowed" in attributes:
            return st.sampled_from(attributes["allowed"])
        if attributes.get("format") == "equipment_id":
            return EQUIPMENT_ID.map(lambda v: f"{tame.prefix}.{v}") if tame else EQUIPMENT_ID
        if attributes.get("format") == "iana_time_zone":
            return st.sampled_from(ZONE_NAMES)
        return TEXT.map(lambda v: f"{tame.prefix}-{v}") if tame else TEXT
    if avro_type in ("long", "int"):
        low = attributes.get("minimum")
        if "exclusiveMinimum" in attributes:
            low = attributes["exclusiveMinimum"] + 1
        high = 10**6 if tame else 2**63 - 1
        ints = st.integers(min_value=low if low is not None else -high, max_value=high)
        return st.one_of(ints, st.integers(min_value=max(low or 0, 0), max_value=10**6).map(float))  # 3.0 is an integer
    if avro_type in ("double", "float"):
        low = attributes.get("minimum", attributes.get("exclusiveMinimum"))
        return st.floats(min_value=low, exclude_min="exclusiveMinimum" in attributes, allow_nan=False,
                         allow_infinity=False, max_value=1e6 if tame else 1e12)
    if avro_type == "boolean":
        return st.booleans()
    name = avro_type.rsplit(".", 1)[-1]
    return record_of(named[name]["fields"], named, tame)


def _optional(spec: Mapping[str, Any]) -> bool:
    return "default" in spec or (isinstance(spec["type"], list) and "null" in spec["type"])


def record_of(fields: list[Mapping[str, Any]], named: dict[str, Any], tame: Tame | None = None) -> st.SearchStrategy[dict]:
    required = {f["name"]: value_of(f["type"], f, named, tame) for f in fields if not _optional(f)}
    optional = {f["name"]: value_of(f["type"], f, named, tame) for f in fields if _optional(f)}
    return st.fixed_dictionaries(required, optional=optional)


def body_fields(event_type: str) -> list[Mapping[str, Any]]:
    return CATALOGUE.schemas[event_type]["fields"][len(ENVELOPE_FIELDS):]


def _event(event_type: str, tame: Tame | None = None) -> st.SearchStrategy[dict]:
    envelope = st.fixed_dictionaries(
        {"type": st.just(event_type), "event_id": st.text(string.ascii_letters + string.digits + "-:.", min_size=1, max_size=60),
         "occurred_at": timestamps(tame.hour, tame.hour + timedelta(hours=1)) if tame else timestamps()},
        optional={"source": st.text(string.ascii_letters, min_size=1, max_size=20),
                  "correlation_id": st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30))})
    return st.builds(lambda e, b: {**e, **b}, envelope, record_of(body_fields(event_type), {}, tame))


GOOD = {event_type: _event(event_type) for event_type in INPUT_TYPES}


def good_events(tame: Tame | None = None) -> st.SearchStrategy[dict]:
    """A valid item of any canonical input type."""
    if tame is None:
        return st.sampled_from(INPUT_TYPES).flatmap(lambda t: GOOD[t])
    tamed = {t: _event(t, tame) for t in INPUT_TYPES}
    return st.sampled_from(INPUT_TYPES).flatmap(lambda t: tamed[t])


# --------------------------------------------------------------------------------------------
# Breaking a good item on purpose: (item, the field and rule its refusal must name)


def _wrong_type(avro_type: Any) -> Any:
    core = [t for t in avro_type if t != "null"][0] if isinstance(avro_type, list) else avro_type
    if _is_timestamp(core):
        return 1_700_000_000
    kind = core["type"] if isinstance(core, dict) else core
    return {"string": 42, "long": "12", "int": 1.5, "double": "1.0", "boolean": 1, "array": {"a": 1},
            "record": ["x"]}.get(kind, ["x"])


def breakings(event: dict) -> list[tuple[Any, str, str]]:
    """Every way this generator breaks a good item, each with the (field, rule) it must be refused for."""
    event_type = event["type"]
    fields = body_fields(event_type)
    broken: list[tuple[Any, str, str]] = [
        ([event], "", "type"),
        ({k: v for k, v in event.items() if k != "type"}, "type", "required"),
        ({**event, "type": event_type + "X"}, "type", "unknown_type"),
        ({**event, "type": 7}, "type", "type"),
        ({k: v for k, v in event.items() if k != "event_id"}, "event_id", "required"),
        ({**event, "event_id": ""}, "event_id", "minLength"),
        ({**event, "event_id": "e" * 201}, "event_id", "maxLength"),
        ({**event, "event_id": 12}, "event_id", "type"),
        ({k: v for k, v in event.items() if k != "occurred_at"}, "occurred_at", "required"),
        ({**event, "occurred_at": "2026-11-02 06:00:00"}, "occurred_at", "format"),
        ({**event, "occurred_at": "2026-02-30T06:00:00Z"}, "occurred_at", "format"),
        ({**event, "occurred_at": "2026-11-02T06:00:00+01:00"}, "occurred_at", "format"),
        ({**event, "occurred_at": "2027-01-01T00:00:00Z"}, "occurred_at", "future_timestamp"),
        ({**event, "occurred_at": "1999-12-31T23:59:59Z"}, "occurred_at", "too_old"),
        ({**event, "recorded_at": "2026-11-02T06:00:00Z"}, "recorded_at", "unknown_field"),
        ({**event, "zz_not_a_field": 1}, "zz_not_a_field", "unknown_field"),
        ({**event, "source": ""}, "source", "format"),
        ({**event, "correlation_id": 5}, "correlation_id", "type"),
        ({**event, "correlation_id": "c" * 201}, "correlation_id", "maxLength"),
        ({**event, "event_id": "e\x00"}, "event_id", "noNul"),
        ({**event, "source": "plc\x00"}, "source", "noNul"),
        ({**event, "correlation_id": "\x00"}, "correlation_id", "noNul"),
    ]
    for spec in fields:
        name, avro_type = spec["name"], spec["type"]
        if not _optional(spec):
            broken.append(({k: v for k, v in event.items() if k != name}, name, "required"))
        broken.append(({**event, name: _wrong_type(avro_type)}, name, "type"))
        if not isinstance(avro_type, list):
            broken.append(({**event, name: None}, name, "type"))
        core = [t for t in avro_type if t != "null"][0] if isinstance(avro_type, list) else avro_type
        if "allowed" in spec:
            broken.append(({**event, name: "NOT-" + spec["allowed"][0]}, name, "allowed"))
        if spec.get("format") in ("equipment_id", "iana_time_zone"):
            broken.append(({**event, name: "Not A/Valid Id!"}, name, "format"))
        if core == "string":
            broken.append(({**event, name: "x" * (MAX_STRING_LENGTH + 1)}, name, "maxLength"))
            broken.append(({**event, name: "x\x00"}, name, "noNul"))
        if "minimum" in spec:
            broken.append(({**event, name: spec["minimum"] - 1}, name, "minimum"))
        if "exclusiveMinimum" in spec:
            broken.append(({**event, name: spec["exclusiveMinimum"]}, name, "exclusiveMinimum"))
        if "minItems" in spec:
            broken.append(({**event, name: []}, name, "minItems"))
        if core in ("long", "int") and not isinstance(avro_type, list):
            broken.append(({**event, name: 2**64}, name, "type"))
        if core in ("double", "float"):
            broken.append(({**event, name: float("nan")}, name, "type"))
        if _is_timestamp(core):
            broken.append(({**event, name: "yesterday"}, name, "format"))
    return broken


def bad_events(tame: Tame | None = None) -> st.SearchStrategy[tuple[Any, str, str]]:
    """A good item broken in one way: (item, field, rule)."""
    return good_events(tame).flatmap(lambda e: st.sampled_from(breakings(e)))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=5),
                    max_leaves=12)


def arbitrary_items() -> st.SearchStrategy[Any]:
    """Any JSON, and objects that look like events (a real type, some real and some made-up fields)."""
    lookalike = st.builds(lambda t, extra: {"type": t, **extra}, st.sampled_from(INPUT_TYPES),
                          st.dictionaries(st.sampled_from(["event_id", "occurred_at", "equipment_id", "state", "good",
                                                           "order_id", "quantity", "lot_id", "x"]), JSON, max_size=6))
    return st.one_of(JSON, lookalike)


