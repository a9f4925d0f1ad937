"""Every event schema: parses, starts with the envelope, is documented, follows the conventions, round-trips."""

import io
import re
from datetime import UTC, datetime

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.catalogue import Catalogue

CATALOGUE = Catalogue.load()
EVENT_TYPES = sorted(CATALOGUE.schemas)
ENVELOPE_NAMES = ["event_id", "occurred_at", "recorded_at", "source", "correlation_id"]
TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}
EQUIPMENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$")
KNOWN_FORMATS = {"equipment_id", "iana_time_zone"}
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
EVENT_NAME = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*$")


def _all_fields(schema: dict, path: str = ""):
    """(json path, field) for every field, including those of nested records."""
    for avro_field in schema["fields"]:
        here = path + avro_field["name"]
        yield here, avro_field
        nested = _nested_record(avro_field["type"])
        if nested is not None:
            yield from _all_fields(nested, here + ".")


def _nested_record(avro_type):
    if isinstance(avro_type, list):
        return next((r for r in map(_nested_record, avro_type) if r is not None), None)
    if isinstance(avro_type, dict):
        if avro_type["type"] == "record":
            return avro_type
        if avro_type["type"] == "array":
            return _nested_record(avro_type["items"])
    return None


def _value_type(avro_type):
    """The type of a field's value when present: the non-null branch of an optional field."""
    if isinstance(avro_type, list):
        (present,) = [t for t in avro_type if t != "null"]
        return present
    return avro_type


def _base(avro_type) -> str:
    value = _value_type(avro_type)
    return value if isinstance(value, str) else value["type"]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_parses_with_fastavro_and_names_match(event_type):
    schema = CATALOGUE.schemas[event_type]
    parsed = fastavro.parse_schema(schema, named_schemas={})
    assert parsed["name"].endswith("." + event_type)
    assert EVENT_NAME.match(event_type), f"{event_type}: event names are PascalCase"


def test_envelope_is_the_documented_five_fields():
    envelope = CATALOGUE.envelope
    assert envelope["name"] == "Envelope" and envelope["namespace"] == "mom.common"
    assert [f["name"] for f in envelope["fields"]] == ENVELOPE_NAMES
    types = {f["name"]: f["type"] for f in envelope["fields"]}
    assert types == {"event_id": "string", "occurred_at": TIMESTAMP, "recorded_at": TIMESTAMP,
                     "source": "string", "correlation_id": ["null", "string"]}
    assert envelope["fields"][4]["default"] is None
    fastavro.parse_schema(envelope, named_schemas={})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_schema_starts_with_the_envelope_fields_exactly(event_type):
    fields = CATALOGUE.schemas[event_type]["fields"]
    assert fields[: len(ENVELOPE_NAMES)] == CATALOGUE.envelope["fields"]
    assert not set(ENVELOPE_NAMES) & {f["name"] for f in fields[len(ENVELOPE_NAMES):]}
    assert len(fields) > len(ENVELOPE_NAMES), f"{event_type} has no body"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_record_and_field_has_a_doc(event_type):
    schema = CATALOGUE.schemas[event_type]
    assert len(schema.get("doc", "").strip()) >= 20, f"{event_type}: record doc"
    for path, avro_field in _all_fields(schema):
        assert len(avro_field.get("doc", "").strip()) >= 10, f"{event_type}.{path}: field doc"
        nested = _nested_record(avro_field["type"])
        if nested is not None:
            assert nested.get("doc", "").strip(), f"{event_type}.{path}: nested record doc"
            assert nested["namespace"] == schema["namespace"], f"{event_type}.{path}: nested namespace"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_fields_follow_the_type_conventions(event_type):
    for path, avro_field in _all_fields(CATALOGUE.schemas[event_type]):
        name, avro_type = avro_field["name"], avro_field["type"]
        where = f"{event_type}.{path}"
        assert SNAKE_CASE.match(name), f"{where}: snake_case names"
        if isinstance(avro_type, list):
            assert avro_type[0] == "null" and len(avro_type) == 2, f"{where}: optional is ['null', T]"
            assert avro_field.get("default", "missing") is None, f"{where}: optional defaults to null"
        assert _base(avro_type) != "enum", f"{where}: enumerations are strings with 'allowed'"
        if name.endswith("_s"):
            assert _base(avro_type) == "double", f"{where}: durations are double seconds"
        if name.endswith("_at") or name == "since":
            assert _value_type(avro_type) == TIMESTAMP, f"{where}: instants are timestamp-micros"
        if name.endswith("_id") and name != "event_id":
            assert _base(avro_type) == "string", f"{where}: ids are strings"
        if name in ("good", "reject"):
            assert avro_type == "long", f"{where}: counts are long"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_custom_attributes_are_used_consistently(event_type):
    for path, avro_field in _all_fields(CATALOGUE.schemas[event_type]):
        where, base = f"{event_type}.{path}", _base(avro_field["type"])
        if "allowed" in avro_field:
            allowed = avro_field["allowed"]
            assert base == "string" and allowed and len(set(allowed)) == len(allowed), where
            assert all(f"`{value}`" in avro_field["doc"] for value in allowed), f"{where}: doc lists the values"
        if "format" in avro_field:
            assert avro_field["format"] in KNOWN_FORMATS and base == "string", where
        for bound in ("minimum", "exclusiveMinimum"):
            if bound in avro_field:
                assert base in ("long", "double") and isinstance(avro_field[bound], (int, float)), where
        if "minItems" in avro_field:
            assert base == "array" and avro_field["minItems"] >= 1, where
        if avro_field["name"] == "equipment_id" or avro_field["name"] == "parent_id":
            assert avro_field.get("format") == "equipment_id", f"{where}: equipment ids carry their format"
        if avro_field["name"] in ("good", "reject", "quantity", "duration_s") or avro_field["name"].endswith("_time_s"):
            assert "minimum" in avro_field or "exclusiveMinimum" in avro_field, f"{where}: no negative amounts"


