"""The OPC UA bridge against a real asyncua server (the simulator's) and the real Kafka: monitored items,
a server restart answered by reconnecting and subscribing again, and a bridge restart with nothing lost.

The server listens on MOM_TEST_OPCUA_PORT (default 28840).
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.bridge import Bridges, BridgeSettings
from services.ingest.bridge_config import parse
from simulator.opcua_server import OpcUaPlant

from .test_bridge_mqtt import _sink, machine_events, unique

pytestmark = pytest.mark.integration

PORT = int(os.environ.get("MOM_TEST_OPCUA_PORT", "28840"))


async def _start_bridges(prepared, plant: OpcUaPlant, config: dict, buffer_dir) -> Bridges:
    settings = BridgeSettings(config_path=None, mqtt_url=None, opcua_url=plant.url, buffer_dir=buffer_dir, retry_s=0.2)
    bridges = Bridges(settings, parse(config), _sink(prepared))
    await bridges.start()
    await asyncio.wait_for(bridges.opcua.connected.wait(), timeout=20)
    return bridges


async def _until(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.asyncio(loop_scope="session")
async def test_monitored_items_reconnect_and_restart(prepared, tmp_path) -> None:
    run = uuid.uuid4().hex[:10]
    machine, unit = f"press07-{run}", f"acme.berlin.assembly.{run}.press07"
    plant = OpcUaPlant([machine], port=PORT)
    await plant.start()
    config = {
        "opcua": {"publishing_interval_ms": 50},
        "tags": {"state": {"kind": "state"}, "good": {"kind": "counter"},
                 "temperature": {"kind": "analog", "parameter": "temperature", "unit": "degC"}},
        "equipment": [{"id": unit, "opcua_nodes": {
            "state": plant.node_id(machine, "State"), "good": plant.node_id(machine, "GoodCount"),
            "temperature": plant.node_id(machine, "Temperature")}}],
    }
    buffer_dir = tmp_path / "buffer"
    clock = datetime.now(UTC) - timedelta(minutes=30)

    def at(seconds: int) -> datetime:
        return clock + timedelta(seconds=seconds)

    bridges = await _start_bridges(prepared, plant, config, buffer_dir)
    try:
        # Given a press that starts running and counts
        await plant.write(machine, "State", "RUNNING", at=at(1))
        await plant.write(machine, "GoodCount", 5, at=at(2))
        await plant.write(machine, "Temperature", 70.5, at=at(3))
        await plant.write(machine, "GoodCount", 9, at=at(4))
        await _until(lambda: bridges.runtime.delivered >= 5, "the first values did not arrive")
        # When the server restarts (its counter starts again at 0), the bridge reconnects and subscribes again
        await plant.stop()
        plant = OpcUaPlant([machine], port=PORT)
        await plant.start()
        await _until(lambda: bridges.opcua.connections >= 2 and bridges.opcua.connected.is_set(),
                     "the bridge did not reconnect", timeout_s=40)
        await asyncio.sleep(0.3)
        await plant.write(machine, "GoodCount", 4, at=at(10))
        await plant.write(machine, "State", "DOWN", at=at(11))
        # And the bridge restarts while the press goes on counting
        await _until(lambda: bridges.runtime.buffer.pending == 0 and
                     bridges.runtime.mapper.state().get(f"{unit}|good") == 4, "the counts after the restart did not arrive")
        await bridges.stop()
        await plant.write(machine, "GoodCount", 10, at=at(20))
        bridges = await _start_bridges(prepared, plant, config, buffer_dir)

        def complete(records: list[dict]) -> bool:
            return sum(r.get("good", 0) for r in unique(records) if r["type"] == "PartsProduced") >= 19

        records = unique(await asyncio.to_thread(machine_events, prepared, {unit}, complete))
        # Then Kafka holds each increase once, including those across both restarts
        assert [r["good"] for r in records if r["type"] == "PartsProduced"] == [5, 4, 4, 6]
        states = [r["state"] for r in records if r["type"] == "MachineStateChanged"]
        assert states == ["IDLE", "RUNNING", "IDLE", "DOWN"]
        assert 70.5 in [r["value"] for r in records if r["type"] == "ProcessValueMeasured"]
        running = next(r for r in records if r.get("state") == "RUNNING")
        assert running["occurred_at"] == at(1).replace(microsecond=at(1).microsecond // 1000 * 1000)
        assert running["event_id"].startswith(f"opcua:{unit}:state:")
    finally:
        await bridges.stop()
        await plant.stop()
