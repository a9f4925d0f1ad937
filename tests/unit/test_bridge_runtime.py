"""The bridges' runtime with a stand-in sink: buffering while the sink fails, order, restarts, metrics;
and the MQTT bridge's pure helpers and settings."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.common.settings import SettingsError
from services.ingest.bridge import BridgeRuntime, BridgeSettings
from services.ingest.bridge_config import parse
from services.ingest.bridge_mapping import Reading
from services.ingest.bridge_sink import SinkResult
from services.ingest.buffer import DiskBuffer
from services.ingest.mqtt import equipment_id_from, parse_json_payload

CONFIG = parse({"tags": {"good": {"kind": "counter"}, "state": {"kind": "state"}}})
EQ = "acme.berlin.line1.press07"


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.delivered: list[dict] = []
        self.calls = 0

    async def submit(self, items):
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            return SinkResult(failed=len(items), error="Kafka is unreachable")
        self.delivered += items
        return SinkResult(accepted=len(items), results=[{"index": i, "status": "accepted"} for i in range(len(items))])

    async def close(self):
        pass


def _gauge() -> float:
    return REGISTRY.get_sample_value("mom_ingest_bridge_buffered_events")


async def _run_until_drained(runtime: BridgeRuntime, timeout_s: float = 10.0) -> None:
    task = asyncio.create_task(runtime.forward_forever())
    try:
        assert await runtime.drained(timeout_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_buffers_while_the_sink_fails_then_delivers_in_order(tmp_path):
    sink = FlakySink(failures=3)
    runtime = BridgeRuntime(CONFIG, DiskBuffer(tmp_path), sink, batch=4, retry_s=0.01)
    runtime.ingest([Reading("mqtt", EQ, "good", n, 1_793_000_000_000 + n) for n in range(0, 30, 3)])
    assert runtime.buffer.pending == 9 and _gauge() == 9
    await _run_until_drained(runtime)
    assert [e["good"] for e in sink.delivered] == [3] * 9
    assert [e["occurred_at"] for e in sink.delivered] == sorted(e["occurred_at"] for e in sink.delivered)
    assert sink.calls >= 3 + 3 and _gauge() == 0
    runtime.buffer.close()


async def test_a_restart_loses_nothing_and_remembers_counters(tmp_path):
    runtime = BridgeRuntime(CONFIG, DiskBuffer(tmp_path), FlakySink(failures=0))
    runtime.ingest([Reading("mqtt", EQ, "good", 10, 1_793_000_000_000), Reading("mqtt", EQ, "good", 15, 1_793_000_000_001)])
    runtime.buffer.close()  # stopped before anything was forwarded
    sink = FlakySink(failures=0)
    restarted = BridgeRuntime(CONFIG, DiskBuffer(tmp_path), sink)
    restarted.ingest([Reading("mqtt", EQ, "good", 18, 1_793_000_000_002)])
    await _run_until_drained(restarted)
    assert [e["good"] for e in sink.delivered] == [5, 3]
    restarted.buffer.close()


async def test_full_buffer_drops_and_counts(tmp_path):
    before = REGISTRY.get_sample_value("mom_ingest_bridge_dropped_events_total") or 0
    runtime = BridgeRuntime(CONFIG, DiskBuffer(tmp_path, max_events=2), FlakySink(failures=0))
    kept = runtime.ingest([Reading("mqtt", EQ, "state", s, 1_793_000_000_000 + i)
                           for i, s in enumerate(["RUNNING", "IDLE", "DOWN", "RUNNING"])])
    assert kept == 2
    assert REGISTRY.get_sample_value("mom_ingest_bridge_dropped_events_total") == before + 2
    runtime.buffer.close()


def test_json_payloads():
    assert parse_json_payload(b'"RUNNING"', 5) == ("RUNNING", 5, None)
    assert parse_json_payload(b"17", 5) == (17, 5, None)
    assert parse_json_payload(b'{"value": "DOWN", "timestamp": "2026-11-02T06:00:00.250Z", "reason_code": "E1"}', 5) == (
        "DOWN", 1_793_599_200_250, "E1")
    assert parse_json_payload(b'{"value": 3, "ts": 1793599200000}', 5) == (3, 1_793_599_200_000, None)
    for bad in (b"{not json", b'{"v": 1}', b'{"value": 1, "timestamp": "yesterday"}'):
        with pytest.raises(ValueError):
            parse_json_payload(bad, 5)


def test_equipment_ids_from_topics():
    assert equipment_id_from("acme/berlin/assembly/line1/press07".split("/")) == "acme.berlin.assembly.line1.press07"
    assert equipment_id_from(["Acme", "Line 1", "Press#7"]) == "acme.line-1.press-7"


def test_settings_name_the_variable():
    env = {"MOM_INGEST_MQTT_URL": "mqtt://127.0.0.1:1883", "MOM_INGEST_BUFFER_DIR": "/tmp/x"}
    with pytest.raises(SettingsError, match="MOM_INGEST_BRIDGE_CONFIG"):
        BridgeSettings.from_env(env)
    with pytest.raises(SettingsError, match="MOM_INGEST_OPCUA_URL"):
        BridgeSettings.from_env({"MOM_INGEST_OPCUA_URL": "http://x", "MOM_INGEST_BRIDGE_CONFIG": "a.yaml"})
    settings = BridgeSettings.from_env({**env, "MOM_INGEST_BRIDGE_CONFIG": "plant.yaml", "MOM_INGEST_BUFFER_MAX_EVENTS": "10"})
    assert settings.enabled and settings.buffer_max_events == 10 and str(settings.buffer_dir) == "/tmp/x"
    assert not BridgeSettings.from_env({}).enabled


def test_attach_runs_the_bridges_only_when_configured(tmp_path):
    from aiohttp import web

    from services.ingest.bridge import attach

    app = web.Application()
    attach(app, BridgeSettings.from_env({}))
    assert len(app.cleanup_ctx) == 0
    config = tmp_path / "plant.yaml"
    config.write_text("tags: {state: {kind: state}}\n")
    env = {"MOM_INGEST_MQTT_URL": "mqtt://127.0.0.1:1883", "MOM_INGEST_BRIDGE_CONFIG": str(config),
           "MOM_INGEST_BUFFER_DIR": str(tmp_path / "buffer")}
    attach(app, BridgeSettings.from_env(env))
    assert len(app.cleanup_ctx) == 0  # configured, but not asked to run inside ingest
    attach(app, BridgeSettings.from_env({**env, "MOM_INGEST_BRIDGE_IN_PROCESS": "1"}))
    assert len(app.cleanup_ctx) == 1


def _message(mid: int, topic: str, payload: bytes):
    import paho.mqtt.client as paho

    message = paho.MQTTMessage(mid, topic.encode())
    message.payload, message.qos = payload, 1
    return message


def test_mqtt_messages_are_acknowledged_only_once_stored(tmp_path):
    from services.ingest.mqtt import MqttBridge

    class Client:
        def __init__(self):
            self.acked = []

        def ack(self, mid, qos):
            self.acked.append(mid)

    runtime = BridgeRuntime(CONFIG, DiskBuffer(tmp_path), FlakySink(failures=0))
    bridge = MqttBridge("mqtt://127.0.0.1:1883", CONFIG, runtime)
    bridge.client = Client()
    bridge.handle([_message(1, "acme/line1/press07/state", b'"RUNNING"'),
                   _message(2, "acme/line1/press07/state", b"{not json"),     # refused, still acknowledged
                   _message(3, "acme/line1/press07/unmapped", b"1")])
    assert bridge.client.acked == [1, 2, 3] and runtime.buffer.pending == 1
    runtime.buffer.close()  # storing now fails: nothing is acknowledged, the broker will deliver again
    runtime.buffer.append = None
    bridge.handle([_message(4, "acme/line1/press07/state", b'"DOWN"')])
    assert bridge.client.acked == [1, 2, 3]
