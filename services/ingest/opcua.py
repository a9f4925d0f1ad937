"""The OPC UA bridge: monitored items on the configured nodes of a server, into the bridges' runtime.

Each equipment's `opcua_nodes` (tag -> node id) are subscribed as monitored items (value changes,
queued so that no change between two publishing intervals is coalesced away). The connection is
watched; when it is lost the bridge reconnects with a growing delay (1 s to 30 s) and subscribes
again. The server's initial notification after a (re)subscription is the node's current value with
its source timestamp: the same value gives the same event id, and the mapper's memory turns an
unchanged counter into nothing and a counter that moved into the increase.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from asyncua import Client, ua

from services.ingest.bridge import CONNECTED, MESSAGES, BridgeRuntime
from services.ingest.bridge_config import BridgeConfig
from services.ingest.bridge_mapping import Reading

log = logging.getLogger(__name__)


class _Handler:
    """Collects the notifications of one publish response and stores them with one fsync, after the last."""

    def __init__(self, bridge: OpcUaBridge) -> None:
        self.bridge = bridge
        self._pending: list[Reading] = []

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        target = self.bridge.targets.get(node.nodeid.to_string())
        if target is None:
            return
        data_value = data.monitored_item.Value
        stamp = data_value.SourceTimestamp or data_value.ServerTimestamp
        timestamp_ms = int(stamp.timestamp() * 1000) if stamp is not None else time.time_ns() // 1_000_000
        if isinstance(value, ua.LocalizedText):
            value = value.Text
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(Reading("opcua", target[0], target[1], value, timestamp_ms))
        MESSAGES.labels(bridge="opcua", outcome="mapped").inc()

    def _flush(self) -> None:
        readings, self._pending = self._pending, []
        try:
            self.bridge.runtime.ingest(readings)
        except Exception:  # noqa: BLE001 - one bad batch never stops the bridge
            MESSAGES.labels(bridge="opcua", outcome="invalid").inc(len(readings))
            log.exception("OPC UA values not stored", extra={"fields": {"values": len(readings)}})

    def status_change_notification(self, status: Any) -> None:
        log.warning("OPC UA subscription status changed", extra={"fields": {"status": str(status)}})


class OpcUaBridge:
    def __init__(self, url: str, config: BridgeConfig, runtime: BridgeRuntime) -> None:
        self.url = url
        self.config = config
        self.runtime = runtime
        # node id (as asyncua prints it) -> (equipment id, tag)
        self.targets: dict[str, tuple[str, str]] = {}
        for unit in config.equipment:
            for tag, node_id in unit.opcua_nodes.items():
                self.targets[ua.NodeId.from_string(node_id).to_string()] = (unit.equipment_id, tag)
        self.connected = asyncio.Event()
        self.connections = 0          # how many times it (re)connected and subscribed
        self._client: Client | None = None
        self._stopping = False

    async def run_forever(self) -> None:
        delay = 1.0
        while not self._stopping:
            client = Client(self.url, timeout=4)
            try:
                await client.connect()
                subscription = await client.create_subscription(self.config.opcua_publishing_interval_ms, _Handler(self))
                nodes = [client.get_node(node_id) for node_id in self.targets]
                if nodes:
                    await subscription.subscribe_data_change(nodes, queuesize=100, sampling_interval=0)
                self._client = client
                self.connections += 1
                self.connected.set()
                CONNECTED.labels(bridge="opcua").set(1)
                log.info("OPC UA connected", extra={"fields": {"url": self.url, "monitored_items": len(nodes)}})
                delay = 1.0
                while not self._stopping:
                    await asyncio.sleep(1.0)
                    await client.check_connection()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                if not self._stopping:
                    log.warning("OPC UA connection lost; reconnecting", extra={"fields": {
                        "url": self.url, "error": str(exc) or type(exc).__name__, "retry_s": delay}})
            finally:
                self.connected.clear()
                CONNECTED.labels(bridge="opcua").set(0)
                self._client = None
                try:
                    await asyncio.wait_for(client.disconnect(), timeout=2)
                except Exception:  # noqa: BLE001, S110 - the connection is gone already
                    pass
            if not self._stopping:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), timeout=2)
            except Exception:  # noqa: BLE001, S110
                pass
