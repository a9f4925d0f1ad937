"""End to end through ingest: a failed inspection holds its lot (on the topic and in quality.holds), a
RELEASE disposition releases it; then `mom replay quality` rebuilds tables identical to the live ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import TopicPartition

from services.cli import prepare
from services.common import kafka, localstack
from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.settings import REPO_ROOT, KafkaSettings
from tests.waiting import positions_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
SERVICES = ("ingest", "quality")


@pytest.fixture(scope="module")
def running(stack: localstack.StackConfig) -> Iterator[dict]:
    yield localstack.up(stack, services=SERVICES, after_infra=prepare)
    localstack.stop_services(stack, SERVICES)


def post(status: dict, events: list[dict]) -> dict:
    request = urllib.request.Request(
        status["ingest"]["url"] + "/v1/events", data=json.dumps(events).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {status['ingest']['token']}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert answer["rejected"] == 0, answer
    return answer


def analyst_rows(status: dict, sql: str, args: tuple, expected) -> list:
    """The rows of `sql` (as the analyst role) once they equal `expected`, or when quality stops progressing."""
    rows: list = []
    with psycopg.connect(status["database"]["analyst_url"], autocommit=True) as conn:
        def check() -> bool:
            rows[:] = conn.execute(sql, args).fetchall()
            return rows == expected
        wait_until(check, positions_of(status["database"]["url"], "quality"), interval_s=0.3)
    return rows


def quality_events_about(status: dict, lot_id: str, wanted: set[str], timeout_s: float = 60) -> dict[str, dict]:
    """Quality's events keyed by `lot_id`, read from the topic until every wanted type was seen."""
    catalogue = Catalogue.load()
    codec = codec_for(catalogue, status["registry"]["url"] or "", REPO_ROOT / "schemas")
    topic = catalogue.topic_for("LotHeld").name
    consumer = kafka.consumer(KafkaSettings(bootstrap=status["kafka"]["bootstrap"]), f"test.quality.{uuid.uuid4().hex[:8]}")
    found: dict[str, dict] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while not wanted <= found.keys() and time.monotonic() < deadline:
            for record in consumer.consume(500, 0.5):
                if record.error() is None and record.key() == lot_id.encode():
                    event_type, body = codec.decode(record.value())
                    found[event_type] = body
    finally:
        consumer.close()
    return found


def caught_up(status: dict) -> bool:
    """Quality's positions are at the end of every input topic."""
    from services.common.kafka import end_offsets
    catalogue = Catalogue.load()
    topics = sorted({catalogue.topic_for(t).name for t in ("InspectionRecorded", "ProductionReported", "InspectionPlanDefined")})
    ends = end_offsets(KafkaSettings(bootstrap=status["kafka"]["bootstrap"]), topics)
    with psycopg.connect(status["database"]["url"], autocommit=True) as conn:
        done = dict(((t, p), o) for t, p, o in conn.execute("SELECT topic, partition, next_offset FROM quality.positions"))
    return all(done.get(tp, 0) >= end for tp, end in ends.items())


def test_a_failed_inspection_holds_the_lot_and_a_release_releases_it(running, stack):
    run = uuid.uuid4().hex[:8]
    plan, lot, char = f"IP-{run}", f"LOT-WO-{run}", f"HOLE-DIA-{run}"
    unit = f"acme{run}.berlin.assembly.line1.press07"
    post(running, [
        {"type": "InspectionPlanDefined", "event_id": f"{run}-1", "occurred_at": "2026-11-02T06:00:00Z",
         "plan_id": plan, "product_id": f"P-{run}", "operation": "0010",
         "characteristics": [{"characteristic_id": char, "name": "Hole diameter", "kind": "variable", "lsl": 9.95,
                              "usl": 10.05, "unit": "mm", "sample_size": 1, "every_n_parts": 50}]},
        {"type": "InspectionRecorded", "event_id": f"{run}-2", "occurred_at": "2026-11-02T07:00:00Z",
         "characteristic_id": char, "plan_id": plan, "equipment_id": unit, "order_id": f"WO-{run}", "lot_id": lot,
         "values": [10.01]},
        {"type": "InspectionRecorded", "event_id": f"{run}-3", "occurred_at": "2026-11-02T07:10:00Z",
         "characteristic_id": char, "plan_id": plan, "equipment_id": unit, "order_id": f"WO-{run}", "lot_id": lot,
         "values": [10.08]},
    ])
    held = analyst_rows(running, "SELECT hold_no, active, nonconformance_id, lot_status FROM quality.holds WHERE lot_id = %s",
                        (lot,), [(1, True, f"NC-{run}-3", "HELD")])
    assert held == [(1, True, f"NC-{run}-3", "HELD")]
    on_topic = quality_events_about(running, lot, {"LotHeld"})
    assert on_topic["LotHeld"]["nonconformance_id"] == f"NC-{run}-3"

    post(running, [{"type": "LotDispositioned", "event_id": f"{run}-4", "occurred_at": "2026-11-02T08:00:00Z",
                    "lot_id": lot, "disposition": "RELEASE", "nonconformance_id": f"NC-{run}-3"}])
    released = analyst_rows(running, "SELECT active, outcome, lot_status FROM quality.holds WHERE lot_id = %s",
                            (lot,), [(False, "RELEASE", "RELEASED")])
    assert released == [(False, "RELEASE", "RELEASED")]
    assert analyst_rows(running, "SELECT status, disposition FROM quality.nonconformances WHERE lot_id = %s", (lot,),
                        [("CLOSED", "RELEASE")]) == [("CLOSED", "RELEASE")]
    on_topic = quality_events_about(running, lot, {"LotHeld", "LotReleased"})
    assert on_topic["LotReleased"]["nonconformance_ids"] == [f"NC-{run}-3"]

    # `mom replay quality` rebuilds every table from offset 0, identical to the live ones
    assert wait_until(lambda: caught_up(running), positions_of(running["database"]["url"], "quality"))
    env = {**os.environ, **localstack.service_env(stack, "quality"),
           "MOM_ADMIN_DATABASE_URL": running["database"]["url"]}
    result = subprocess.run([sys.executable, "-m", "services.cli", "replay", "quality", "--into", f"quality_e2e_{run}"],
                            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "hold_rows" in result.stdout and "only live" not in result.stdout
    finally:
        with psycopg.connect(running["database"]["url"], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "quality_e2e_{run}" CASCADE')

