"""Schema-driven traffic against a live ingest over HTTP.

1. schemathesis generates requests from the OpenAPI document ingest serves (`/openapi.json`), in its
   positive mode (bodies that fit the document) and its negative mode (bodies that break it): no
   answer is a 5xx, every answer conforms to the document, and every refused item names a field and
   a rule.
2. hypothesis generates, from the Avro schemas (tests/chaos/payloads.py),
   good items (with fresh ids), items broken on purpose and arbitrary JSON, many per request: every
   good item is accepted and is then found on its topic by event id, every broken one is refused naming
   the broken field and rule, and kept on mom.ingest.rejected.

Afterwards ingest still answers /healthz and /readyz, under the same process id (it did not crash).
"""
from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import pytest
import requests
import schemathesis
from confluent_kafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from services.cli import prepare
from services.common import kafka, localstack
from services.common.kafka import end_offsets
from tests.chaos.payloads import NAMELESS, RULES, Tame, arbitrary_items, bad_events, good_events

pytestmark = pytest.mark.integration

REJECTED = "mom.ingest.rejected"
SCHEMATHESIS_EXAMPLES = 120   # per generation mode, one request each
BULK_EXAMPLES = 400           # each a list of BULK_PER_EXAMPLE generated items, sent BATCH per request
BULK_PER_EXAMPLE = 10
BATCH = 500
SENT: dict[str, int] = defaultdict(int)  # payloads sent, by kind (reported by the last test)


@pytest.fixture(scope="module")
def ingest(stack: localstack.StackConfig) -> dict:
    status = localstack.up(stack, services=("ingest",), after_infra=prepare)
    pid = localstack._our_pid(stack, "ingest")
    return {"url": status["ingest"]["url"], "token": status["ingest"]["token"], "pid": pid, "config": stack,
            "bootstrap": status["kafka"]["bootstrap"], "tag": uuid.uuid4().hex[:10],
            "accepted": defaultdict(set), "refused": set(),
            "ends": end_offsets(kafka.KafkaSettings(bootstrap=status["kafka"]["bootstrap"]),
                                ["mom.plan.events", "mom.machine.events", "mom.operator.events", REJECTED])}


def check_items(body: dict) -> None:
    for result in body.get("results", ()):
        assert result["status"] in ("accepted", "rejected"), result
        if result["status"] == "rejected":
            assert result["errors"], result
            for error in result["errors"]:
                assert isinstance(error["field"], str) and error["rule"] in RULES and error["message"], error
                assert error["field"] or error["rule"] in NAMELESS, error


@pytest.fixture(scope="module")
def operation(ingest):
    schema = schemathesis.openapi.from_url(ingest["url"] + "/openapi.json")
    return schema["/v1/events"]["POST"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_traffic_from_the_openapi_document_gets_no_5xx_and_conforms(ingest, operation, mode):
    session = requests.Session()
    auth = {"Authorization": f"Bearer {ingest['token']}"}

    @settings(max_examples=SCHEMATHESIS_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case):
        response = case.call(base_url=ingest["url"], session=session, headers=auth)
        SENT["schemathesis requests"] += 1
        SENT["schemathesis items"] += len(case.body) if isinstance(case.body, list) else 1
        assert response.status_code < 500, (response.status_code, response.text[:500])
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                 response_schema_conformance])
        if response.status_code == 202:
            check_items(response.json())

    send()


def json_can_carry(item) -> bool:
    """NaN, infinities and integers beyond 64 bits make the whole body invalid JSON for ingest (a 400):
    the translator alone is fuzzed with those."""
    try:
        orjson.loads(json.dumps(item))
        return True
    except (ValueError, orjson.JSONDecodeError):
        return False


def post(ingest: dict, items: list) -> dict:
    request = urllib.request.Request(
        ingest["url"] + "/v1/events", data=json.dumps(items, allow_nan=True).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ingest['token']}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202
        return json.loads(response.read())


