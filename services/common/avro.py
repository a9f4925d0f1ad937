"""The one Avro codec: Confluent registry framing or Avro single-object encoding, behind one interface."""
from __future__ import annotations

import dataclasses
import http.client
import io
import json
import logging
import operator
import struct
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

try:  # the reader behind fastavro.schemaless_reader, without its per-call set-up (see _Reader)
    from fastavro._read import _read_data as _fastavro_read_data
except ImportError:  # pragma: no cover - a fastavro without the compiled reader
    _fastavro_read_data = None

from services.common.catalogue import Catalogue

log = logging.getLogger(__name__)


def _private_reader_works() -> bool:
    """fastavro._read._read_data is not public API: use it only if it still reads what schemaless_reader reads."""
    if _fastavro_read_data is None:
        return False
    schema = {"type": "record", "name": "Probe", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": ["null", "string"]}]}
    try:
        named: dict = {"writer": {}, "reader": {}}
        parsed = parse_schema(schema, named["writer"])
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, {"a": -3, "b": "x"})
        got = _fastavro_read_data(io.BytesIO(out.getvalue()), parsed, named, None, dict(_READ_OPTIONS))
        return got == {"a": -3, "b": "x"}
    except Exception:  # noqa: BLE001 - any change in the private API: fall back to the public reader
        return False


SINGLE_OBJECT_MAGIC = b"\xc3\x01"  # Avro specification, "Single-object encoding"
CONFLUENT_MAGIC = b"\x00"          # Confluent wire format: magic byte, 4-byte schema id, Avro body


class DecodeError(ValueError):
    """Bytes that are not an event this codec knows; the message says why."""


class RegistryUnavailable(RuntimeError):
    """The schema registry did not answer within the retry budget (not a fault of the data)."""