def test_the_equipment_id_rule_is_documented_and_matches_the_examples():
    assert EQUIPMENT_ID.pattern in CATALOGUE.envelope["doc"]
    assert EQUIPMENT_ID.match("acme.berlin.assembly.line1.press07")
    assert not EQUIPMENT_ID.match("ACME.Berlin") and not EQUIPMENT_ID.match("acme..line1")


# Round trip: a record generated from each schema survives fastavro's schemaless write and read.

_INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
_PRIMITIVES = {
    "string": st.text(max_size=20),
    "long": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "double": st.floats(allow_nan=False),
    "boolean": st.booleans(),
    "null": st.none(),
}


def records_of(avro_type) -> st.SearchStrategy:
    """Values of an Avro type as fastavro returns them (timestamps as aware datetimes)."""
    if isinstance(avro_type, list):
        return st.one_of([records_of(branch) for branch in avro_type])
    if isinstance(avro_type, str):
        return _PRIMITIVES[avro_type]
    if avro_type.get("logicalType") == "timestamp-micros":
        return _INSTANTS
    if avro_type["type"] == "array":
        return st.lists(records_of(avro_type["items"]), max_size=3)
    if avro_type["type"] == "record":
        return st.fixed_dictionaries({f["name"]: records_of(f["type"]) for f in avro_type["fields"]})
    return _PRIMITIVES[avro_type["type"]]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_schema_round_trips_a_generated_record(event_type):
    schema = CATALOGUE.schemas[event_type]
    parsed = fastavro.parse_schema(schema, named_schemas={})

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(records_of(schema))
    def round_trip(record):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record)
        buffer.seek(0)
        assert fastavro.schemaless_reader(buffer, parsed, parsed) == record

    round_trip()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_schema_fills_its_defaults_when_an_optional_field_is_absent(event_type):
    """An old writer's record lacking the optional fields reads as nulls / defaults (the evolution path)."""
    schema = CATALOGUE.schemas[event_type]
    required_only = dict(schema, fields=[f for f in schema["fields"] if "default" not in f])
    writer = fastavro.parse_schema(required_only, named_schemas={})
    reader = fastavro.parse_schema(schema, named_schemas={})
    record = {f["name"]: _minimal(f["type"]) for f in required_only["fields"]}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer, record)
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, writer, reader)
    for avro_field in schema["fields"]:
        if "default" in avro_field:
            assert read[avro_field["name"]] == avro_field["default"]


def _minimal(avro_type):
    if isinstance(avro_type, list):
        return None
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-micros":
            return datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
        if avro_type["type"] == "array":
            return []
        if avro_type["type"] == "record":
            return {f["name"]: _minimal(f["type"]) for f in avro_type["fields"]}
        return _minimal(avro_type["type"])
    return {"string": "x", "long": 1, "int": 1, "double": 1.0, "boolean": True}[avro_type]
