"""The Avro codec: both framings round-trip, foreign bytes are refused with a reason."""
import json
import struct
from datetime import UTC, datetime

import pytest

from services.common.avro import CONFLUENT_MAGIC, DecodeError, EventMapper, SingleObjectCodec, codec_for
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
