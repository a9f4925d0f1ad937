"""`python -m bench`: run the benchmark scenarios against the bench's own local stack.

Prints a table and writes bench/results/<UTC timestamp>.json and bench/results/latest.json.
See bench/README.md for what each scenario measures and how to read the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SCENARIOS = ("raw_consume", "raw_consume_decode", "loop_overhead", "consumer_loop", "faust_agent", "naive_orm", "ingest", "quality", "execution_latency")
RESULTS = Path(__file__).with_name("results")


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    import confluent_kafka
    import faust
    return {"cores": os.cpu_count(), "ram_gb": ram_gb, "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "confluent_kafka": getattr(confluent_kafka, "__version__", confluent_kafka.version()[0]),
            "librdkafka": confluent_kafka.libversion()[0], "faust": faust.__version__,
            "kafka": "4.1.1 (deploy/local/kafka/pom.xml)", "postgresql": _pg_version()}


def _pg_version() -> str:
    import shutil
    import subprocess

    from services.common.localstack import _pg_bin
    try:
        return subprocess.run([_pg_bin("postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return "unknown" if not shutil.which("postgres") else "?"


def table(results: dict) -> str:
    head = f"{'scenario':<20} {'events':>10} {'seconds':>9} {'events/s':>11} {'x raw':>7}  notes"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        rate = r.get("events_per_s")
        ratio = r.get("ratio_to_raw_consume")
        notes = r.get("notes", "") if rate is not None else (r.get("error") or r.get("notes", "")).splitlines()[0]
        lines.append(f"{name:<20} {r.get('events') or 0:>10,} {r.get('seconds') or 0:>9.2f} "
                     f"{(f'{rate:,.0f}' if rate else '-'):>11} {(f'{ratio:.3f}' if ratio else '-'):>7}  {notes[:150]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help=f"scenario(s) to run, comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the dataset (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the short scenarios (median reported)")
    parser.add_argument("--faust-events", type=int, default=100_000, help="events the faust agent processes (a subset)")
    parser.add_argument("--naive-events", type=int, default=20_000, help="events the naive per-event scenario processes")
    parser.add_argument("--naive-repeat", type=int, default=1,
                        help="repetitions of naive_orm (default 1: at ~170 events/s one run takes about 2 minutes)")
    parser.add_argument("--ingest-requests", type=int, default=200)
    parser.add_argument("--ingest-size", type=int, default=1000)
    parser.add_argument("--ingest-connections", type=int, default=4)
    parser.add_argument("--latency-rate", type=int, default=10_000, help="events/s fed to the worker in execution_latency")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="how long execution_latency feeds it")
    parser.add_argument("--quality-events", type=int, default=60_000,
                        help="inspections (5 values each) the quality scenario feeds its worker")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="instead of the scenarios: run the execution worker under cProfile for N events and print the top costs")
    parser.add_argument("--keep-stack", action="store_true", help="leave the bench stack running even if this run started it")
    args = parser.parse_args(argv)
    chosen = [s for group in args.only for s in group.split(",") if s] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    if "raw_consume" not in chosen and not args.profile:
        chosen.insert(0, "raw_consume")  # every figure is a ratio to it, measured in the same run

    from bench import dataset, scenarios, stack

    def log(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    config, _status, started = stack.start()
    log(f"bench stack: Kafka :{config.kafka_port}, PostgreSQL :{config.pg_port}, state {config.state_dir}")
    try:
        manifest = dataset.ensure(config.bootstrap, config.state_dir, args.events, log)
        ctx = scenarios.Context(config, manifest, log)
        if args.profile:
            return profile(ctx, min(args.profile, ctx.n))
        results: dict[str, dict] = {}
        began = time.perf_counter()
        for name in SCENARIOS:
            if name not in chosen:
                continue
            log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                if name == "raw_consume":
                    r = scenarios.raw_consume(ctx, ctx.n, args.repeat)
                elif name == "raw_consume_decode":
                    r = scenarios.raw_consume_decode(ctx, ctx.n, args.repeat)
                elif name == "loop_overhead":
                    r = scenarios.loop_overhead(ctx, ctx.n)
                elif name == "consumer_loop":
                    r = scenarios.consumer_loop(ctx, ctx.n)
                elif name == "faust_agent":
                    r = scenarios.faust_agent(ctx, min(args.faust_events, ctx.n))
                elif name == "quality":
                    from bench.quality import quality
                    r = quality(ctx, args.quality_events)
                elif name == "naive_orm":
                    r = scenarios.naive_orm(ctx, min(args.naive_events, ctx.n), args.naive_repeat)
                elif name == "execution_latency":
                    from bench.latency import execution_latency
                    r = execution_latency(ctx, args.latency_rate, args.latency_seconds)
                elif name == "ingest":
                    r = scenarios.ingest(ctx, args.ingest_requests, args.ingest_size, args.ingest_connections, args.repeat)
            except Exception as exc:  # noqa: BLE001 - a failed scenario is a result too
                r = {"events": None, "seconds": None, "events_per_s": None, "error": f"{type(exc).__name__}: {exc}",
                     "notes": "failed; see error"}
            r["scenario_wall_s"] = round(time.perf_counter() - t0, 1)
            results[name] = r
            log(f"{name}: {r.get('events_per_s')} events/s ({r['scenario_wall_s']} s)")
        base = results.get("raw_consume", {}).get("events_per_s")
        for r in results.values():
            rate = r.get("events_per_s")
            r["ratio_to_raw_consume"] = round(rate / base, 4) if rate and base else None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        document = {"timestamp": stamp, "machine": machine(), "dataset": manifest, "arguments": vars(args),
                    "total_wall_s": round(time.perf_counter() - began, 1), "results": results}
        RESULTS.mkdir(exist_ok=True)
        text = json.dumps(document, indent=2, default=str) + "\n"
        tmp = RESULTS / f"{stamp}.json.tmp"
        tmp.write_text(text)
        tmp.replace(RESULTS / f"{stamp}.json")
        (RESULTS / "latest.json").write_text(text)
        print(table(results))
        print(f"\nwritten: bench/results/{stamp}.json (and latest.json); total {document['total_wall_s']} s")
        return 0 if all(r.get("error") is None for r in results.values()) else 1
    finally:
        if started and not args.keep_stack:
            log("stopping the bench stack (this run started it)")
            stack.stop(config)


def profile(ctx, n: int) -> int:
    import pstats

    out = RESULTS / "profile-consumer_loop.pstats"
    RESULTS.mkdir(exist_ok=True)
    result = scenarios_consumer_loop(ctx, n, out)
    print(f"profiled run: {result['events']:,} events in {result['seconds']:.1f} s = {result['events_per_s']:,.0f} events/s "
          f"(under cProfile, slower than a normal run)\n{result['notes']}\n")
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return 0


def scenarios_consumer_loop(ctx, n, out):
    from bench import scenarios
    return scenarios.consumer_loop(ctx, n, profile_to=out)


if __name__ == "__main__":
    sys.exit(main())
