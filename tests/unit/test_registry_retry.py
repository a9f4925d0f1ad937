"""The registry codec rides out a registry that drops connections or answers 503 for a while, turns an
unknown schema id into a DecodeError (a dead letter, not a crash), and says which registry stayed away.

The registry here is a small HTTP server on a free local port that misbehaves on purpose: a unit test of
the retry rules, not of Apicurio (the integration tests use the real one)."""
from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.common.avro import CONFLUENT_MAGIC, DecodeError, RegistryCodec, RegistryUnavailable
from services.common.catalogue import Catalogue

CATALOGUE = Catalogue.load()
AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
RECORD = {"event_id": "press07-000123", "occurred_at": AT, "recorded_at": AT, "source": "plc-gw-1",
          "correlation_id": None, "equipment_id": "acme.berlin.assembly.line1.press07", "state": "DOWN",
          "reason_code": "JAM"}
SCHEMA_ID = 7


class Registry(ThreadingHTTPServer):
    """Answers GET /schemas/ids/7 with MachineStateChanged's schema after `failures` bad answers."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.failures = failures
        self.calls = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Registry

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.server.calls += 1
        failure = self.server.failures.pop(0) if self.server.failures else None
        if failure == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)  # closed without an answer
            return
        if failure is not None:
            self.send_error(int(failure))
            return
        if self.path != f"/schemas/ids/{SCHEMA_ID}":
            self.send_error(404)
            return
        body = json.dumps({"schema": json.dumps(CATALOGUE.schemas["MachineStateChanged"])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def serve(failures: list[str]) -> Iterator[Registry]:
    server = Registry(failures)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def framed(schema_id: int) -> bytes:
    """A record written as the registry's writer would: magic, id, then the Avro body."""
    body = RegistryCodec(CATALOGUE, "http://unused")._write("MachineStateChanged", RECORD)
    return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + body


@pytest.fixture
def flaky() -> Iterator[Registry]:
    yield from serve(["drop", "503", "drop"])


def test_dropped_connections_and_503s_are_retried_until_the_registry_answers(flaky: Registry) -> None:
    codec = RegistryCodec(CATALOGUE, flaky.url, timeout_s=2, retry_s=20)
    assert codec.decode(framed(SCHEMA_ID)) == ("MachineStateChanged", RECORD)
    assert flaky.calls == 4
    assert codec.decode(framed(SCHEMA_ID)) == ("MachineStateChanged", RECORD)
    assert flaky.calls == 4  # the schema is cached: the registry is not on the hot path


def test_an_unknown_schema_id_is_a_decode_error_not_a_crash() -> None:
    for registry in serve([]):
        codec = RegistryCodec(CATALOGUE, registry.url, timeout_s=2, retry_s=20)
        with pytest.raises(DecodeError, match="schema id 99 is not in the schema registry"):
            codec.decode(framed(99))
        assert registry.calls == 1  # a 404 is an answer: not retried


def test_a_registry_that_stays_away_is_named_once_the_budget_is_spent() -> None:
    for registry in serve(["503"] * 100):
        codec = RegistryCodec(CATALOGUE, registry.url, timeout_s=2, retry_s=0.5)
        with pytest.raises(RegistryUnavailable, match=rf"{registry.url} did not answer GET /schemas/ids/7 within 0.5 s"):
            codec.decode(framed(SCHEMA_ID))
        assert 2 <= registry.calls < 10
