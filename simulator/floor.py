"""The simulated shop floor for `--via mqtt` and `--via opcua`: the machines' facts as Sparkplug B edge
nodes (one per line) over MQTT, or as the variables of the simulator's OPC UA server, read by ingest's
bridges running in this process; everything else still goes through ingest's HTTP API, in the same order.

The protocols stamp whole milliseconds, so `whole_milliseconds` first takes the whole simulation (its
ground truth included) to milliseconds; the figures then equal the HTTP path's.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from services.ingest import sparkplug
from simulator import engine, send
from simulator.opcua_server import OpcUaPlant

MACHINE_FACTS = frozenset({"MachineStateChanged", "PartsProduced", "ProcessValueMeasured"})
SPARKPLUG_GROUP = "mom-sim"
COUNTERS = {"good": "GoodCount", "reject": "RejectCount"}
FLOOR_TAGS = {"State": {"kind": "state"}, "StateReason": {"kind": "reason"},
              "GoodCount": {"kind": "counter", "field": "good"}, "RejectCount": {"kind": "counter", "field": "reject"}}
OPCUA_WRITES_PER_ROUND = 40   # well below the bridge's queue of 100 changes per monitored item and publish
_SUB_MS = re.compile(r"(\d{2}:?\d{2}:?\d{2}\.\d{3})\d{3}Z")


# -- the simulation in whole milliseconds ---------------------------------------------------------


def _floor_text(value: Any) -> Any:
    """Every RFC 3339 or compact timestamp inside a value, cut to whole milliseconds."""
    if isinstance(value, str):
        return _SUB_MS.sub(r"\g<1>000Z", value)
    if isinstance(value, list):
        return [_floor_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _floor_text(v) for k, v in value.items()}
    return value


def whole_milliseconds(sim: engine.Simulation) -> engine.Simulation:
    """The simulation with every instant cut to its millisecond: events, the ids made from instants
    (corrective work orders) and the facts the ground truth is derived from, alike."""
    def ms(us: int | None) -> int | None:
        return None if us is None else us - us % 1000

    def per_unit(table: dict, row) -> defaultdict:
        return defaultdict(list, {unit: [row(*entry) for entry in entries] for unit, entries in table.items()})

    f = sim.facts
    facts = dataclasses.replace(
        f,
        shifts=[(s, ms(a), ms(b), tuple((ms(x), ms(y)) for x, y in breaks)) for s, a, b, breaks in f.shifts],
        states=per_unit(f.states, lambda t, state, reason: (ms(t), state, reason)),
        lockouts=per_unit(f.lockouts, lambda a, b: (ms(a), ms(b))),
        orders=per_unit(f.orders, lambda order, a, b: (order, ms(a), ms(b))),
        attendance=per_unit(f.attendance, lambda who, a, b: (who, ms(a), ms(b))),
        production=per_unit(f.production, lambda t, good, reject, pru: (ms(t), good, reject, pru)),
        scrap=per_unit(f.scrap, lambda t, quantity, rework: (ms(t), quantity, rework)),
        failures=per_unit(f.failures, lambda a, b, reason: (ms(a), ms(b), reason)),
        inspections=[{**i, "at": ms(i["at"])} for i in f.inspections],
        work_orders=[{**w, "work_order_id": _floor_text(w["work_order_id"]), "started_at": ms(w["started_at"]),
                      "completed_at": ms(w["completed_at"])} for w in f.work_orders],
    )
    return dataclasses.replace(sim, events=[_floor_text(e) for e in sim.events], facts=facts)


# -- the shop floor: the machines' facts as Sparkplug B or OPC UA --------------------------------


def _epoch_ms(occurred_at: str) -> int:
    return engine.micros(datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))) // 1000


def floor_mapping(sim: engine.Simulation, opcua: OpcUaPlant | None = None) -> dict[str, Any]:
    """The bridges' mapping for the simulated plant: per work unit its Sparkplug device (a node per
    line), its OPC UA variables, and a rule per process value."""
    equipment = []
    for line in sim.plant.lines:
        for unit in line.work_units:
            unit_id = sim.ids.unit(unit.unit_id)
            analogs = {pv.parameter: {"kind": "analog", "parameter": pv.parameter, "unit": pv.unit}
                       for pv in unit.process_values}
            entry: dict[str, Any] = {"id": unit_id, "tags": analogs, "sparkplug": {
                "group": SPARKPLUG_GROUP, "node": sim.ids.line(line.line_id), "device": unit_id}}
            if opcua is not None:
                entry["opcua_nodes"] = {tag: opcua.node_id(unit_id, tag) for tag in [*FLOOR_TAGS, *analogs]}
            equipment.append(entry)
    return {"source": "simulator-floor",
            "mqtt": {"sparkplug_groups": [SPARKPLUG_GROUP], "client_id": f"mom-demo-bridge-{sim.tag or 'plant'}"},
            "opcua": {"publishing_interval_ms": 50, "data_change_trigger": "StatusValueTimestamp"},
            "tags": FLOOR_TAGS, "equipment": equipment}


def _tag_values(event: dict, counts: dict[tuple[str, str], int]) -> list[tuple[str, Any]]:
    """A machine fact as (tag, value) readings: a state with its reason (the reason first), the
    cumulative counters that moved, or one process value."""
    unit = event["equipment_id"]
    if event["type"] == "MachineStateChanged":
        return [("StateReason", event.get("reason_code") or ""), ("State", event["state"])]
    if event["type"] == "ProcessValueMeasured":
        return [(event["parameter"], float(event["value"]))]
    values = []
    for field_name, tag in COUNTERS.items():
        if event.get(field_name):
            counts[(unit, tag)] += event[field_name]
            values.append((tag, counts[(unit, tag)]))
    return values


class SparkplugFloor:
    """One Sparkplug B edge node per line (its units are devices), publishing over a broker: births
    with the counters at 0 and the states empty, then a DDATA per fact, sequence numbers per node."""

    def __init__(self, mqtt_url: str, sim: engine.Simulation) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.nodes = {sim.ids.line(line.line_id): [sim.ids.unit(u.unit_id) for u in line.work_units]
                      for line in sim.plant.lines}
        self.node_of = {unit: node for node, units in self.nodes.items() for unit in units}
        self.analogs = {sim.ids.unit(u.unit_id): [pv.parameter for pv in u.process_values] for u in sim.plant.work_units}
        self.seq = dict.fromkeys(self.nodes, 0)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.expected = 0      # readings the bridge will have taken in
        host, port = mqtt_url.rsplit("/", 1)[-1].rsplit(":", 1)
        self.clients = {}
        for node in self.nodes:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"mom-sim-edge-{node}")
            client.max_inflight_messages_set(100)
            client.connect(host, int(port))
            client.loop_start()
            self.clients[node] = client
        self._last: Any = None

    def _publish(self, kind: str, node: str, metrics: list, device: str | None = None, ts: int | None = None) -> None:
        seq = self.seq[node]
        self.seq[node] = (seq + 1) % 256
        payload = sparkplug.encode(sparkplug.Payload(timestamp=ts, seq=seq, metrics=tuple(metrics)))
        self._last = self.clients[node].publish(sparkplug.topic_of(SPARKPLUG_GROUP, kind, node, device), payload, qos=1)

    def birth(self, ts: int) -> None:
        sp = sparkplug
        for node, units in self.nodes.items():
            self.seq[node] = 0
            self._publish("NBIRTH", node, [sp.Metric(name="bdSeq", datatype=sp.UINT64, value=0),
                                           sp.Metric(name="Node Control/Rebirth", datatype=sp.BOOLEAN, value=False)],
                          ts=ts)
            for unit in units:
                metrics = [sp.Metric(name=tag, datatype=sp.STRING, is_null=True) for tag in ("StateReason", "State")]
                metrics += [sp.Metric(name=tag, datatype=sp.UINT64, value=0) for tag in COUNTERS.values()]
                metrics += [sp.Metric(name=name, datatype=sp.DOUBLE, is_null=True) for name in self.analogs[unit]]
                self._publish("DBIRTH", node, metrics, unit, ts=ts)

    async def born(self, runtime: Any, ts: int) -> None:
        """Births until the bridge has their counters: it may not have subscribed yet when the first go out."""
        births = len(self.node_of) * len(COUNTERS)
        for _attempt in range(30):
            before = runtime.received
            self.birth(ts)
            try:
                await received(runtime, before + births, timeout_s=1.0)
            except TimeoutError:
                continue
            self.expected = runtime.received
            return
        raise TimeoutError("the bridge never took in the edge nodes' births: is it subscribed to the broker?")

    async def publish(self, events: list[dict]) -> None:
        for event in events:
            ts = _epoch_ms(event["occurred_at"])
            metrics = [sparkplug.Metric(name=tag, timestamp=ts, value=value,
                                        datatype=sparkplug.DOUBLE if isinstance(value, float) else None)
                       for tag, value in _tag_values(event, self.counts)]
            unit = event["equipment_id"]
            self._publish("DDATA", self.node_of[unit], metrics, unit, ts=ts)
            self.expected += len(metrics)
        if self._last is not None:
            await asyncio.to_thread(self._last.wait_for_publish, 30)

    async def close(self) -> None:
        for client in self.clients.values():  # a clean DISCONNECT: no death certificate, the units keep their state
            client.disconnect()
            with contextlib.suppress(AttributeError):  # paho's network thread may end by itself meanwhile
                client.loop_stop()


class OpcUaFloor:
    """The machines as variables of the simulator's OPC UA server, written with each fact's instant."""

    def __init__(self, server: OpcUaPlant, runtime: Any) -> None:
        self.server = server
        self.runtime = runtime
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.expected = sum(len(FLOOR_TAGS) + len(server.analogs[m]) for m in server.machines)  # first values
        self._last: dict[tuple[str, str], tuple[Any, int]] = {}

    async def publish(self, events: list[dict]) -> None:
        written = 0
        for event in events:
            at = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
            for tag, value in _tag_values(event, self.counts):
                node = (event["equipment_id"], tag)
                if self._last.get(node) == (value, _epoch_ms(event["occurred_at"])):
                    continue  # the same value at the same instant notifies nothing
                self._last[node] = (value, _epoch_ms(event["occurred_at"]))
                await self.server.write(event["equipment_id"], tag, value, at=at)
                self.expected += 1
                written += 1
                if written % OPCUA_WRITES_PER_ROUND == 0:
                    await received(self.runtime, self.expected)

    async def close(self) -> None:
        await self.server.stop()


async def received(runtime: Any, expected: int, timeout_s: float = 60.0) -> None:
    """Until the bridges have taken in `expected` readings (stored on disk)."""
    deadline = time.monotonic() + timeout_s
    while runtime.received < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bridge took in {runtime.received} of {expected} readings in {timeout_s:g} s")
        await asyncio.sleep(0.002)


def floor_runs(events: list[dict], barriers: frozenset[str]) -> list[tuple[bool, list[dict]]]:
    """The events as runs, each all machine facts (for the floor) or all others (for HTTP), a new run at
    each barrier: sending run after run, each delivered before the next, keeps the HTTP order in Kafka."""
    runs: list[tuple[bool, list[dict]]] = []
    for event in events:
        on_floor = event["type"] in MACHINE_FACTS
        if not runs or runs[-1][0] != on_floor or event["event_id"] in barriers:
            runs.append((on_floor, []))
        runs[-1][1].append(event)
    return runs


async def send_via_floor(sim: engine.Simulation, via: str, status: dict, state_dir: Path,
                         barrier: Callable[[], object], *, mqtt_port: int, opcua_port: int) -> send.Sent:
    """Send the simulation: machine facts over MQTT (Sparkplug B) or OPC UA through ingest's bridges
    running here (`run_plant_bridge`), the rest over ingest's HTTP API; each run is delivered to Kafka
    before the next starts, and at a barrier every service has caught up first."""
    from services.ingest.bridge import run_plant_bridge
    from services.ingest.bridge_broker import Mosquitto

    buffer_dir = state_dir / f"demo-bridge-{via}"
    shutil.rmtree(buffer_dir, ignore_errors=True)  # a fresh mapper memory: this run's counters start at 0
    env = {"MOM_KAFKA_BOOTSTRAP": status["kafka"]["bootstrap"], "MOM_REGISTRY_URL": status["registry"]["url"] or ""}
    broker = server = None
    sent, started = send.Sent(), time.monotonic()
    try:
        if via == "mqtt":
            broker = Mosquitto(mqtt_port, state_dir / "mosquitto").start()
            bridges = await run_plant_bridge(mqtt_url=broker.url, config=floor_mapping(sim), buffer_dir=buffer_dir, env=env)
            machines: SparkplugFloor | OpcUaFloor = SparkplugFloor(broker.url, sim)
            await machines.born(bridges.runtime, _epoch_ms(sim.events[0]["occurred_at"]))
        else:
            units = [sim.ids.unit(u.unit_id) for u in sim.plant.work_units]
            server = OpcUaPlant(units, port=opcua_port, blank=True, analogs={
                sim.ids.unit(u.unit_id): [pv.parameter for pv in u.process_values] for u in sim.plant.work_units})
            await server.start()
            logging.getLogger("asyncua").setLevel(logging.ERROR)  # its client warns of the unsecured channel
            bridges = await run_plant_bridge(opcua_url=server.url, config=floor_mapping(sim, server),
                                             buffer_dir=buffer_dir, env=env)
            machines = OpcUaFloor(server, bridges.runtime)
        try:
            for index, (on_floor, run) in enumerate(floor_runs(sim.events, sim.barriers)):
                if index and run[0]["event_id"] in sim.barriers:
                    await asyncio.to_thread(barrier)
                if on_floor:
                    await machines.publish(run)
                    await received(bridges.runtime, machines.expected)
                    if not await bridges.runtime.drained(60):
                        raise TimeoutError(f"the bridges did not deliver to Kafka in 60 s: {bridges.runtime.last_error}")
                    continue
                part = await asyncio.to_thread(send.to_ingest, run, status["ingest"]["url"], status["ingest"]["token"])
                sent.accepted += part.accepted
                sent.refused += part.refused
                sent.refusals += part.refusals
            sent.accepted += bridges.runtime.delivered - bridges.runtime.rejected
            sent.refused += bridges.runtime.rejected
        finally:
            await bridges.stop()
            await machines.close()
            server = None
    finally:
        if server is not None:
            await server.stop()
        if broker is not None:
            broker.stop()
    sent.seconds = time.monotonic() - started
    return sent
