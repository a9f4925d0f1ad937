"""Ingest's input limits and bearer tokens, through the real HTTP application with a stand-in producer.

Body size, batch size and string lengths are refused with an answer that names the field (or the
variable) and the rule; tokens may be configured as `sha256:<hex>` so the configuration holds no
secret. No broker is needed: the producer acknowledges every message at once.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from services.common.catalogue import Catalogue
from services.common.settings import KafkaSettings, Settings, SettingsError
from services.ingest.app import authenticate, build
from services.ingest.settings import ClientToken, IngestSettings, hash_token, new_token, parse_tokens
from services.ingest.translators import MAX_CORRELATION_ID_LENGTH, MAX_EVENT_ID_LENGTH, Translator

CATALOGUE = Catalogue.load()
PRESS = "acme.berlin.assembly.line1.press07"
PLAIN_TOKEN = "plain-token-of-the-erp-0123456789"
HASHED_TOKEN = new_token()


class AckingProducer:
    """Enough of confluent_kafka.Producer for ingest: every message is acknowledged on the next poll."""

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.produced: list[tuple[str, bytes, str]] = []

    def produce(self, topic: str, value: bytes, key: str, headers: Any = None, on_delivery: Any = None) -> None:
        self.produced.append((topic, value, key))
        self.pending.append(on_delivery)

    def poll(self, _timeout: float = 0) -> int:
        served, self.pending = self.pending, []
        for callback in served:
            callback(None, None)
        return len(served)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


def _settings(**limits: Any) -> IngestSettings:
    common = Settings(service="ingest", kafka=KafkaSettings(), database_url="", registry_url="")
    tokens = parse_tokens(f"erp:{PLAIN_TOKEN},edge:{hash_token(HASHED_TOKEN)}")
    return IngestSettings(common=common, tokens=tokens, **limits)


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[tuple[TestClient, AckingProducer]]:
    producer = AckingProducer()
    app = build(_settings(max_events=5, max_bytes=4096, max_string_length=64), catalogue=CATALOGUE,
                producer=producer)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, producer


def _item(**fields: Any) -> dict[str, Any]:
    return {"type": "MachineStateChanged", "event_id": "e-1", "occurred_at": "2026-11-02T06:00:00Z",
            "equipment_id": PRESS, "state": "DOWN", **fields}


async def _post(test_client: TestClient, body: bytes, token: str = PLAIN_TOKEN,
                content_type: str = "application/json") -> tuple[int, dict]:
    response = await test_client.post("/v1/events", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    return response.status, orjson.loads(await response.read())


@pytest.mark.asyncio(loop_scope="session")
async def test_a_body_over_the_byte_limit_is_413_naming_the_variable(client) -> None:
    test_client, producer = client
    status, answer = await _post(test_client, orjson.dumps([_item(reason_code="x" * 5000)]))
    assert status == 413
    assert answer["error"] == "too_large" and "MOM_INGEST_MAX_BYTES = 4096" in answer["message"]
    assert producer.produced == []


@pytest.mark.asyncio(loop_scope="session")
async def test_a_batch_over_the_event_limit_is_413_and_nothing_is_written(client) -> None:
    test_client, producer = client
    for body, content_type in ((orjson.dumps([_item()] * 6), "application/json"),
                               (b"\n".join([orjson.dumps(_item())] * 6), "application/x-ndjson")):
        status, answer = await _post(test_client, body, content_type=content_type)
        assert status == 413
        assert answer["error"] == "too_many_events" and "MOM_INGEST_MAX_EVENTS = 5" in answer["message"]
    assert producer.produced == []


@pytest.mark.asyncio(loop_scope="session")
async def test_a_batch_at_the_limit_is_accepted(client) -> None:
    test_client, producer = client
    items = [_item(event_id=f"e-{i}") for i in range(5)]
    status, answer = await _post(test_client, orjson.dumps(items))
    assert status == 202 and answer["accepted"] == 5
    assert len(producer.produced) == 5


@pytest.mark.asyncio(loop_scope="session")
async def test_a_string_over_the_length_limit_is_refused_naming_field_and_rule(client) -> None:
    test_client, producer = client
    status, answer = await _post(test_client, orjson.dumps([_item(reason_code="r" * 65), _item(event_id="ok-1")]))
    assert status == 202 and answer["accepted"] == 1 and answer["rejected"] == 1
    (refused,) = [r for r in answer["results"] if r["status"] == "rejected"]
    assert refused["errors"] == [{"field": "reason_code", "rule": "maxLength",
                                  "message": "reason_code must be at most 64 characters, got 65"}]
    # the refusal is kept on the dead-letter topic, the good item on its topic
    topics = sorted(topic for topic, _value, _key in producer.produced[-2:])
    assert topics == sorted([CATALOGUE.topic_for("MachineStateChanged").name, CATALOGUE.topic_for("EventRejected").name])


@pytest.mark.asyncio(loop_scope="session")
async def test_a_string_at_the_length_limit_is_accepted(client) -> None:
    test_client, _producer = client
    status, answer = await _post(test_client, orjson.dumps([_item(reason_code="r" * 64)]))
    assert status == 202 and answer["accepted"] == 1


@pytest.mark.asyncio(loop_scope="session")
async def test_envelope_strings_have_their_own_limits(client) -> None:
    test_client, _producer = client
    items = [_item(event_id="e" * (MAX_EVENT_ID_LENGTH + 1)),
             _item(event_id="c-1", correlation_id="c" * (MAX_CORRELATION_ID_LENGTH + 1))]
    status, answer = await _post(test_client, orjson.dumps(items))
    assert status == 202 and answer["rejected"] == 2
    rules = [(e["field"], e["rule"]) for r in answer["results"] for e in r["errors"]]
    assert rules == [("event_id", "maxLength"), ("correlation_id", "maxLength")]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_nul_character_in_any_string_is_refused_naming_field_and_rule(client) -> None:
    """PostgreSQL's text cannot hold U+0000: such an item would fail every service that stores it."""
    test_client, _producer = client
    items = [_item(event_id="n\x00-1"), _item(event_id="n-2", reason_code="JA\x00M"),
             _item(event_id="n-3", source="plc\x00"), _item(event_id="n-4", correlation_id="\x00"),
             _item(event_id="n-5", reason_code="JAM")]
    status, answer = await _post(test_client, orjson.dumps(items))
    assert status == 202 and answer["accepted"] == 1 and answer["rejected"] == 4
    errors = [e for r in answer["results"] for e in r.get("errors", ())]
    assert [(e["field"], e["rule"]) for e in errors] == [("event_id", "noNul"), ("reason_code", "noNul"),
                                                         ("source", "noNul"), ("correlation_id", "noNul")]
    assert errors[1]["message"] == "reason_code must not contain the NUL character (U+0000)"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_hashed_token_authenticates_its_client_and_its_hash_does_not(client) -> None:
    test_client, _producer = client
    status, answer = await _post(test_client, orjson.dumps([_item(event_id="h-1")]), token=HASHED_TOKEN)
    assert status == 202 and answer["accepted"] == 1
    status, answer = await _post(test_client, orjson.dumps([_item()]), token=hash_token(HASHED_TOKEN))
    assert status == 401 and answer["error"] == "unauthorized"
    status, _ = await _post(test_client, orjson.dumps([_item()]), token=HASHED_TOKEN[:-1])
    assert status == 401


