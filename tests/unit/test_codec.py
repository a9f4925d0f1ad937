"""The Avro codec: both framings round-trip, foreign bytes are refused with a reason."""
import dataclasses
import io
import json
import struct
from datetime import UTC, datetime, timedelta

import fastavro
import pytest

from services.common.avro import (
    CONFLUENT_MAGIC,
    DecodeError,
    EventMapper,
    SingleObjectCodec,
    _slot_setters,
    _utc_from_micros,
    codec_for,
)
from services.common.catalogue import Catalogue
from services.common.settings import REPO_ROOT
from services.execution.events import DowntimeEnded, MachineStateChanged

CATALOGUE = Catalogue.load()
AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
RECORD = {"event_id": "press07-000123", "occurred_at": AT, "recorded_at": AT, "source": "plc-gw-1",
          "correlation_id": None, "equipment_id": "acme.berlin.assembly.line1.press07", "state": "DOWN",
          "reason_code": "JAM"}


def test_single_object_round_trip_keeps_every_field():
    codec = codec_for(CATALOGUE, "", REPO_ROOT / "schemas")
    data = codec.encode("MachineStateChanged", RECORD)
    assert data[:2] == b"\xc3\x01"
    assert codec.decode(data) == ("MachineStateChanged", RECORD)


def test_single_object_refuses_foreign_and_corrupt_bytes():
    codec = SingleObjectCodec(CATALOGUE)
    with pytest.raises(DecodeError, match="single-object"):
        codec.decode(b'{"json": true}')
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        codec.decode(b"\xc3\x01" + b"\x00" * 8 + b"\x02")
    good = codec.encode("MachineStateChanged", RECORD)
    with pytest.raises(DecodeError, match="MachineStateChanged"):
        codec.decode(good[:14])


def test_every_event_type_has_a_distinct_fingerprint():
    codec = SingleObjectCodec(CATALOGUE)
    headers = {codec.encode(t, _minimal(t))[:10] for t in ("MachineStateChanged", "PartsProduced")}
    assert len(headers) == 2


def test_an_older_released_writer_schema_is_still_readable(tmp_path):
    # Given a released schema without a field that the current schema adds with a default
    released = json.loads((REPO_ROOT / "schemas/machine/MachineStateChanged.avsc").read_text())
    (tmp_path / "released" / "machine").mkdir(parents=True)
    (tmp_path / "released" / "machine" / "MachineStateChanged.avsc").write_text(json.dumps(released))
    raw = dict(CATALOGUE.schemas)
    evolved = json.loads(json.dumps(released))
    evolved["fields"].append({"name": "shift_id", "type": ["null", "string"], "default": None, "doc": "test"})
    raw["MachineStateChanged"] = evolved
    current = Catalogue(topics=CATALOGUE.topics, schemas=raw)
    old_writer = SingleObjectCodec(CATALOGUE)
    new_reader = SingleObjectCodec(current, tmp_path)
    # When data written with the old schema is read by the new codec
    event_type, record = new_reader.decode(old_writer.encode("MachineStateChanged", RECORD))
    # Then the new field takes its default and the rest is intact
    assert event_type == "MachineStateChanged"
    assert record["shift_id"] is None and record["state"] == "DOWN"


def test_registry_framing_is_refused_by_single_object_and_vice_versa():
    codec = SingleObjectCodec(CATALOGUE)
    with pytest.raises(DecodeError):
        codec.decode(CONFLUENT_MAGIC + struct.pack(">I", 7) + b"\x02")


def test_mapper_turns_records_into_frozen_events_and_back():
    mapper = EventMapper([MachineStateChanged, DowntimeEnded])
    event = mapper.to_event("MachineStateChanged", RECORD)
    assert event == MachineStateChanged(**RECORD)
    assert mapper.to_record(event) == RECORD
    assert not mapper.knows("PartsProduced")
    with pytest.raises(AttributeError):
        event.state = "RUNNING"


def _minimal(event_type: str) -> dict:
    base = {k: RECORD[k] for k in ("event_id", "occurred_at", "recorded_at", "source", "correlation_id")}
    if event_type == "MachineStateChanged":
        return RECORD
    return {**base, "equipment_id": RECORD["equipment_id"], "good": 1, "reject": 0, "order_id": None}


def test_a_codec_without_a_registry_names_the_missing_setting_for_registry_framed_bytes():
    codec = codec_for(CATALOGUE, "", REPO_ROOT / "schemas")
    with pytest.raises(DecodeError, match="MOM_REGISTRY_URL"):
        codec.decode(CONFLUENT_MAGIC + struct.pack(">I", 7) + b"\x02")


def test_the_mappers_prebuilt_constructor_builds_what_to_event_builds():
    mapper = EventMapper([MachineStateChanged, DowntimeEnded])
    make = mapper.maker("MachineStateChanged")
    assert make(RECORD) == mapper.to_event("MachineStateChanged", RECORD) == MachineStateChanged(**RECORD)
    # a record with a field the class does not have (a newer writer) still maps
    assert make({**RECORD, "added_later": 1}) == MachineStateChanged(**RECORD)
    assert mapper.maker("AlarmRaised") is None


