"""`make demo`: start the stack and every available service, simulate one shift of the default plant,
send it through ingest, wait until every service has caught up, print the report and the
simulator's own ground truth next to it, write the HTML report, and stop what the demo started.

Options: --plant YAML, --seed N, --html PATH (default: <state dir>/demo-report.html).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from services import report_html
from services.cli import available_services, prepare
from services.common import localstack
from services.report import ReportQuery, percent, render
from services.report import report as collect
from simulator import engine, plant, send, truth
from simulator.progress import wait_caught_up


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--plant", default=str(plant.DEFAULT_PLANT))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--html", help="where to write the HTML report")
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
        sim = engine.simulate(model, seed=args.seed)
        print(f"\nsimulated {model.name} ({len(model.lines)} lines, {len(model.work_units)} work units, "
              f"{len(model.shifts)} shift): {len(sim.events)} events in {time.monotonic() - started:.2f} s")
        for event_type, count in sim.counts().items():
            print(f"  {count:6d}  {event_type}")
        started = time.monotonic()
        sent = send.to_ingest(sim.events, status["ingest"]["url"], status["ingest"]["token"], barriers=sim.barriers,
                              barrier=lambda: wait_caught_up(status, projecting, quiet_polls=1, interval_s=0.05))
        print(f"sent through ingest in {sent.seconds:.1f} s: {sent.accepted} accepted, {sent.refused} refused")
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
