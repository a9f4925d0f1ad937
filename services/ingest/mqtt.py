"""The MQTT bridge: Sparkplug B and plain JSON topics from a broker, into the bridges' runtime.

paho-mqtt runs the connection on its own thread with a persistent session (clean_session False, a
fixed client id, QoS 1 subscriptions) and manual acknowledgements: a message is acknowledged only
after its events are fsync'd in the disk buffer, so the broker keeps (and redelivers) what a stopped
or crashed bridge had not yet stored. paho reconnects by itself; the session's subscriptions survive.
A worker thread takes the messages that arrived meanwhile as one batch: their events are appended
with one fsync, then all of them are acknowledged (a group commit, so a busy broker does not wait
for one fsync per message).

Plain JSON: a topic is `<equipment topic>/<tag>` (e.g. `acme/berlin/assembly/line1/press07/state`).
The equipment is the configured unit with that `mqtt_topic`, else the topic's levels joined with dots.
The payload is a JSON value, or an object with `value` and optionally `timestamp` (RFC 3339 or epoch
milliseconds) and `reason_code`.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from services.ingest import sparkplug
from services.ingest.bridge import CONNECTED, MESSAGES, REBIRTHS, BridgeRuntime
from services.ingest.bridge_config import BridgeConfig, Equipment
from services.ingest.bridge_mapping import Outage, Reading
from services.ingest.translators import parse_timestamp

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def equipment_id_from(parts: list[str]) -> str:
    return ".".join(_UNSAFE.sub("-", p.lower()).strip("-") or "x" for p in parts)


def parse_json_payload(payload: bytes, arrival_ms: int) -> tuple[Any, int, str | None]:
    """(value, timestamp ms, reason code) of a plain JSON message; ValueError when it is not JSON."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        return data, arrival_ms, None
    if "value" not in data:
        raise ValueError("a JSON object payload needs a `value`")
    stamp = data.get("timestamp", data.get("ts"))
    timestamp = arrival_ms
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        timestamp = int(stamp)
    elif isinstance(stamp, str):
        micros = parse_timestamp(stamp)
        if micros is None:
            raise ValueError(f"timestamp {stamp!r} is not an RFC 3339 UTC timestamp")
        timestamp = micros // 1000
    reason = data.get("reason_code")
    return data["value"], timestamp, reason if isinstance(reason, str) else None