RETRIED_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class RegistryError(RuntimeError):
    """The schema registry refused a call (an HTTP status that retrying will not change)."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"schema registry {method} {path}: HTTP {status}: {body!r}")
        self.status = status


class Codec(Protocol):
    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes: ...
    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]: ...


def _parse(raw: dict) -> Any:
    # Each schema file is self-contained, so each gets its own namespace of named types.
    return parse_schema(raw, named_schemas={})


def _fingerprint(parsed: Any) -> bytes:
    return int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16).to_bytes(8, "little")


def _event_type(parsed: Any) -> str:
    return parsed["name"].rsplit(".", 1)[-1]


def _released_schemas(schemas_dir: Path) -> Iterable[dict]:
    released = schemas_dir / "released"
    if released.is_dir():
        for path in sorted(released.glob("*/*.avsc")):
            yield json.loads(path.read_text())


class _BaseCodec:
    def __init__(self, catalogue: Catalogue) -> None:
        self._writers: dict[str, Any] = {name: _parse(raw) for name, raw in catalogue.schemas.items()}
        self._plain_writers = {name: _PlainWriter(parsed) for name, parsed in self._writers.items()}
        self._catalogue = catalogue

    def _write(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        try:
            writer = self._plain_writers[event_type]
        except KeyError:
            raise ValueError(f"event type {event_type!r} has no schema in the catalogue") from None
        out = io.BytesIO()
        fastavro.schemaless_writer(out, writer.schema, writer.plain(record))
        return out.getvalue()

    def _reader_for(self, writer: Any) -> _Reader:
        """What decoding a body of this writer schema needs, worked out once per writer schema."""
        event_type = _event_type(writer)
        reader = self._writers.get(event_type)
        if reader is None:
            raise DecodeError(f"event type {event_type!r} is not in this catalogue")
        return _Reader(event_type, writer, reader)


_READ_OPTIONS = {"return_record_name": False, "return_record_name_override": False, "handle_unicode_errors": "strict",
                 "return_named_type": False, "return_named_type_override": False}


_FAST_READER = _private_reader_works()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # what fastavro adds timestamp-micros to (its `epoch`)


_EXACT_FLOAT_MICROS = 2**32 * 1_000_000  # below this (the year 2106), micros / 1e6 is within 0.25 us of the instant
_from_timestamp = datetime.fromtimestamp


def _utc_from_micros(micros: int) -> datetime:
    """The aware UTC datetime of a timestamp-micros value, as fastavro gives it. Below _EXACT_FLOAT_MICROS
    the float number of seconds lies within a quarter of a microsecond of the value, and fromtimestamp
    rounds to the nearest microsecond, so the result is exact; it costs two thirds of adding a timedelta
    to the epoch (the positional form: keywords cost as much again), which is kept for other values."""
    if 0 <= micros < _EXACT_FLOAT_MICROS:
        return _from_timestamp(micros / 1e6, UTC)
    return _EPOCH + timedelta(0, 0, micros)


def _is_timestamp_micros(t: Any) -> bool:
    return isinstance(t, dict) and t.get("type") == "long" and t.get("logicalType") == "timestamp-micros"


def _plain_timestamps(parsed: Any) -> tuple[Any, tuple[str, ...], tuple[str, ...]] | None:
    """The schema with its top-level timestamp-micros fields read as plain longs, and their names.

    fastavro's timestamp-micros reader costs about as much as the rest of a record together (13 of
    21 us per record here); adding a timedelta to the epoch ourselves gives the same datetime for a
    fraction of that. Only top-level fields (plain, or in a union with null) are rewritten; anything
    nested keeps fastavro's own conversion. None when there is nothing to gain.
    """
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    fields, required, nullable = [], [], []
    for f in parsed["fields"]:
        t = f["type"]
        if _is_timestamp_micros(t):
            f = {**f, "type": "long"}
            required.append(f["name"])
        elif isinstance(t, list) and len(t) == 2 and t[0] == "null" and _is_timestamp_micros(t[1]):
            f = {**f, "type": ["null", "long"]}
            nullable.append(f["name"])
        fields.append(f)
    if not required and not nullable:
        return None
    plain = {k: v for k, v in parsed.items() if not k.startswith("__")}
    plain["fields"] = fields
    return plain, tuple(required), tuple(nullable)


class _PlainWriter:
    """Writes records of one schema with its top-level timestamps turned into microseconds here.

    fastavro's timestamp-micros writer costs about 2.5 us a datetime, a third of writing a whole
    record; the subtraction below gives the same long (an aware datetime from the epoch, a naive one
    taken as UTC, as fastavro does) for a fifth of that. The bytes are the same: the logical type is a
    long on the wire. Values that are not datetimes are left to fastavro, which writes or refuses them
    as before.
    """

    __slots__ = ("schema", "_names")

    def __init__(self, parsed: Any) -> None:
        plain = _plain_timestamps(parsed)
        if plain is None:
            self.schema, self._names = parsed, ()
        else:
            self.schema, self._names = parse_schema(plain[0], {}), plain[1] + plain[2]

    def plain(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self._names:
            return record
        out = dict(record)
        for name in self._names:
            value = out.get(name)
            if isinstance(value, datetime):
                out[name] = (value - (_EPOCH if value.tzinfo is not None else _NAIVE_EPOCH)) // _MICROSECOND
        return out


_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


class _Reader:
    """Decodes bodies written with one writer schema into records of the catalogue's reader schema.

    Everything fastavro.schemaless_reader works out per call (whether a reader schema is needed, which
    is a deep comparison of two schema dicts, and the named types of both) is worked out here once.
    When writer and reader are the same schema, top-level timestamps are read as longs and turned
    into the same aware UTC datetimes fastavro would give (see _plain_timestamps).
    """

    __slots__ = ("event_type", "_writer", "_reader", "_named", "_fast", "_required_ts", "_nullable_ts")

    def __init__(self, event_type: str, writer: Any, reader: Any) -> None:
        self.event_type = event_type
        same = reader is writer or to_parsing_canonical_form(reader) == to_parsing_canonical_form(writer)
        self._reader = None if same else reader
        self._named: dict = {"writer": {}, "reader": {}}
        self._fast = _FAST_READER
        self._required_ts: tuple[str, ...] = ()
        self._nullable_ts: tuple[str, ...] = ()
        plain = _plain_timestamps(writer) if (same and self._fast) else None
        if plain is not None:
            writer, self._required_ts, self._nullable_ts = plain
        self._writer = parse_schema(writer, self._named["writer"])
        if self._reader is not None:
            self._reader = parse_schema(reader, self._named["reader"])

    def read(self, body: bytes) -> tuple[str, dict[str, Any]]:
        try:
            if self._fast:
                record = _fastavro_read_data(io.BytesIO(body), self._writer, self._named, self._reader, _READ_OPTIONS)
                for name in self._required_ts:
                    record[name] = _utc_from_micros(record[name])
                for name in self._nullable_ts:
                    if record[name] is not None:
                        record[name] = _utc_from_micros(record[name])
            else:
                record = fastavro.schemaless_reader(io.BytesIO(body), self._writer, self._reader)
        except Exception as exc:  # fastavro raises a zoo of errors for truncated or corrupt bodies
            raise DecodeError(f"{self.event_type}: body does not match its schema: {exc}") from exc
        return self.event_type, record


class SingleObjectCodec(_BaseCodec):
    """Avro single-object encoding: the schema travels as a 64-bit fingerprint; no registry needed."""

    def __init__(self, catalogue: Catalogue, schemas_dir: Path | None = None) -> None:
        super().__init__(catalogue)
        self._headers = {name: SINGLE_OBJECT_MAGIC + _fingerprint(p) for name, p in self._writers.items()}
        self._by_fingerprint: dict[bytes, Any] = {}
        for raw in _released_schemas(schemas_dir) if schemas_dir else ():
            parsed = _parse(raw)
            self._by_fingerprint[_fingerprint(parsed)] = parsed
        for name, parsed in self._writers.items():
            self._by_fingerprint[self._headers[name][2:]] = parsed
        self._readers: dict[bytes, _Reader] = {}

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        body = self._write(event_type, record)
        return self._headers[event_type] + body

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        reader = self._readers.get(data[2:10])
        if reader is None or data[:2] != SINGLE_OBJECT_MAGIC:
            if data[:2] != SINGLE_OBJECT_MAGIC or len(data) < 10:
                raise DecodeError("not Avro single-object encoded (expected the bytes C3 01 and a fingerprint)")
            writer = self._by_fingerprint.get(data[2:10])
            if writer is None:
                raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
            reader = self._readers[data[2:10]] = self._reader_for(writer)
        return reader.read(data[10:])


class RegistryCodec(_BaseCodec):
    """Confluent wire format against a Confluent-compatible registry (Apicurio's ccompat API locally).

    Subjects follow the TopicRecordNameStrategy (`<topic>-<record full name>`), because a topic carries
    several event types. Schema ids are fetched once and cached; the registry is not on the hot path.
    """

    def __init__(self, catalogue: Catalogue, url: str, timeout_s: float = 10.0, retry_s: float = 60.0) -> None:
        super().__init__(catalogue)
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._ids: dict[str, bytes] = {}
        self._by_id: dict[int, Any] = {}
        self._readers: dict[int, _Reader] = {}

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._url + path, data=data, method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        deadline, pause = time.monotonic() + self._retry_s, 0.1
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                failure: Exception = exc
                if exc.code not in RETRIED_HTTP_STATUSES:
                    raise RegistryError(method, path, exc.code, exc.read()[:300]) from exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                failure = exc  # refused, reset, closed without an answer, timed out: the registry is away
            if time.monotonic() + pause > deadline:
                raise RegistryUnavailable(f"schema registry {self._url} did not answer {method} {path} "
                                          f"within {self._retry_s:g} s: {failure}") from failure
            log.warning("schema registry call failed, retrying", extra={"call": f"{method} {path}", "error": str(failure)})
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def register(self, event_type: str) -> int:
        """Register the current schema of an event type under its subject; returns the schema id."""
        raw = self._catalogue.schemas[event_type]
        topic = self._catalogue.topic_for(event_type).name
        subject = f"{topic}-{raw['namespace']}.{raw['name']}"
        answer = self._call("POST", f"/subjects/{subject}/versions", {"schema": json.dumps(raw), "schemaType": "AVRO"})
        schema_id = int(answer["id"])
        self._ids[event_type] = CONFLUENT_MAGIC + struct.pack(">I", schema_id)
        self._by_id[schema_id] = self._writers[event_type]
        return schema_id

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        header = self._ids.get(event_type)
        if header is None:
            self.register(event_type)
            header = self._ids[event_type]
        return header + self._write(event_type, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if data[:1] != CONFLUENT_MAGIC or len(data) < 5:
            raise DecodeError("not in the Confluent wire format (expected a zero byte and a schema id)")
        (schema_id,) = struct.unpack(">I", data[1:5])
        reader = self._readers.get(schema_id)
        if reader is None:
            writer = self._by_id.get(schema_id)
            if writer is None:
                try:
                    answer = self._call("GET", f"/schemas/ids/{schema_id}")
                except RegistryError as exc:
                    if exc.status != 404:
                        raise
                    raise DecodeError(f"schema id {schema_id} is not in the schema registry") from exc
                writer = self._by_id[schema_id] = _parse(json.loads(answer["schema"]))
            reader = self._readers[schema_id] = self._reader_for(writer)
        return reader.read(data[5:])


class FramedCodec:
    """Writes in the configured framing; reads either, by the first byte, so a topic that moved from
    single-object encoding to a registry (or holds both) stays readable."""

    def __init__(self, catalogue: Catalogue, registry_url: str, schemas_dir: Path | None) -> None:
        self._single = SingleObjectCodec(catalogue, schemas_dir)
        self._registry = RegistryCodec(catalogue, registry_url) if registry_url else None
        self._writer: Codec = self._registry or self._single
        self._single_readers = self._single._readers

    def register(self, event_type: str) -> int | None:
        """Register an event type's schema ahead of use (a no-op without a registry); returns its id."""
        return self._registry.register(event_type) if self._registry else None

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        return self._writer.encode(event_type, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        reader = self._single_readers.get(data[2:10])  # the hot path: a single-object schema seen before
        if reader is not None and data[:2] == SINGLE_OBJECT_MAGIC:
            return reader.read(data[10:])
        if data[:1] == CONFLUENT_MAGIC:  # (a bytes slice, not data[0]: that would be an int)
            if self._registry is None:
                raise DecodeError("Confluent wire format, but no schema registry is configured (MOM_REGISTRY_URL)")
            return self._registry.decode(data)
        return self._single.decode(data)


def codec_for(catalogue: Catalogue, registry_url: str = "", schemas_dir: Path | None = None) -> FramedCodec:
    """The codec the settings ask for: writes through the registry when a URL is configured, else
    single-object encoding; reads both."""
    return FramedCodec(catalogue, registry_url, schemas_dir)


class EventMapper:
    """Converts between Avro records and a service's frozen event dataclasses, at the edge only."""

    def __init__(self, classes: Iterable[type]) -> None:
        self._classes = {cls.__name__: cls for cls in classes}
        self._fields = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in self._classes.items()}
        self._getters = {name: operator.attrgetter(*fields) for name, fields in self._fields.items() if len(fields) > 1}

    def knows(self, event_type: str) -> bool:
        return event_type in self._classes

    def maker(self, event_type: str) -> Callable[[Mapping[str, Any]], Any] | None:
        """The record-to-event function of an event type, worked out once; None if the type is not used."""
        cls = self._classes.get(event_type)
        if cls is None:
            return None
        from_record = getattr(cls, "from_record", None)
        if from_record is not None:
            return from_record
        fields = self._fields[event_type]
        names = frozenset(fields)

        def make(record: Mapping[str, Any]) -> Any:
            if names.issuperset(record):  # the common case: the record has no field the class lacks
                return cls(**record)
            return cls(**{name: record[name] for name in fields if name in record})

        slots = _slot_setters(cls)
        if slots is None:
            return make
        count = len(fields)
        new = object.__new__

        def make_direct(record: Mapping[str, Any]) -> Any:
            # A decoded record holds every field of its schema, so a record of the class's fields, in any
            # order, is the common case: set the slots one by one, as the frozen __init__ would, without
            # its keyword matching and its object.__setattr__ per field (a third of the cost).
            if len(record) == count:
                event = new(cls)
                try:
                    for name, set_slot in slots:
                        set_slot(event, record[name])
                    return event
                except KeyError:  # as many fields, not the same ones
                    pass
            return make(record)

        return make_direct

    def to_event(self, event_type: str, record: Mapping[str, Any]) -> Any:
        cls = self._classes[event_type]
        from_record = getattr(cls, "from_record", None)
        if from_record is not None:
            return from_record(record)
        return cls(**{name: record[name] for name in self._fields[event_type] if name in record})

    def to_record(self, event: Any) -> dict[str, Any]:
        to_record = getattr(event, "to_record", None)
        if to_record is not None:
            return to_record()
        event_type = type(event).__name__
        getter = self._getters.get(event_type)
        if getter is None:
            return {name: getattr(event, name) for name in self._fields[event_type]}
        return dict(zip(self._fields[event_type], getter(event), strict=True))


def _slot_setters(cls: type) -> tuple[tuple[str, Callable[[Any, Any], None]], ...] | None:
    """(field, slot setter) for each field of a slots dataclass whose __init__ only stores its arguments
    (every field an init field, no __post_init__), so that setting the slots builds what __init__ builds;
    None for any other class."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
        return None
    setters = []
    for f in dataclasses.fields(cls):
        slot = getattr(cls, f.name, None)
        if not f.init or not isinstance(slot, types.MemberDescriptorType):
            return None
        setters.append((f.name, slot.__set__))
    return tuple(setters)