def test_repeated_decoding_reuses_one_reader_per_schema_and_stays_exact():
    codec = codec_for(CATALOGUE, "", REPO_ROOT / "schemas")
    data = [codec.encode("MachineStateChanged", {**RECORD, "event_id": f"e-{i}", "reason_code": None if i % 2 else "JAM"})
            for i in range(5)]
    decoded = [codec.decode(d) for d in data]
    assert [r["event_id"] for _, r in decoded] == [f"e-{i}" for i in range(5)]
    assert [r["reason_code"] for _, r in decoded] == ["JAM", None, "JAM", None, "JAM"]
    assert len(codec._single._readers) == 1
    with pytest.raises(DecodeError, match="does not match"):
        codec.decode(data[0][:-3])


def test_the_fast_reader_gives_exactly_what_fastavro_gives_for_every_catalogue_type():
    """Top-level timestamps are read as longs and converted by the codec: same values, same tzinfo."""
    import io

    import fastavro

    codec = SingleObjectCodec(CATALOGUE)
    late = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    early = datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for name, schema in codec._writers.items():
        for when in (AT, late, early):
            record = _sample(schema, when)
            data = codec.encode(name, record)
            expected = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, None)
            event_type, got = codec.decode(data)
            assert event_type == name
            assert got == expected, name
            for key, value in expected.items():
                assert type(got[key]) is type(value) and getattr(got[key], "tzinfo", None) is getattr(value, "tzinfo", None)


def _sample(schema, when):
    """A record of any schema: every field filled, timestamps set to `when`, nullable ones alternately None."""
    def value(t, i):
        if isinstance(t, list):
            return None if i % 2 else value(t[1], i)
        if isinstance(t, dict):
            if t.get("logicalType") == "timestamp-micros":
                return when
            kind = t["type"]
            if kind == "record":
                return {f["name"]: value(f["type"], j) for j, f in enumerate(t["fields"])}
            if kind == "array":
                return [value(t["items"], i)]
            if kind == "map":
                return {"k": value(t["values"], i)}
            if kind == "enum":
                return t["symbols"][0]
            return value(kind, i)
        return {"string": f"s{i}", "long": i, "int": i, "double": 1.5, "float": 0.5, "boolean": True,
                "bytes": b"b", "null": None}[t]
    return {f["name"]: value(f["type"], i) for i, f in enumerate(schema["fields"])}


def test_the_direct_constructor_sets_what_init_sets_and_falls_back_on_other_fields():
    make = EventMapper([MachineStateChanged]).maker("MachineStateChanged")
    reordered = dict(reversed(list(RECORD.items())))
    assert make(reordered) == MachineStateChanged(**RECORD)
    # as many fields as the class, but one named otherwise: mapped as the general path maps it (the
    # unknown field dropped, the missing one defaulted)
    renamed = {**{k: v for k, v in RECORD.items() if k != "reason_code"}, "reason": "JAM"}
    assert make(renamed) == MachineStateChanged(**{**RECORD, "reason_code": None})
    with pytest.raises(TypeError, match="state"):  # a required field missing is refused, as __init__ refuses it
        make({**{k: v for k, v in RECORD.items() if k != "state"}, "status": "DOWN"})
    # fewer fields: the defaults fill in
    assert make({k: v for k, v in RECORD.items() if k != "correlation_id"}) == MachineStateChanged(**RECORD)


def test_a_class_whose_init_does_more_than_store_keeps_its_init():
    @dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
    class Checked(MachineStateChanged):
        def __post_init__(self) -> None:
            if self.state not in ("RUNNING", "DOWN"):
                raise ValueError(f"state: {self.state!r} is not a state")

    make = EventMapper([Checked]).maker("Checked")
    assert make(RECORD) == Checked(**RECORD)
    with pytest.raises(ValueError, match="state"):
        make({**RECORD, "state": "ASLEEP"})
    assert _slot_setters(Checked) is None
    assert _slot_setters(MachineStateChanged) is not None


@pytest.mark.parametrize("micros", [0, 1, 499_999, 500_000, 1_793_700_000_123_456, 2**32 * 1_000_000 - 1,
                                    2**32 * 1_000_000, 2**32 * 1_000_000 + 500_001, -1, -1_500_000, 253_402_300_799_999_999])
def test_timestamps_turn_into_the_datetimes_fastavro_gives(micros):
    assert _utc_from_micros(micros) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    assert _utc_from_micros(micros).tzinfo is UTC


def test_records_are_written_as_fastavro_writes_them_whatever_their_timestamps():
    codec = SingleObjectCodec(CATALOGUE)
    schema = codec._writers["MachineStateChanged"]
    naive = {**RECORD, "occurred_at": datetime(2026, 11, 2, 6, 0, 0, 123456), "recorded_at": 1_793_700_000_000_001}
    for record in (RECORD, naive):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, record)
        assert codec.encode("MachineStateChanged", record)[10:] == out.getvalue()
    with pytest.raises((TypeError, ValueError, AttributeError)):
        codec.encode("MachineStateChanged", {**RECORD, "occurred_at": "yesterday"})
    assert RECORD["occurred_at"] == AT  # the caller's record is left as it was


def test_to_record_gives_every_field_in_order():
    event = MachineStateChanged(**RECORD)
    assert list(EventMapper([MachineStateChanged]).to_record(event).items()) == list(RECORD.items())
