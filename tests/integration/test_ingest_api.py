"""Ingest against the real broker: Given a running ingest, When clients post, Then Kafka holds what it answered."""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from confluent_kafka import Consumer

from services.common import localstack
from services.common.avro import Codec, codec_for
from services.common.catalogue import Catalogue
from services.common.kafka import apply_topics
from services.common.settings import KafkaSettings, Settings
from services.ingest.app import build
from services.ingest.settings import ClientToken, IngestSettings

pytestmark = pytest.mark.integration

PRESS = "acme.berlin.assembly.line1.press07"
CLIENT, TOKEN = "edge-berlin-01", "test-token-edge-berlin-01"
CATALOGUE = Catalogue.load()


@dataclass(frozen=True)
class Ingest:
    url: str
    bootstrap: str
    codec: Codec


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ingest(stack: localstack.StackConfig) -> AsyncIterator[Ingest]:
    status = localstack.status(stack)
    bootstrap = status["kafka"]["bootstrap"]
    registry_url = status["registry"]["url"] if status["registry"]["running"] else ""
    await asyncio.to_thread(apply_topics, KafkaSettings(bootstrap=bootstrap), CATALOGUE)
    port = _free_port()
    common = Settings(service="ingest", kafka=KafkaSettings(bootstrap=bootstrap), database_url="",
                      registry_url=registry_url, http_port=port)
    settings = IngestSettings(common=common, tokens=(ClientToken(CLIENT, TOKEN), ClientToken("erp", "test-token-erp")),
                              max_events=50, max_bytes=64 * 1024, ack_timeout_s=20)
    runner = web.AppRunner(build(settings, catalogue=CATALOGUE), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Ingest(f"http://127.0.0.1:{port}", bootstrap, codec_for(CATALOGUE, registry_url, common.schemas_dir))
    finally:
        await runner.cleanup()


async def post(ingest: Ingest, body: bytes, *, token: str | None = TOKEN,
               content_type: str = "application/json") -> tuple[int, dict]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{ingest.url}/v1/events", data=body, headers=headers) as response:
            return response.status, orjson.loads(await response.read())


def consume(ingest: Ingest, topic: str, wanted: set[str], timeout_s: float = 30.0) -> dict[str, tuple[bytes, dict, dict]]:
    """Messages of `topic` whose event_id header is in `wanted`: event_id -> (key, headers, decoded record)."""
    consumer = Consumer({"bootstrap.servers": ingest.bootstrap, "group.id": f"test-ingest-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: dict[str, tuple[bytes, dict, dict]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and set(found) != wanted:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error():
                    continue
                headers = {k: v.decode() for k, v in message.headers() or ()}
                if headers.get("event_id") in wanted:
                    event_type, record = ingest.codec.decode(message.value())
                    assert event_type == headers["event_type"]
                    found[headers["event_id"]] = (message.key(), headers, record)
    finally:
        consumer.close()
    return found


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_mixed_batch_lands_on_its_topics_and_the_dead_letter_topic(ingest: Ingest) -> None:
    # Given a batch from an edge gateway: two good events, two bad ones
    run = uuid.uuid4().hex[:8]
    occurred = datetime.now(UTC).replace(microsecond=123456)
    items = [
        {"type": "MachineStateChanged", "event_id": f"press07-{run}-1", "occurred_at": iso(occurred),
         "equipment_id": PRESS, "state": "DOWN", "reason_code": "JAM", "correlation_id": "SHIFT-A"},
        {"type": "PartsProduced", "event_id": f"press07-{run}-2", "occurred_at": iso(occurred),
         "equipment_id": PRESS, "good": -1, "reject": 0, "order_id": "WO-1042"},
        {"type": "ProductDefined", "event_id": f"erp-{run}-3", "occurred_at": iso(occurred), "source": "erp",
         "product_id": f"BRACKET-{run}", "name": "Bracket", "ideal_cycle_time_s": 12.5,
         "bom": [{"material_id": "STEEL-S235", "quantity_per_unit": 0.42}]},
        {"type": "PressExploded", "event_id": f"press07-{run}-4", "occurred_at": iso(occurred)},
    ]
    # When it is posted
    status, answer = await post(ingest, orjson.dumps(items))
    # Then the answer is per item, after Kafka acknowledged everything
    assert status == 202, answer
    assert (answer["accepted"], answer["rejected"], answer["failed"]) == (2, 2, 0)
    results = answer["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted", "rejected"]
    assert results[0] == {"index": 0, "event_id": f"press07-{run}-1", "status": "accepted"}
    assert [(e["field"], e["rule"]) for e in results[1]["errors"]] == [("good", "minimum")]
    assert [(e["field"], e["rule"]) for e in results[3]["errors"]] == [("type", "unknown_type")]

    # And the good events are on their catalogue topics, keyed by the catalogue's key
    machine_topic = CATALOGUE.topic_for("MachineStateChanged").name
    plan_topic = CATALOGUE.topic_for("ProductDefined").name
    machine = await asyncio.to_thread(consume, ingest, machine_topic, {f"press07-{run}-1"})
    plan = await asyncio.to_thread(consume, ingest, plan_topic, {f"erp-{run}-3"})
    key, headers, record = machine[f"press07-{run}-1"]
    assert key == PRESS.encode() and headers["event_type"] == "MachineStateChanged"
    assert record["occurred_at"] == occurred
    assert (record["state"], record["reason_code"], record["source"], record["correlation_id"]) == (
        "DOWN", "JAM", CLIENT, "SHIFT-A")
    assert abs((record["recorded_at"] - datetime.now(UTC)).total_seconds()) < 60
    key, _, record = plan[f"erp-{run}-3"]
    assert key == f"BRACKET-{run}".encode()
    assert record["source"] == "erp" and record["bom"] == [{"material_id": "STEEL-S235", "quantity_per_unit": 0.42}]
    assert record["routing"] == [] and record["unit"] is None

    # And the bad ones are on the dead-letter topic with field, rule and the original payload
    rejected_topic = CATALOGUE.topic_for("EventRejected").name
    ids = {f"rejected:{answer['request_id']}:1", f"rejected:{answer['request_id']}:3"}
    dead = await asyncio.to_thread(consume, ingest, rejected_topic, ids)
    assert set(dead) == ids
    key, _, record = dead[f"rejected:{answer['request_id']}:1"]
    assert key == CLIENT.encode()
    assert (record["request_id"], record["index"], record["event_type"], record["source"]) == (
        answer["request_id"], 1, "PartsProduced", CLIENT)
    assert [(e["field"], e["rule"]) for e in record["errors"]] == [("good", "minimum")]
    assert orjson.loads(record["payload"]) == items[1]
    _, _, record = dead[f"rejected:{answer['request_id']}:3"]
    assert record["event_type"] == "PressExploded" and orjson.loads(record["payload"]) == items[3]


@pytest.mark.asyncio(loop_scope="session")
async def test_ndjson_batch_keeps_the_raw_line_of_a_refused_item(ingest: Ingest) -> None:
    run = uuid.uuid4().hex[:8]
    now = iso(datetime.now(UTC))
    good = f'{{"type":"OperatorSignedIn","event_id":"term-{run}-1","occurred_at":"{now}","operator_id":"OP-0231","equipment_id":"{PRESS}"}}'
    bad = f'{{ "type": "MaterialMoved", "event_id": "wms-{run}-2", "occurred_at": "{now}", "lot_id": "LOT-2026-0117", "from_location": "WH1-A-03", "to_location": "LINE1-SUPPLY", "quantity": 0 }}'
    status, answer = await post(ingest, f"{good}\n\n{bad}\n".encode(), content_type="application/x-ndjson")
    assert status == 202, answer
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected"]
    assert [(e["field"], e["rule"]) for e in answer["results"][1]["errors"]] == [("quantity", "exclusiveMinimum")]
    operator_topic = CATALOGUE.topic_for("OperatorSignedIn").name
    found = await asyncio.to_thread(consume, ingest, operator_topic, {f"term-{run}-1"})
    assert found[f"term-{run}-1"][2]["operator_id"] == "OP-0231"
    rejection_id = f"rejected:{answer['request_id']}:1"
    dead = await asyncio.to_thread(consume, ingest, CATALOGUE.topic_for("EventRejected").name, {rejection_id})
    assert dead[rejection_id][2]["payload"] == bad  # verbatim, spaces included


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("token", [None, "not-the-token", ""])
async def test_no_or_wrong_token_is_401(ingest: Ingest, token: str | None) -> None:
    status, answer = await post(ingest, b"[]", token=token)
    assert status == 401 and answer["error"] == "unauthorized"


@pytest.mark.asyncio(loop_scope="session")
async def test_over_the_limits_is_413(ingest: Ingest) -> None:
    item = {"type": "MachineStateChanged", "event_id": "x", "occurred_at": "2026-11-02T06:00:00Z",
            "equipment_id": PRESS, "state": "RUNNING"}
    status, answer = await post(ingest, orjson.dumps([item] * 51))
    assert status == 413 and "MOM_INGEST_MAX_EVENTS" in answer["message"]
    status, answer = await post(ingest, b"\n".join([orjson.dumps(item)] * 51), content_type="application/x-ndjson")
    assert status == 413 and "MOM_INGEST_MAX_EVENTS" in answer["message"]
    status, answer = await post(ingest, orjson.dumps([{**item, "reason_code": "x" * 70_000}]))
    assert status == 413 and "MOM_INGEST_MAX_BYTES" in answer["message"]


@pytest.mark.asyncio(loop_scope="session")
async def test_broken_json_is_400_naming_the_position(ingest: Ingest) -> None:
    status, answer = await post(ingest, b'[{"type": "MachineStateChanged",\n  "event_id": }]')
    assert status == 400 and answer["error"] == "json" and "line 2" in answer["message"]
    status, answer = await post(ingest, b'{"type":"MachineStateChanged"}\n{"type":\n', content_type="application/x-ndjson")
    assert status == 400 and "line 2" in answer["message"]
    status, answer = await post(ingest, b"[]")
    assert status == 400 and answer["error"] == "empty"
    status, answer = await post(ingest, b'{"type": "MachineStateChanged"}')
    assert status == 400 and "array" in answer["message"]


@pytest.mark.asyncio(loop_scope="session")
async def test_health_readiness_metrics_and_openapi(ingest: Ingest) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ingest.url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{ingest.url}/readyz") as response:
            assert response.status == 200, await response.text()
        async with session.get(f"{ingest.url}/metrics") as response:
            assert "mom_ingest_requests_total" in await response.text()
        async with session.get(f"{ingest.url}/openapi.json") as response:
            document = orjson.loads(await response.read())
            assert document["openapi"].startswith("3.1") and "/v1/events" in document["paths"]
        async with session.get(f"{ingest.url}/openapi.yaml") as response:
            assert response.status == 200 and b"openapi: 3.1" in await response.read()
