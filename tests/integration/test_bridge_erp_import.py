"""`mom import` against the real stack: ERP exports (CSV and B2MML) through ingest's HTTP API (a running
ingest process) and with --direct straight to Kafka; bad rows refused by line, good rows on mom.plan.events."""
from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from services.common import localstack
from services.common.settings import REPO_ROOT
from services.ingest.erp.importer import run

pytestmark = pytest.mark.integration


def _exports(folder: Path, run_id: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "products.csv": f"product_id,name,ideal_cycle_time_s\nP-{run_id},Bracket {run_id},12\n",
        "bom.csv": f"product_id,material_id,quantity_per_unit\nP-{run_id},STEEL-{run_id},0.35\n",
        "routing.csv": f"product_id,operation,equipment_id,ideal_cycle_time_s\nP-{run_id},0010,acme.berlin.press07,12\n"
                       f"P-{run_id},0020,Not An Id,10\n",
        "orders.csv": f"order_id,product_id,quantity,due_at\nWO-{run_id}-1,P-{run_id},500,2026-11-02T14:00:00Z\n"
                      f"WO-{run_id}-2,P-{run_id},none,\n",
        "lots.xml": f"""<?xml version="1.0"?>
<MaterialInformation xmlns="http://www.mesa.org/xml/B2MML">
  <MaterialLot>
    <ID>LOT-{run_id}</ID><MaterialDefinitionID>STEEL-{run_id}</MaterialDefinitionID>
    <StorageLocation>stores</StorageLocation>
    <Quantity><QuantityString>1200</QuantityString><UnitOfMeasure>kg</UnitOfMeasure></Quantity>
  </MaterialLot>
</MaterialInformation>
""",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return [str(folder / name) for name in files]


def plan_events(bootstrap: str, codec, keys: set[str], count: int, timeout_s: float = 30.0) -> dict[str, dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-erp-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["mom.plan.events"])
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(found) < count:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if not message.error() and message.key().decode() in keys:
                    event_type, record = codec.decode(message.value())
                    found[record["event_id"]] = {"type": event_type, **record}
    finally:
        consumer.close()
    return found


@pytest.mark.asyncio(loop_scope="session")
async def test_import_over_http_refuses_bad_rows_and_sends_the_rest(prepared, tmp_path) -> None:
    run_id = uuid.uuid4().hex[:8]
    files = _exports(tmp_path, run_id)
    status = await asyncio.to_thread(localstack.up, prepared.config, services=("ingest",))
    try:
        out, err = io.StringIO(), io.StringIO()
        env = {"MOM_INGEST_URL": status["ingest"]["url"], "MOM_INGEST_TOKEN": status["ingest"]["token"]}
        code = await asyncio.to_thread(run, files, env=env, out=out, err=err)
        # Then the orders' bad quantity is refused by the parser, and the routing's bad equipment id by
        # ingest's validation (which refuses the whole product), each with its file and line
        lines = err.getvalue().splitlines()
        assert code == 1, err.getvalue()
        assert any(line.endswith("orders.csv:3: quantity must be a number, got 'none'") for line in lines), lines
        assert any("products.csv:2: refused by ingest: routing[1].equipment_id must be a dotted ISA-95" in line
                   for line in lines), lines
        assert out.getvalue().strip() == "2 events sent, 2 rows refused"
        found = await asyncio.to_thread(plan_events, prepared.kafka.bootstrap, prepared.codec,
                                        {f"WO-{run_id}-1", f"LOT-{run_id}"}, 2)
        by_type = {record["type"]: record for record in found.values()}
        assert set(by_type) == {"ProductionOrderReleased", "MaterialLotReceived"}
        assert by_type["ProductionOrderReleased"]["quantity"] == 500.0
        assert by_type["MaterialLotReceived"]["unit"] == "kg" and by_type["MaterialLotReceived"]["source"] == "erp-import"
    finally:
        await asyncio.to_thread(localstack.stop_services, prepared.config, ["ingest"])


def test_mom_import_direct_to_kafka_and_again_with_the_same_ids(prepared, tmp_path) -> None:
    run_id = uuid.uuid4().hex[:8]
    files = _exports(tmp_path, run_id)
    (tmp_path / "routing.csv").write_text(
        f"product_id,operation,equipment_id,ideal_cycle_time_s\nP-{run_id},0010,acme.berlin.press07,12\n")
    env = {**os.environ, "MOM_KAFKA_BOOTSTRAP": prepared.kafka.bootstrap,
           "MOM_REGISTRY_URL": prepared.status["registry"]["url"] or ""}
    command = [sys.executable, "-m", "services.cli", "import", "--direct", *files]
    first = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1, first.stderr
    assert "orders.csv:3: quantity must be a number, got 'none'" in first.stderr
    assert first.stdout.strip() == "3 events sent, 1 rows refused"
    again = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.stdout.strip() == "3 events sent, 1 rows refused"
    found = plan_events(prepared.kafka.bootstrap, prepared.codec, {f"P-{run_id}", f"WO-{run_id}-1", f"LOT-{run_id}"}, 3)
    # the second import sent the same three events: the same ids, so consumers apply them once
    assert len(found) == 3
    product = next(r for r in found.values() if r["type"] == "ProductDefined")
    assert product["bom"] == [{"material_id": f"STEEL-{run_id}", "quantity_per_unit": 0.35}]
    assert [step["operation"] for step in product["routing"]] == ["0010"]