def test_generated_items_good_and_bad_are_accepted_or_refused_by_field_and_rule(ingest):
    tame = Tame(prefix=f"fuzz{ingest['tag']}", hour=datetime(2026, 1, 5, 6, tzinfo=UTC))
    kinds = st.one_of(good_events(tame).map(lambda e: ("good", e, None)),
                      bad_events(tame).map(lambda b: ("bad", b[0], (b[1], b[2]))),
                      arbitrary_items().map(lambda e: ("any", e, None))).filter(lambda k: json_can_carry(k[1]))
    generated: list[tuple[str, object, tuple[str, str] | None]] = []

    @settings(max_examples=BULK_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(kinds, min_size=BULK_PER_EXAMPLE, max_size=BULK_PER_EXAMPLE))
    def generate(kinds):  # generated first, then sent BATCH at a time below
        generated.extend(kinds)

    generate()
    assert len(generated) >= BULK_EXAMPLES * BULK_PER_EXAMPLE * 0.9
    for first in range(0, len(generated), BATCH):
        batch = generated[first:first + BATCH]
        items = []
        for number, (kind, item, _) in enumerate(batch, start=first):
            if kind == "good":  # fresh ids: the topics keep every earlier run's events
                item = {**item, "event_id": f"fuzz-{ingest['tag']}-{number}"}
            items.append(item)
        body = post(ingest, items)
        SENT["bulk items"] += len(items)
        check_items(body)
        for (kind, item, broken), result in zip(batch, body["results"], strict=True):
            if kind == "good":
                assert result["status"] == "accepted", (items[result["index"]], result)
                ingest["accepted"][item["type"]].add(result["event_id"])
            elif kind == "bad":
                assert result["status"] == "rejected", item
                assert broken in {(e["field"], e["rule"]) for e in result["errors"]}, (broken, result["errors"])
            if result["status"] == "rejected":
                ingest["refused"].add(f"rejected:{body['request_id']}:{result['index']}")


def topic_ids(bootstrap: str, starts: dict[tuple[str, int], int], topics: set[str]) -> dict[str, list[str]]:
    """event_id headers of every record after `starts`, by event type, read with read_committed."""
    targets = end_offsets(kafka.KafkaSettings(bootstrap=bootstrap), sorted(topics))
    consumer = kafka.consumer(kafka.KafkaSettings(bootstrap=bootstrap), f"test.fuzz.{uuid.uuid4().hex[:8]}")
    consumer.assign([TopicPartition(t, p, starts.get((t, p), 0)) for (t, p) in targets])
    found: dict[str, list[str]] = defaultdict(list)
    position = {tp: starts.get(tp, 0) for tp in targets}
    deadline = time.monotonic() + 60
    try:
        while any(position[tp] < end for tp, end in targets.items()) and time.monotonic() < deadline:
            for message in consumer.consume(2000, 1.0):
                if message.error():
                    continue
                position[(message.topic(), message.partition())] = message.offset() + 1
                headers = dict(message.headers() or ())
                found[headers["event_type"].decode()].append(headers["event_id"].decode())
    finally:
        consumer.close()
    return found


def test_every_good_item_lands_on_its_topic_and_every_refusal_on_the_dead_letter_topic(ingest):
    accepted = ingest["accepted"]
    assert sum(map(len, accepted.values())) > 1000, "too few good items to prove anything"
    found = topic_ids(ingest["bootstrap"], ingest["ends"],
                      {"mom.plan.events", "mom.machine.events", "mom.operator.events", REJECTED})
    for event_type, ids in accepted.items():
        assert ids <= set(found[event_type]), f"{event_type}: {len(ids - set(found[event_type]))} good items missing"
    assert ingest["refused"] <= set(found["EventRejected"])


def test_ingest_survived_the_traffic(ingest):
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(ingest["url"] + path, timeout=10) as response:
            assert response.status == 200
    assert localstack._our_pid(ingest["config"], "ingest") == ingest["pid"], "ingest restarted: it crashed"
    total = sum(v for k, v in SENT.items() if "items" in k)
    print(f"\nfuzz traffic to ingest: {dict(SENT)}")
    assert total >= 4000, SENT
