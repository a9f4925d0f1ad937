"""End to end through ingest with the inventory service running: a received lot is held by quality;
loading it is then refused and reported by inventory; after quality releases it the same loading is
accepted. Then `mom replay inventory` rebuilds tables identical to the live ones.

Quality's LotHeld and LotReleased are produced onto quality's topic by the test itself (the records
quality publishes, with its schemas), so this test does not depend on quality's hold rules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from services.cli import prepare
from services.common import localstack
from services.common.kafka import end_offsets
from services.common.settings import REPO_ROOT, KafkaSettings
from tests.waiting import positions_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
SERVICES = ("ingest", "inventory")
# Inventory's decisions depend on the order of events across topics; a worker starting on a backlog
# (live or replaying) lets each lagging partition hold the others back this long while it is fetched.
IDLE_MS = "5000"


@pytest.fixture(scope="module")
def running(stack: localstack.StackConfig) -> Iterator[dict]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOM_BATCH_MAX_IDLE_MS", IDLE_MS)
        yield localstack.up(stack, services=SERVICES, after_infra=prepare)
    localstack.stop_services(stack, ("inventory",))


def post(status: dict, events: list[dict]) -> None:
    request = urllib.request.Request(
        status["ingest"]["url"] + "/v1/events", data=json.dumps(events).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {status['ingest']['token']}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert answer["rejected"] == 0, answer


def publish_quality(status: dict, event_type: str, **body) -> None:
    """One of quality's lot events, as quality publishes it: keyed by lot id, recorded now."""
    from services.common import kafka
    from services.common.avro import codec_for
    from services.common.catalogue import Catalogue
    catalogue = Catalogue.load()
    codec = codec_for(catalogue, status["registry"]["url"] or "", REPO_ROOT / "schemas")
    now = datetime.now(UTC)
    record = {"occurred_at": now, "recorded_at": now, "source": "quality", "correlation_id": None, **body}
    producer = kafka.producer(KafkaSettings(bootstrap=status["kafka"]["bootstrap"]))
    producer.produce(catalogue.topic_for(event_type).name, key=body["lot_id"].encode(),
                     value=codec.encode(event_type, record))
    assert producer.flush(30) == 0


def analyst_rows(status: dict, sql: str, args: tuple, expected: list) -> list:
    """The rows of `sql` (as the analyst) once they equal `expected`, or when inventory stops progressing."""
    rows: list = []
    with psycopg.connect(status["database"]["analyst_url"], autocommit=True) as conn:
        def check() -> bool:
            rows[:] = conn.execute(sql, args).fetchall()
            return rows == expected
        wait_until(check, positions_of(status["database"]["url"], "inventory"), interval_s=0.3)
    return rows


