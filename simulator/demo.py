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
import os
import sys
import time
from pathlib import Path

from services import report_html
from services.cli import available_services, prepare
from services.common import localstack
from services.report import ReportQuery, percent, render
from services.report import report as collect
from simulator import engine, plant, send, truth
from simulator.floor import send_via_floor, whole_milliseconds
from simulator.progress import wait_caught_up

VIA = ("http", "mqtt", "opcua")


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
