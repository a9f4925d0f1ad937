"""Subscribe to a MOM topic from outside and print each event as one JSON line.

An integrator's service does not have this project's Python packages; it has the published
schemas (`schemas/<context>/<EventName>.avsc`, plus `schemas/released/` for older versions) and,
in a deployment with a registry, the registry's URL. This example needs nothing else:
confluent-kafka to consume and fastavro to decode.

Values come in one of two framings, told apart by their first byte:

- Avro single-object encoding (no registry configured):
  ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's parsing
  canonical form + the Avro binary body. The fingerprint is looked up among the schema files.
- Confluent wire format (a registry configured):
  ``00`` + 4-byte big-endian schema id + the Avro binary body. The writer schema is fetched once
  per id from the registry's ``GET /schemas/ids/{id}`` (subjects follow the
  TopicRecordNameStrategy, ``<topic>-<namespace>.<EventName>``).

The event type is the writer schema's record name; every record also carries it in the
``event_type`` header. Keys are plain UTF-8 strings (for example the equipment id).

    python examples/subscriber.py --bootstrap 127.0.0.1:19092 --topic mom.execution.events \
        --registry http://127.0.0.1:18081/apis/ccompat/v7 --from-beginning

Each output line is ``{"topic", "partition", "offset", "key", "event_type", "event"}`` with
instants as RFC 3339 strings in UTC. Consumer positions: with ``--group`` the subscriber joins
that consumer group and commits its offsets, so a restart continues where it stopped; without
it, every run uses a fresh group and commits nothing.

Consumers must tolerate what the contract allows to grow: unknown event types on a topic (skip
them), new optional fields, and new values of enumerations. Events can arrive more than once;
drop repeats by ``event_id``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
DEFAULT_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class UndecodableRecord(ValueError):
    """A value in neither framing, or written with a schema this subscriber cannot find."""


def crc64_fingerprint(schema: dict) -> bytes:
    """The 8 bytes after C3 01: CRC-64-AVRO of the parsing canonical form, little-endian."""
    canonical = to_parsing_canonical_form(schema)
    return int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")


class Decoder:
    def __init__(self, schemas_dir: Path, registry_url: str | None = None) -> None:
        self._registry_url = registry_url.rstrip("/") if registry_url else None
        self._by_fingerprint: dict[bytes, Any] = {}
        self._by_id: dict[int, Any] = {}
        # Current schemas last, so they win if a released file has the same fingerprint.
        files = sorted(schemas_dir.glob("released/*/*.avsc")) + sorted(
            p for p in schemas_dir.glob("*/*.avsc") if p.parent.name != "released")
        for path in files:
            raw = json.loads(path.read_text(encoding="utf-8"))
            self._by_fingerprint[crc64_fingerprint(raw)] = parse_schema(raw, named_schemas={})
        if not self._by_fingerprint:
            raise SystemExit(f"no *.avsc schema files under {schemas_dir}")

    def _registry_schema(self, schema_id: int) -> Any:
        if schema_id not in self._by_id:
            if self._registry_url is None:
                raise UndecodableRecord(f"Confluent-framed value (schema id {schema_id}) but no --registry given")
            raw = json.loads(json.loads(self._fetch(f"{self._registry_url}/schemas/ids/{schema_id}"))["schema"])
            self._by_id[schema_id] = parse_schema(raw, named_schemas={})
        return self._by_id[schema_id]

    @staticmethod
    def _fetch(url: str, patience_s: float = 60.0) -> bytes:
        """GET, asking again with backoff while the registry is unreachable or answers 5xx (a registry
        whose own database just restarted answers 500 until its connections are renewed)."""
        deadline, pause = time.monotonic() + patience_s, 0.25
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    return answer.read()
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or time.monotonic() + pause > deadline:
                    raise
            except urllib.error.URLError:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def decode(self, value: bytes) -> tuple[str, dict[str, Any]]:
        """(event type, record) of one Kafka value."""
        if value[:2] == SINGLE_OBJECT_MAGIC and len(value) >= 10:
            writer = self._by_fingerprint.get(value[2:10])
            if writer is None:
                raise UndecodableRecord(f"unknown schema fingerprint {value[2:10].hex()}: are the schema files current?")
            body = value[10:]
        elif value[:1] == CONFLUENT_MAGIC and len(value) >= 5:
            (schema_id,) = struct.unpack(">I", value[1:5])
            writer = self._registry_schema(schema_id)
            body = value[5:]
        else:
            raise UndecodableRecord(f"unknown framing, first bytes {value[:2].hex()}")
        record = fastavro.schemaless_reader(io.BytesIO(body), writer)
        return writer["name"].rsplit(".", 1)[-1], record


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the events of a MOM topic as JSON lines.")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:19092")
    parser.add_argument("--topic", required=True, help="e.g. mom.execution.events (see docs/event-catalogue.md)")
    parser.add_argument("--registry", help="Confluent-compatible registry URL, e.g. http://127.0.0.1:18081/apis/ccompat/v7")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest event, not the newest")
    parser.add_argument("--group", help="consumer group to join and commit offsets in (default: a fresh one, no commits)")
    parser.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS, help="directory of the published .avsc files")
    parser.add_argument("--max-events", type=int, default=0, help="stop after this many events (default: never)")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds (default: never)")
    args = parser.parse_args(argv)

    decoder = Decoder(args.schemas, args.registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group or f"mom-example-subscriber-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": bool(args.group),
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "isolation.level": "read_committed",
    })
    consumer.subscribe([args.topic])
    deadline = time.monotonic() + args.timeout if args.timeout else None
    printed = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    print(f"consume error: {message.error()}", file=sys.stderr)
                continue
            try:
                event_type, event = decoder.decode(message.value())
            except (UndecodableRecord, ValueError, EOFError) as exc:
                print(f"{message.topic()}[{message.partition()}]@{message.offset()}: skipped: {exc}", file=sys.stderr)
                continue
            line = {
                "topic": message.topic(), "partition": message.partition(), "offset": message.offset(),
                "key": message.key().decode() if message.key() is not None else None,
                "event_type": event_type, "event": event,
            }
            print(json.dumps(line, default=_json_default), flush=True)
            printed += 1
            if args.max_events and printed >= args.max_events:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