def test_a_held_lot_is_refused_and_after_release_consumed_then_a_replay_is_identical(running):
    run = uuid.uuid4().hex[:8]
    lot, material = f"LOT-{run}", f"STEEL-{run}"
    unit = f"acme{run}.berlin.assembly.line1.press07"
    order = f"WO-{run}"

    def loading(n: int, minute: int) -> dict:
        return {"type": "MaterialLoaded", "event_id": f"{run}-load-{n}", "occurred_at": f"2026-11-02T08:{minute}:00Z",
                "equipment_id": unit, "order_id": order, "lot_id": lot, "quantity": 40.0}

    # Given a received lot that quality holds
    post(running, [
        {"type": "MaterialLotReceived", "event_id": f"{run}-1", "occurred_at": "2026-11-02T06:00:00Z",
         "lot_id": lot, "material_id": material, "quantity": 100.0, "unit": "kg", "location_id": "WH1-A-03"}])
    assert analyst_rows(running, "SELECT status FROM inventory.lots WHERE lot_id = %s", (lot,),
                        [("AVAILABLE",)]) == [("AVAILABLE",)]
    publish_quality(running, "LotHeld", event_id=f"NC-{run}:held", lot_id=lot, nonconformance_id=f"NC-{run}",
                    equipment_id=unit, order_id=None, reason="thickness 2.20 mm above USL 2.05 mm",
                    caused_by=f"{run}-inspection")
    assert analyst_rows(running, "SELECT status, quantity FROM inventory.lots WHERE lot_id = %s", (lot,),
                        [("HELD", 100.0)]) == [("HELD", 100.0)]

    # When an operator loads it, Then inventory refuses and reports it, and books nothing
    post(running, [loading(1, 10)])
    refused = analyst_rows(running, "SELECT attempted, lot_status, caused_by FROM inventory.refusals WHERE lot_id = %s",
                           (lot,), [("MaterialLoaded", "HELD", f"{run}-load-1")])
    assert refused == [("MaterialLoaded", "HELD", f"{run}-load-1")]
    assert analyst_rows(running, "SELECT quantity FROM inventory.on_hand WHERE material_id = %s", (material,),
                        [(100.0,)]) == [(100.0,)]

    # When quality releases the lot, Then the same loading is accepted into the order's output lot
    publish_quality(running, "LotReleased", event_id=f"NC-{run}:released", lot_id=lot,
                    nonconformance_ids=[f"NC-{run}"], caused_by=f"{run}-disposition")
    assert analyst_rows(running, "SELECT status FROM inventory.lots WHERE lot_id = %s", (lot,),
                        [("AVAILABLE",)]) == [("AVAILABLE",)]
    post(running, [loading(2, 30)])
    assert analyst_rows(running, "SELECT status, quantity FROM inventory.lots WHERE lot_id = %s", (lot,),
                        [("AVAILABLE", 60.0)]) == [("AVAILABLE", 60.0)]
    assert analyst_rows(running, "SELECT lot_id, depth, quantity FROM inventory.trace(%s)", (f"LOT-{order}",),
                        [(lot, 1, 40.0)]) == [(lot, 1, 40.0)]
    metrics = urllib.request.urlopen(running["services"]["inventory"]["metrics"], timeout=10).read().decode()
    assert 'mom_inventory_transactions_refused_total{attempted="MaterialLoaded"}' in metrics

    # `mom replay inventory` rebuilds every table from offset 0, identical to the live ones
    kafka = KafkaSettings(bootstrap=running["kafka"]["bootstrap"])
    from services.common.catalogue import Catalogue
    from services.common.settings import Settings
    from services.inventory.app import build
    topics = build(Settings(service="inventory", kafka=kafka, database_url="", registry_url=""),
                   Catalogue.load()).input_topics
    target = sum(end_offsets(kafka, topics).values())
    wait_until(lambda: positions_of(running["database"]["url"], "inventory")() >= target or None,
               positions_of(running["database"]["url"], "inventory"))
    env = {**os.environ, **localstack.service_env(running_config(), "inventory"),
           "MOM_ADMIN_DATABASE_URL": running["database"]["url"], "MOM_BATCH_MAX_IDLE_MS": IDLE_MS}
    result = subprocess.run([sys.executable, "-m", "services.cli", "replay", "inventory", "--into", f"inventory_e2e_{run}"],
                            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    try:
        assert result.returncode == 0, result.stdout + result.stderr + differing_rows(running, f"inventory_e2e_{run}")
        assert "movement_ledger" in result.stdout and "only live" not in result.stdout, result.stdout
    finally:
        with psycopg.connect(running["database"]["url"], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "inventory_e2e_{run}" CASCADE')


def differing_rows(status: dict, rebuilt: str) -> str:
    """The rows of the lot and ledger tables that differ, to read a failure."""
    lines = []
    with psycopg.connect(status["database"]["url"], autocommit=True) as conn:
        for table in ("lot_state", "movement_ledger", "refusal_log"):
            for a, b, side in (("inventory", rebuilt, "live"), (rebuilt, "inventory", "rebuilt")):
                for row in conn.execute(f'SELECT * FROM "{a}"."{table}" EXCEPT ALL SELECT * FROM "{b}"."{table}"'):
                    lines.append(f"{table} only {side}: {row}")
    return "\n".join(lines)


def running_config() -> localstack.StackConfig:
    from tests.conftest import test_stack_config
    return test_stack_config()