class MqttBridge:
    def __init__(self, url: str, config: BridgeConfig, runtime: BridgeRuntime) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.config = config
        self.runtime = runtime
        self.host_state = sparkplug.HostState(int(config.rebirth_interval_s * 1000))
        self._by_topic = config.by_topic()
        self._by_sparkplug = config.by_sparkplug()
        self.connected = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id, clean_session=False,
                                  protocol=paho.MQTTv311, manual_ack=True)
        if parts.username:
            self.client.username_pw_set(parts.username, parts.password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._inbox: queue.Queue[paho.MQTTMessage | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="mqtt-bridge-worker", daemon=True)

    def start(self) -> None:
        self._worker.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self._inbox.put(None)      # what arrived before is stored and acknowledged; later ones are redelivered
        self._worker.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()
        CONNECTED.labels(bridge="mqtt").set(0)

    # paho callbacks (its network thread) ----------------------------------------------------

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT connection refused", extra={"fields": {"reason": str(reason)}})
            return
        self.connected = True
        CONNECTED.labels(bridge="mqtt").set(1)
        subscriptions = [(topic, self.config.qos) for topic in self.config.json_topics]
        subscriptions += [(f"{sparkplug.NAMESPACE}/{group}/#", self.config.qos) for group in self.config.sparkplug_groups]
        if subscriptions:
            client.subscribe(subscriptions)
        log.info("MQTT connected", extra={"fields": {"broker": f"{self.host}:{self.port}",
                                                      "subscriptions": [s for s, _ in subscriptions]}})

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        self.connected = False
        CONNECTED.labels(bridge="mqtt").set(0)
        log.info("MQTT disconnected", extra={"fields": {"reason": str(reason)}})

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbox.put(message)

    def _work(self) -> None:
        while True:
            first = self._inbox.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < 1000:
                try:
                    message = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if message is None:
                    stop = True
                    break
                batch.append(message)
            self.handle(batch)
            if stop:
                return

    def handle(self, messages: list[paho.MQTTMessage]) -> None:
        """Map a batch of messages, store their events with one fsync, then acknowledge them all."""
        inputs: list[Reading | Outage] = []
        for message in messages:
            try:
                if message.topic.startswith(sparkplug.NAMESPACE + "/"):
                    inputs.extend(self._sparkplug(message.topic, message.payload))
                else:
                    inputs.extend(self._json(message.topic, message.payload))
            except Exception:  # noqa: BLE001 - one bad message never stops the bridge
                MESSAGES.labels(bridge="mqtt", outcome="invalid").inc()
                log.exception("MQTT message not handled", extra={"fields": {"topic": message.topic}})
        try:
            if inputs:
                self.runtime.ingest(inputs)
        except Exception:  # noqa: BLE001 - not stored: not acknowledged, so the broker delivers them again
            log.exception("bridge could not store messages; they stay unacknowledged")
            return
        for message in messages:  # acknowledged once their events are on disk (or they were judged unusable)
            if message.qos > 0:
                self.client.ack(message.mid, message.qos)

    # Plain JSON -------------------------------------------------------------------------------

    def equipment_for_topic(self, topic: str) -> tuple[str, str] | None:
        levels = topic.split("/")
        if len(levels) < 2:
            return None
        prefix, tag = "/".join(levels[:-1]), levels[-1]
        unit: Equipment | None = self._by_topic.get(prefix)
        return (unit.equipment_id if unit else equipment_id_from(levels[:-1])), tag

    def _json(self, topic: str, payload: bytes) -> list[Reading | Outage]:
        target = self.equipment_for_topic(topic)
        if target is None or self.runtime.mapper.rule(*target) is None:
            MESSAGES.labels(bridge="mqtt", outcome="ignored").inc()
            return []
        try:
            value, timestamp, reason = parse_json_payload(payload, _now_ms())
        except ValueError as exc:
            MESSAGES.labels(bridge="mqtt", outcome="invalid").inc()
            log.warning("MQTT JSON message refused", extra={"fields": {"topic": topic, "error": str(exc)}})
            return []
        MESSAGES.labels(bridge="mqtt", outcome="mapped").inc()
        return [Reading("mqtt", target[0], target[1], value, timestamp, reason)]

    # Sparkplug B ------------------------------------------------------------------------------

    def equipment_for_device(self, group: str, node: str, device: str | None) -> str:
        unit = self._by_sparkplug.get((group, node, device))
        if unit is not None:
            return unit.equipment_id
        return equipment_id_from([group, node, *([device] if device else [])])

    def _sparkplug(self, topic_text: str, payload: bytes) -> list[Reading | Outage]:
        try:
            topic = sparkplug.parse_topic(topic_text)
            data = sparkplug.decode(payload) if topic.message_type != "STATE" else sparkplug.Payload()
        except sparkplug.SparkplugError as exc:
            MESSAGES.labels(bridge="sparkplug", outcome="invalid").inc()
            log.warning("Sparkplug message refused", extra={"fields": {"topic": topic_text, "error": str(exc)}})
            return []
        now = _now_ms()
        outcome = self.host_state.handle(topic, data, now)
        for problem in outcome.problems:
            log.warning("Sparkplug: %s", problem)
        inputs: list[Reading | Outage] = [
            Reading("sparkplug", self.equipment_for_device(u.group, u.node, u.device), u.name, u.value, u.timestamp_ms)
            for u in outcome.updates]
        for dead in outcome.offline:
            if dead.device is not None:
                units = [self.equipment_for_device(dead.group, dead.node, dead.device)]
                cause, reason = f"ddeath-{dead.timestamp_ms}", "DDEATH"
            else:
                devices = set(dead.devices) | {d for (g, n, d) in self._by_sparkplug if g == dead.group and n == dead.node}
                devices = devices or {None}
                units = sorted({self.equipment_for_device(dead.group, dead.node, d) for d in devices})
                cause, reason = f"ndeath-bd{dead.bd_seq}", "NDEATH"
            inputs.extend(Outage("sparkplug", unit, dead.timestamp_ms, cause, reason) for unit in units)
        if outcome.rebirth is not None:
            request_topic, request = sparkplug.rebirth_request(*outcome.rebirth, now)
            self.client.publish(request_topic, request, qos=0)
            REBIRTHS.inc()
        MESSAGES.labels(bridge="sparkplug", outcome="mapped" if outcome.updates or outcome.offline else "ignored").inc()
        return inputs
