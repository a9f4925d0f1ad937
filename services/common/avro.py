"""The one Avro codec: Confluent registry framing or Avro single-object encoding, behind one interface."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import struct
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from services.common.catalogue import Catalogue

log = logging.getLogger(__name__)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"  # Avro specification, "Single-object encoding"
CONFLUENT_MAGIC = b"\x00"          # Confluent wire format: magic byte, 4-byte schema id, Avro body


class DecodeError(ValueError):
    """Bytes that are not an event this codec knows; the message says why."""


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
        self._catalogue = catalogue

    def _write(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        try:
            schema = self._writers[event_type]
        except KeyError:
            raise ValueError(f"event type {event_type!r} has no schema in the catalogue") from None
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, record)
        return out.getvalue()

    def _read(self, body: bytes, writer: Any) -> tuple[str, dict[str, Any]]:
        event_type = _event_type(writer)
        reader = self._writers.get(event_type)
        if reader is None:
            raise DecodeError(f"event type {event_type!r} is not in this catalogue")
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(body), writer, None if reader is writer else reader
            )
        except Exception as exc:  # fastavro raises a zoo of errors for truncated or corrupt bodies
            raise DecodeError(f"{event_type}: body does not match its schema: {exc}") from exc
        return event_type, record


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

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        body = self._write(event_type, record)
        return self._headers[event_type] + body

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if data[:2] != SINGLE_OBJECT_MAGIC or len(data) < 10:
            raise DecodeError("not Avro single-object encoded (expected the bytes C3 01 and a fingerprint)")
        writer = self._by_fingerprint.get(data[2:10])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
        return self._read(data[10:], writer)


class RegistryCodec(_BaseCodec):
    """Confluent wire format against a Confluent-compatible registry (Apicurio's ccompat API locally).

    Subjects follow the TopicRecordNameStrategy (`<topic>-<record full name>`), because a topic carries
    several event types. Schema ids are fetched once and cached; the registry is not on the hot path.
    """

    def __init__(self, catalogue: Catalogue, url: str, timeout_s: float = 10.0) -> None:
        super().__init__(catalogue)
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._ids: dict[str, bytes] = {}
        self._by_id: dict[int, Any] = {}

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._url + path, data=data, method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"schema registry {method} {path}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc

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
        writer = self._by_id.get(schema_id)
        if writer is None:
            answer = self._call("GET", f"/schemas/ids/{schema_id}")
            writer = self._by_id[schema_id] = _parse(json.loads(answer["schema"]))
        return self._read(data[5:], writer)


class FramedCodec:
    """Writes in the configured framing; reads either, by the first byte, so a topic that moved from
    single-object encoding to a registry (or holds both) stays readable."""

    def __init__(self, catalogue: Catalogue, registry_url: str, schemas_dir: Path | None) -> None:
        self._single = SingleObjectCodec(catalogue, schemas_dir)
        self._registry = RegistryCodec(catalogue, registry_url) if registry_url else None
        self._writer: Codec = self._registry or self._single

    def register(self, event_type: str) -> int | None:
        """Register an event type's schema ahead of use (a no-op without a registry); returns its id."""
        return self._registry.register(event_type) if self._registry else None

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        return self._writer.encode(event_type, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if data[:1] == CONFLUENT_MAGIC:
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

    def knows(self, event_type: str) -> bool:
        return event_type in self._classes

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
        return {name: getattr(event, name) for name in self._fields[type(event).__name__]}
