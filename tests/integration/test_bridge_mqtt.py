"""The MQTT bridge against a real Mosquitto broker and the real Kafka: Sparkplug B births, data, sequence
gaps answered by rebirth requests, a death certificate; JSON topics; a Kafka outage and a bridge restart
with nothing lost.

Mosquitto comes from Debian's package (installed here with apt-get when missing) and runs on its own
port (MOM_TEST_MQTT_PORT, default 28883) with a generated configuration, for this module only.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from confluent_kafka import Consumer
from paho.mqtt.enums import CallbackAPIVersion

from services.common import localstack
from services.common.settings import Settings
from services.ingest import sparkplug as sp
from services.ingest.bridge import Bridges, BridgeSettings
from services.ingest.bridge_broker import Mosquitto
from services.ingest.bridge_config import parse
from services.ingest.bridge_sink import DirectSink
from services.ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 3_600_000   # an hour ago: inside ingest's clock-skew window


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Mosquitto broker on a private port (installed with apt-get when missing); its URL."""
    port = int(os.environ.get("MOM_TEST_MQTT_PORT", "28883"))
    with Mosquitto(port, tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker.url


def _sink(prepared, ack_timeout_s: float = 3.0) -> DirectSink:
    common = Settings(service="ingest", kafka=prepared.kafka, database_url="",
                      registry_url=prepared.status["registry"]["url"] or "")
    return DirectSink.from_settings(IngestSettings(common=common, tokens=(), ack_timeout_s=ack_timeout_s),
                                    client="test-bridge", catalogue=prepared.catalogue)


async def _bridges(prepared, mqtt_url: str, config: dict, buffer_dir: Path) -> Bridges:
    settings = BridgeSettings(config_path=None, mqtt_url=mqtt_url, opcua_url=None, buffer_dir=buffer_dir, retry_s=0.2)
    bridges = Bridges(settings, parse(config), _sink(prepared))
    await bridges.start()
    deadline = time.monotonic() + 10
    while not bridges.mqtt.connected:
        assert time.monotonic() < deadline, "the bridge did not connect to the broker"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # its subscriptions are acknowledged right after the connect
    return bridges


def machine_events(prepared, equipment: set[str], until, timeout_s: float = 60.0) -> list[dict]:
    """Records on mom.machine.events for the equipment, in topic order, until `until(records)` holds."""
    consumer = Consumer({"bootstrap.servers": prepared.kafka.bootstrap, "group.id": f"test-bridge-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["mom.machine.events"])
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(records):
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() or message.key().decode() not in equipment:
                    continue
                event_type, record = prepared.codec.decode(message.value())
                records.append({"type": event_type, **record})
    finally:
        consumer.close()
    return records


def unique(records: list[dict]) -> list[dict]:
    seen, out = set(), []
    for record in records:
        if record["event_id"] not in seen:
            seen.add(record["event_id"])
            out.append(record)
    return out


class EdgeNode:
    """A Sparkplug B edge node: births with a will (NDEATH), data with sequence numbers, and a rebirth
    when the host asks for one over NCMD."""

    def __init__(self, url: str, group: str, node: str, devices: list[str]) -> None:
        self.group, self.node, self.devices = group, node, devices
        self.bd_seq, self.seq = 0, 0
        self.rebirths = 0
        self.counts = dict.fromkeys(devices, 0)
        port = int(url.rsplit(":", 1)[1])
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{node}")
        death = sp.encode(sp.Payload(timestamp=T0, metrics=(sp.Metric(name="bdSeq", datatype=sp.UINT64, value=self.bd_seq),)))
        self.client.will_set(sp.topic_of(group, "NDEATH", node), death, qos=1)
        self.client.on_message = self._on_command
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(sp.topic_of(group, "NCMD", node), qos=1)
        self.client.loop_start()

    def _publish(self, kind: str, metrics: tuple, device: str | None = None, ts: int = T0, seq: int | None = None) -> None:
        if seq is None:
            seq = self.seq
            self.seq = (self.seq + 1) % 256
        payload = sp.encode(sp.Payload(timestamp=ts, seq=seq, metrics=metrics))
        self.client.publish(sp.topic_of(self.group, kind, self.node, device), payload, qos=1).wait_for_publish(5)

    def birth(self, ts: int = T0) -> None:
        self.seq = 0
        self._publish("NBIRTH", (sp.Metric(name="bdSeq", datatype=sp.UINT64, value=self.bd_seq),
                                 sp.Metric(name="Node Control/Rebirth", datatype=sp.BOOLEAN, value=False)), ts=ts)
        for device in self.devices:
            self._publish("DBIRTH", (sp.Metric(name="State", alias=1, datatype=sp.STRING, value="IDLE"),
                                     sp.Metric(name="Good", alias=2, datatype=sp.UINT32, value=self.counts[device]),
                                     sp.Metric(name="Temp", alias=3, datatype=sp.DOUBLE, value=20.0)), device, ts=ts)

    def data(self, device: str, ts: int, *metrics: sp.Metric, seq: int | None = None) -> None:
        for metric in metrics:
            if metric.alias == 2:
                self.counts[device] = metric.value
        self._publish("DDATA", metrics, device, ts=ts, seq=seq)

    def _on_command(self, _client, _userdata, message) -> None:
        payload = sp.decode(message.payload)
        if payload.metric(sp.REBIRTH_METRIC) and payload.metric(sp.REBIRTH_METRIC).value:
            threading.Thread(target=self._rebirth, daemon=True).start()  # not on paho's own thread

    def _rebirth(self) -> None:
        self.birth(ts=T0 + 50_000 + self.rebirths)
        self.rebirths += 1

    def die(self) -> None:
        """Drop the connection without a DISCONNECT: the broker publishes the will (NDEATH)."""
        self.client.loop_stop()
        self.client.socket().close()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.mark.asyncio(loop_scope="session")
async def test_sparkplug_and_json_topics_reach_kafka(prepared, mosquitto, tmp_path, run_id) -> None:
    group, node = f"g{run_id}", f"line1-{run_id}"
    press = f"acme.berlin.assembly.{run_id}.press07"
    weld = f"{group}.{node}.weld02"        # not configured: named after its group, node and device
    json_unit = f"t{run_id}.berlin.line1.press08"
    config = {
        "source": "berlin-gateway",
        "mqtt": {"sparkplug_groups": [group], "json_topics": [f"t{run_id}/#"], "client_id": f"bridge-{run_id}",
                 "rebirth_interval_s": 0.1},
        "tags": {"State": {"kind": "state"}, "Good": {"kind": "counter"},
                 "Temp": {"kind": "analog", "parameter": "temperature", "unit": "degC"},
                 "state": {"kind": "state"}, "good": {"kind": "counter"}, "reject": {"kind": "counter", "field": "reject"}},
        "equipment": [{"id": press, "sparkplug": {"group": group, "node": node, "device": "press07"}}],
    }
    bridges = await _bridges(prepared, mosquitto, config, tmp_path / "buffer")
    edge = EdgeNode(mosquitto, group, node, ["press07", "weld02"])
    try:
        # Given an edge node that was born, and whose press runs and counts
        edge.birth()
        edge.data("press07", T0 + 1000, sp.Metric(alias=1, value="RUNNING", datatype=sp.STRING))
        edge.data("press07", T0 + 2000, sp.Metric(alias=2, value=7, datatype=sp.UINT32),
                  sp.Metric(alias=3, value=71.5, datatype=sp.DOUBLE))
        edge.data("weld02", T0 + 2500, sp.Metric(alias=1, value="RUNNING", datatype=sp.STRING))
        # When a message is lost (the sequence jumps), the bridge asks for a rebirth and still uses the data
        edge.data("press07", T0 + 3000, sp.Metric(alias=2, value=12, datatype=sp.UINT32), seq=(edge.seq + 5) % 256)
        deadline = time.monotonic() + 10
        while edge.rebirths == 0:
            assert time.monotonic() < deadline, "no rebirth request reached the edge node"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        edge.data("press07", T0 + 60_000, sp.Metric(alias=2, value=20, datatype=sp.UINT32))
        # And plain JSON on the equipment hierarchy: a state, a counter with a reset, a refused value
        publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"json-{run_id}")
        publisher.connect("127.0.0.1", int(mosquitto.rsplit(":", 1)[1]))
        publisher.loop_start()
        base = f"t{run_id}/berlin/line1/press08"
        for topic, payload in ((f"{base}/state", b'{"value": "down", "timestamp": %d, "reason_code": "E-HYD-12"}' % (T0 + 100)),
                               (f"{base}/good", b'{"value": 40, "timestamp": %d}' % (T0 + 200)),
                               (f"{base}/good", b'{"value": 45, "timestamp": %d}' % (T0 + 300)),
                               (f"{base}/good", b'{"value": 3, "timestamp": %d}' % (T0 + 400)),
                               (f"{base}/state", b'"JAMMED"'),
                               (f"{base}/unmapped", b'1')):
            publisher.publish(topic, payload, qos=1).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()
        # And the node dies without a goodbye: the broker sends its death certificate
        await asyncio.sleep(0.5)
        edge.die()

        def complete(rs: list[dict]) -> bool:
            """Both death certificates and the three JSON events: the units sit on different partitions,
            which the consumer reads in no fixed order."""
            rs = unique(rs)
            offline = sum(r["type"] == "MachineStateChanged" and r["state"] == "OFFLINE" for r in rs)
            return offline >= 2 and sum(r["equipment_id"] == json_unit for r in rs) >= 3

        records = unique(await asyncio.to_thread(machine_events, prepared, {press, weld, json_unit}, complete))
        by_unit = {unit: [(r["type"], r.get("state"), r.get("good"), r.get("reject"), r.get("value"))
                          for r in records if r["equipment_id"] == unit] for unit in (press, weld, json_unit)}
        # Then Kafka holds the canonical events, with the counter's increases, not its readings
        assert by_unit[press] == [

            ("MachineStateChanged", "IDLE", None, None, None),
            ("ProcessValueMeasured", None, None, None, 20.0),
            ("MachineStateChanged", "RUNNING", None, None, None),
            ("PartsProduced", None, 7, 0, None),
            ("ProcessValueMeasured", None, None, None, 71.5),
            ("PartsProduced", None, 5, 0, None),
            # the rebirth: state and temperature as born again (the count did not move)
            ("MachineStateChanged", "IDLE", None, None, None),
            ("ProcessValueMeasured", None, None, None, 20.0),
            ("PartsProduced", None, 8, 0, None),
            ("MachineStateChanged", "OFFLINE", None, None, None),
        ]
        assert by_unit[weld][-1][:2] == ("MachineStateChanged", "OFFLINE") and ("MachineStateChanged", "RUNNING", None, None, None) in by_unit[weld]
        assert by_unit[json_unit] == [("MachineStateChanged", "DOWN", None, None, None), ("PartsProduced", None, 5, 0, None),
                                      ("PartsProduced", None, 3, 0, None)]
        offline = next(r for r in records if r["equipment_id"] == press and r.get("state") == "OFFLINE")
        assert offline["reason_code"] == "NDEATH" and offline["event_id"] == f"sparkplug:{press}:offline:ndeath-bd0"
        down = next(r for r in records if r["equipment_id"] == json_unit)
        assert down["reason_code"] == "E-HYD-12" and down["source"] == "berlin-gateway"
        assert edge.rebirths >= 1
        # the JAMMED state was refused by ingest's validation, like a bad HTTP item (a dead letter)
        assert bridges.runtime.buffer.pending == 0
    finally:
        await bridges.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_kafka_outage_and_bridge_restart_lose_nothing(prepared, mosquitto, tmp_path, run_id) -> None:
    config = {"mqtt": {"json_topics": [f"o{run_id}/#"], "client_id": f"bridge-o-{run_id}"},
              "tags": {"good": {"kind": "counter"}}}
    unit = f"o{run_id}.line1.press09"
    topic = f"o{run_id}/line1/press09/good"
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"plc-{run_id}")
    publisher.connect("127.0.0.1", int(mosquitto.rsplit(":", 1)[1]))
    publisher.loop_start()
    counter, sent = 0, []

    def count(step: int, at: int) -> None:
        nonlocal counter
        counter += step
        sent.append(step)
        publisher.publish(topic, b'{"value": %d, "timestamp": %d}' % (counter, T0 + at), qos=1).wait_for_publish(5)

    buffer_dir = tmp_path / "buffer"
    bridges = await _bridges(prepared, mosquitto, config, buffer_dir)
    count(0, 0)                   # the baseline
    for i in range(1, 6):
        count(i, i * 1000)
    assert await bridges.runtime.drained(30)
    stack = prepared.config
    # When Kafka stops, the bridge keeps what arrives on disk
    localstack._stop_all(stack, ["kafka"], localstack.KAFKA_STOP_GRACE)
    try:
        for i in range(6, 12):
            count(i, i * 1000)
        deadline = time.monotonic() + 10
        while bridges.runtime.buffer.pending < 6:
            assert time.monotonic() < deadline, f"only {bridges.runtime.buffer.pending} events buffered"
            await asyncio.sleep(0.05)
        from prometheus_client import REGISTRY
        assert REGISTRY.get_sample_value("mom_ingest_bridge_buffered_events") >= 6
        # And the bridge restarts while Kafka is still away, with more counts published meanwhile
        await bridges.stop(drain_s=0.5)
        for i in range(12, 16):
            count(i, i * 1000)
        bridges = await _bridges(prepared, mosquitto, config, buffer_dir)
        count(16, 16_000)
        deadline = time.monotonic() + 10
        while bridges.runtime.buffer.pending < 11:
            assert time.monotonic() < deadline, f"only {bridges.runtime.buffer.pending} events buffered after the restart"
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(localstack._ensure_kafka, stack)
    try:
        # Then, once Kafka is back, everything arrives, in order, each count once
        assert await bridges.runtime.drained(90), f"{bridges.runtime.buffer.pending} events still buffered"
        records = unique(await asyncio.to_thread(machine_events, prepared, {unit}, lambda rs: len(unique(rs)) >= 16))
        assert [r["good"] for r in records] == sent[1:]
        assert sum(r["good"] for r in records) == counter
        assert [r["occurred_at"] for r in records] == sorted(r["occurred_at"] for r in records)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        await bridges.stop()
