"""`make demo`: start the stack and every available service, simulate one shift of the default plant,
send it through ingest, wait until every service has caught up, print the report and the
simulator's own ground truth next to it, write the HTML report, and stop what the demo started.

Options: --plant YAML, --seed N, --tag TAG, --html PATH (default: <state dir>/demo-report.html),
--via http|mqtt|opcua.

`--via mqtt` and `--via opcua` send the machines' facts the way a shop floor does: state changes, cumulative part counters and process values as Sparkplug B over a
Mosquitto broker the demo starts, or as the variables of the simulator's OPC UA server, read by
ingest's bridges; the plan, order, operator, alarm and maintenance events still go through ingest's
HTTP API. The shop-floor protocols stamp milliseconds, so the whole simulation, ground truth
included, is taken to whole milliseconds first.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from services import report_html
from services.cli import available_services, prepare
from services.common import localstack
from services.ingest import sparkplug
from services.report import ReportQuery, percent, render
from services.report import report as collect
from simulator import engine, plant, send, truth
from simulator.opcua_server import OpcUaPlant
from simulator.progress import wait_caught_up

VIA = ("http", "mqtt", "opcua")
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


def _truth_lines(sim: engine.Simulation, period: str = "shift") -> str:
    shifts = truth.shift_truth(sim)
    out = ["\nthe simulator's own ground truth for the shift (computed from its timeline, not from the services):"]
    for e in shifts:
        out.append(f"  {e.equipment_id:<40} availability {percent(_f(e.availability)):>8}  performance "
                   f"{percent(_f(e.effectiveness)):>8}  quality {percent(_f(e.quality_ratio)):>8}  OEE {percent(_f(e.oee)):>8}"
                   f"  PQ {e.pq:5d}  GQ {e.gq:5d}")
    for line, oee in truth.line_oee(sim, shifts).items():
        out.append(f"  {line:<40} OEE {percent(_f(oee))}")
    return "\n".join(out)


def _f(value) -> float | None:
    return None if value is None else float(value)


VIA_TEXT = {"http": "(HTTP)", "mqtt": "(machines over MQTT Sparkplug B, the rest over HTTP)",
            "opcua": "(machines over OPC UA, the rest over HTTP)"}


def deliver(sim: engine.Simulation, via: str, status: dict, state_dir: Path, projecting: tuple[str, ...], *,
            mqtt_port: int = 18883, opcua_port: int = 18840) -> send.Sent:
    """Send the simulation to the running stack, waiting for every service at each barrier."""
    def barrier() -> None:
        wait_caught_up(status, projecting, quiet_polls=1, interval_s=0.05)

    if via == "http":
        return send.to_ingest(sim.events, status["ingest"]["url"], status["ingest"]["token"], barriers=sim.barriers,
                              barrier=barrier)
    return asyncio.run(send_via_floor(sim, via, status, state_dir, barrier, mqtt_port=mqtt_port, opcua_port=opcua_port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--plant", default=str(plant.DEFAULT_PLANT))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tag", default="", help="namespace every id with this tag (a second run on the same stack)")
    parser.add_argument("--html", help="where to write the HTML report")
    parser.add_argument("--via", choices=VIA, default="http",
                        help="how the machines' facts reach ingest: its HTTP API (default), MQTT (Sparkplug B through "
                             "a Mosquitto the demo starts) or OPC UA (the simulator's server), read by ingest's bridges")
    parser.add_argument("--mqtt-port", type=int, default=int(os.environ.get("MOM_DEMO_MQTT_PORT") or 18883),
                        help="Mosquitto's port for --via mqtt (default: MOM_DEMO_MQTT_PORT, else 18883)")
    parser.add_argument("--opcua-port", type=int, default=int(os.environ.get("MOM_DEMO_OPCUA_PORT") or 18840),
                        help="the OPC UA server's port for --via opcua (default: MOM_DEMO_OPCUA_PORT, else 18840)")
    args = parser.parse_args(argv)
    demo_started = time.monotonic()
    config = localstack.StackConfig.from_env()
    was_running = localstack.status(config)["kafka"]["running"]
    services = available_services()
    projecting = tuple(s for s in services if s != "ingest")
    print(f"starting the stack and the services {', '.join(services)} (first run resolves Kafka from Maven) ...")
    try:
        status = localstack.up(config, services=services, after_infra=prepare)
        print(f"up in {time.monotonic() - demo_started:.1f} s: Kafka {status['kafka']['bootstrap']}, "
              f"PostgreSQL {status['database']['url']}, ingest {status['ingest']['url']}")
        model = plant.load(args.plant)
        started = time.monotonic()
        sim = engine.simulate(model, seed=args.seed, tag=args.tag)
        if args.via != "http":
            sim = whole_milliseconds(sim)
        print(f"\nsimulated {model.name} ({len(model.lines)} lines, {len(model.work_units)} work units, "
              f"{len(model.shifts)} shift): {len(sim.events)} events in {time.monotonic() - started:.2f} s")
        for event_type, count in sim.counts().items():
            print(f"  {count:6d}  {event_type}")
        started = time.monotonic()
        sent = deliver(sim, args.via, status, config.state_dir, projecting, mqtt_port=args.mqtt_port,
                       opcua_port=args.opcua_port)
        print(f"sent through ingest {VIA_TEXT[args.via]} in {sent.seconds:.1f} s: {sent.accepted} accepted, "
              f"{sent.refused} refused")
        for refusal in sent.refusals[:10]:
            print(f"  {refusal}")
        waited = wait_caught_up(status, projecting)
        print(f"every service ({', '.join(projecting)}) caught up {waited:.1f} s after the last request "
              f"({time.monotonic() - started:.1f} s after the first)")
        query = ReportQuery(scope=sim.ids.site, period="shift")
        data = collect(query, url=status["database"]["analyst_url"])
        print("\n" + render(data, query))
        print(_truth_lines(sim))
        path = Path(args.html) if args.html else config.state_dir / "demo-report.html"
        report_html.write(data, path, title=f"{model.name}: shift report")
        print(f"\nHTML report (charts: OEE by hour and line, downtime Pareto, a control chart): {path.resolve()}")
    finally:
        if not was_running:
            localstack.down(config)
            print("stopped everything the demo started")
    print(f"demo took {time.monotonic() - demo_started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
