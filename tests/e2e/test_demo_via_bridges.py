"""End to end: the demo's `--via mqtt` and `--via opcua` paths with the small plant's shift. The machines'
facts go as Sparkplug B through a real Mosquitto, or as variables of the simulator's asyncua server,
through ingest's bridges; plans, orders, operators and alarms through ingest's HTTP API. Then every
time element and count per unit in kpi.oee equals the ground truth of the same (millisecond)
simulation, exactly as on the HTTP path, inventory's on-hand equals the material balance, and the
machine topic holds the machines' facts as the bridges made them (their ids), not as HTTP items.

Mosquitto listens on MOM_TEST_MQTT_PORT + 2 (default 28885), the OPC UA server on
MOM_TEST_OPCUA_PORT + 2 (default 28842), beside the bridge tests' own.
"""
from __future__ import annotations

import os
import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer

from services.common import localstack
from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.settings import REPO_ROOT
from simulator import engine, plant, truth
from simulator.demo import deliver
from simulator.floor import MACHINE_FACTS, whole_milliseconds
from simulator.progress import wait_caught_up
from tests.e2e.test_ground_truth import PROJECTING, SMALL, mismatches, running  # noqa: F401 - `running` is a fixture

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
MQTT_PORT = int(os.environ.get("MOM_TEST_MQTT_PORT", "28883")) + 2
OPCUA_PORT = int(os.environ.get("MOM_TEST_OPCUA_PORT", "28840")) + 2
ORIGIN = {"mqtt": "sparkplug:", "opcua": "opcua:"}


def machine_topic(status: dict, units: set[str], good: int, timeout_s: float = 60.0) -> list[dict]:
    """The machine topic's records of the units, until their PartsProduced add up to `good`."""
    catalogue = Catalogue.load()
    codec = codec_for(catalogue, status["registry"]["url"] or "", REPO_ROOT / "schemas")
    consumer = Consumer({"bootstrap.servers": status["kafka"]["bootstrap"], "group.id": f"test-via-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([catalogue.topic_for("PartsProduced").name])
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and sum(r.get("good", 0) for r in records
                                                  if r["type"] == "PartsProduced") < good:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() or message.key().decode() not in units:
                    continue
                event_type, record = codec.decode(message.value())
                records.append({"type": event_type, **record})
    finally:
        consumer.close()
    return records


@pytest.mark.parametrize("via", ["mqtt", "opcua"])
def test_the_shift_over_the_shop_floor_protocols_gives_the_ground_truth(running, stack: localstack.StackConfig,  # noqa: F811
                                                                        via: str) -> None:
    # Given the small plant's shift in whole milliseconds, with a fresh tag
    sim = whole_milliseconds(engine.simulate(plant.load(SMALL), seed=11, tag=uuid.uuid4().hex[:8]))
    # When the demo sends it with its machines over the shop-floor protocol and every service caught up
    sent = deliver(sim, via, running, stack.state_dir / f"via-{via}", PROJECTING, mqtt_port=MQTT_PORT,
                   opcua_port=OPCUA_PORT)
    assert sent.refused == 0, sent.refusals[:5]
    wait_caught_up(running, PROJECTING)
    # Then kpi.oee equals the ground truth to the microsecond and the part
    found = mismatches(running, sim)
    assert not found, "\n".join(found)
    # And on-hand equals the material balance
    with psycopg.connect(running["database"]["analyst_url"], autocommit=True) as conn:
        rows = conn.execute("SELECT material_id, location_id, quantity FROM inventory.on_hand WHERE material_id LIKE %s",
                            (f"%-{sim.tag.upper()}",)).fetchall()
    on_hand = {(m, loc): float(q) for m, loc, q in rows if abs(float(q)) > 1e-6}
    assert on_hand == pytest.approx(truth.material_balance(sim))
    # And the machines' facts on Kafka are the bridge's, with the simulation's reasons and counts
    units = set(sim.facts.states)
    good = sum(e["good"] for e in sim.events if e["type"] == "PartsProduced")
    records = machine_topic(running, units, good)
    facts = [r for r in records if r["type"] in MACHINE_FACTS]
    assert facts and all(r["event_id"].startswith(ORIGIN[via]) for r in facts)
    assert sum(r["good"] for r in facts if r["type"] == "PartsProduced") == good
    assert sum(r["reject"] for r in facts if r["type"] == "PartsProduced") == sum(
        e["reject"] for e in sim.events if e["type"] == "PartsProduced")
    reasons = sorted((r["equipment_id"], r["state"], r.get("reason_code") or "") for r in facts
                     if r["type"] == "MachineStateChanged")
    assert reasons == sorted((e["equipment_id"], e["state"], e.get("reason_code") or "") for e in sim.events
                             if e["type"] == "MachineStateChanged")