def test_authenticate_names_the_client_of_plain_and_hashed_tokens() -> None:
    tokens = parse_tokens(f"erp:{PLAIN_TOKEN},edge:{hash_token(HASHED_TOKEN)}")
    assert authenticate(f"Bearer {PLAIN_TOKEN}", tokens) == "erp"
    assert authenticate(f"bearer {HASHED_TOKEN}", tokens) == "edge"
    assert authenticate(f"Basic {PLAIN_TOKEN}", tokens) is None
    assert authenticate("Bearer ", tokens) is None
    assert authenticate(None, tokens) is None


def test_parse_tokens_forms() -> None:
    digest = hash_token("a-token-of-sufficient-length")
    (bare_hash,) = parse_tokens(digest)
    assert bare_hash.name == "client" and bare_hash.hashed and bare_hash.token == ""
    (named_hash,) = parse_tokens(f"plc-gw:{digest}")
    assert named_hash.name == "plc-gw" and named_hash.sha256.hex() == digest.removeprefix("sha256:")
    (plain,) = parse_tokens("a-token-of-sufficient-length")
    assert plain == ClientToken("client", "a-token-of-sufficient-length")
    assert "sufficient" not in repr(plain) and digest[7:] not in repr(named_hash)


@pytest.mark.parametrize("raw, fragment", [
    ("erp:sha256:abc", "64 lower-case hex"),
    ("erp:short", "fewer than 16"),
    ("erp:", "each entry must be"),
])
def test_parse_tokens_refuses_malformed_entries(raw: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        parse_tokens(raw)


def test_max_string_length_is_read_from_the_environment() -> None:
    env = {"MOM_INGEST_TOKENS": hash_token(new_token()), "MOM_INGEST_MAX_STRING_LENGTH": "300"}
    assert IngestSettings.from_env(env).max_string_length == 300
    assert IngestSettings.from_env({"MOM_INGEST_TOKENS": PLAIN_TOKEN}).max_string_length == 1024
    with pytest.raises(SettingsError, match="MOM_INGEST_MAX_STRING_LENGTH"):
        IngestSettings.from_env({**env, "MOM_INGEST_MAX_STRING_LENGTH": "0"})


def test_the_string_limit_is_checked_before_the_format() -> None:
    from datetime import UTC, datetime

    translator = Translator(CATALOGUE.schemas, ["MachineStateChanged"], max_string_length=8)
    (outcome,) = translator.translate_all([_item()], now=datetime.now(UTC), client="erp")
    assert [(e["field"], e["rule"]) for e in outcome.errors] == [("equipment_id", "maxLength")]
