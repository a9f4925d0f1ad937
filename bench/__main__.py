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

# In this order: the scenarios that read the pre-produced dataset come before those that append to its topic.
SCENARIOS = ("raw_consume", "raw_consume_decode", "loop_overhead", "execution", "execution_latency", "quality",
             "maintenance", "inventory", "ingest")
SERVICES = ("execution", "quality", "maintenance", "inventory")
# What the issue asks for; the two diagnostics (what decoding costs, the shared loop alone) run with --only.
DEFAULT = tuple(s for s in SCENARIOS if s not in ("raw_consume_decode", "loop_overhead"))
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
    head = (f"{'result':<22} {'events':>10} {'seconds':>8} {'events/s':>9} {'x raw':>6} {'x naive':>7} "
            f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'RSS MB start/peak/end':>22}  notes")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        rate, raw, naive = r.get("events_per_s"), r.get("ratio_to_raw_consume"), r.get("ratio_to_naive")
        lat, rss = r.get("latency_ms") or {}, r.get("rss_mb") or {}
        notes = r.get("notes", "") if r.get("error") is None else r["error"].splitlines()[0]
        memory = f"{rss['start']:.0f}/{rss['peak']:.0f}/{rss['end']:.0f} {'flat' if rss['flat'] else 'GROWS'}" if rss else ""
        lines.append(
            f"{name:<22} {r.get('events') or 0:>10,} {r.get('seconds') or 0:>8.1f} {(f'{rate:,.0f}' if rate else '-'):>9} "
            f"{(f'{raw:.3f}' if raw else ''):>6} {(f'{naive:.1f}' if naive else ''):>7} "
            f"{lat.get('p50', ''):>7} {lat.get('p95', ''):>7} {lat.get('p99', ''):>7} {memory:>22}  {notes[:110]}")
    return "\n".join(lines)


def add_ratios(results: dict) -> None:
    """Rates (throughput, replay, naive, the raw loops) against raw_consume and against the service's own naive
    baseline, both from this run. A latency result's rate is the rate it was fed, so it gets none."""
    base = results.get("raw_consume", {}).get("events_per_s")
    for r in results.values():
        rate = r.get("events_per_s")
        if r.get("kind") == "latency" or not rate:
            continue
        r["ratio_to_raw_consume"] = round(rate / base, 4) if base else None
        naive = results.get(f"{r.get('service')}.naive", {}).get("events_per_s")
        if naive and r.get("kind") in ("throughput", "replay"):
            r["ratio_to_naive"] = round(rate / naive, 2)


def _counts(raw: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be comma-separated integers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: must list counts of at least 1")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help=f"scenario(s) to run, comma-separated: {', '.join(SCENARIOS)} (default: all but raw_consume_decode and loop_overhead)")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events in the dataset and in each service's own throughput and memory run (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of raw_consume, raw_consume_decode and ingest (median reported)")
    parser.add_argument("--replay-events", type=int, default=100_000,
                        help="events at the end of each service's stream replayed into an empty schema (default 100,000)")
    parser.add_argument("--replay-workers", default="1,2", type=_counts,
                        help="each replay is run once per count of processes sharing its settle given (default 1,2: one, and one per core here)")
    parser.add_argument("--naive-events", type=int, default=2_000, help="events the naive faust agent processes per service")
    parser.add_argument("--latency-fraction", type=float, default=0.5,
                        help="each service's latency run is fed this fraction of the throughput measured just before (default 0.5)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="how long each fixed-rate run feeds its worker")
    parser.add_argument("--latency-rate", type=int, default=10_000, help="events/s fed to execution in execution_latency (the issue's target point)")
    parser.add_argument("--latency-workers", default="1,2", type=_counts,
                        help="execution_latency is run once per count of workers given, in one consumer group (default 1,2)")
    parser.add_argument("--ingest-requests", type=int, default=350, help="POSTs per ingest repetition (3 x 350 x 1,000 > 1,000,000 events through one process)")
    parser.add_argument("--ingest-size", type=int, default=1000)
    parser.add_argument("--ingest-connections", type=int, default=4)
    parser.add_argument("--ingest-latency-size", type=int, default=100, help="events per request in ingest's fixed-rate run")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="instead of the scenarios: run the execution worker under cProfile for N events and print the top costs")
    parser.add_argument("--keep-stack", action="store_true", help="leave the bench stack running even if this run started it")
    args = parser.parse_args(argv)
    chosen = [s for group in args.only for s in group.split(",") if s] or list(DEFAULT)
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
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        document = {"timestamp": stamp, "machine": machine(), "dataset": manifest, "arguments": vars(args)}
        latency = {"latency_fraction": args.latency_fraction, "latency_seconds": args.latency_seconds}
        for name in SCENARIOS:
            if name not in chosen:
                continue
            log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                if name == "raw_consume":
                    out = {name: scenarios.raw_consume(ctx, ctx.n, args.repeat)}
                elif name == "raw_consume_decode":
                    out = {name: scenarios.raw_consume_decode(ctx, ctx.n, args.repeat)}
                elif name == "loop_overhead":
                    out = {name: scenarios.loop_overhead(ctx)}
                elif name == "execution_latency":
                    out = scenarios.execution_latency(ctx, args.latency_rate, args.latency_seconds, args.latency_workers)
                elif name in SERVICES:
                    out = scenarios.service(ctx, scenarios.workloads()[name], args.events, replay_events=args.replay_events,
                                            replay_workers=args.replay_workers,
                                            naive_events=args.naive_events, **latency)
                elif name == "ingest":
                    out = scenarios.ingest(ctx, args.ingest_requests, args.ingest_size, args.ingest_connections, args.repeat,
                                           latency_size=args.ingest_latency_size, **latency)
            except Exception as exc:  # noqa: BLE001 - a failed scenario is a result too
                out = {name: {"events": None, "seconds": None, "events_per_s": None,
                              "error": f"{type(exc).__name__}: {exc}", "notes": "failed; see error"}}
            wall = round(time.perf_counter() - t0, 1)
            for key, r in out.items():
                r.setdefault("kind", "baseline")
                results[key] = r
                log(f"{key}: {r.get('events_per_s')} events/s {r.get('latency_ms') or ''}")
            results[next(iter(out))]["scenario_wall_s"] = wall
            log(f"{name}: done in {wall} s")
            add_ratios(results)
            write(stamp, {**document, "total_wall_s": round(time.perf_counter() - began, 1), "results": results}, partial=True)
        document = {**document, "total_wall_s": round(time.perf_counter() - began, 1), "results": results}
        write(stamp, document, partial=False)
        print(table(results))
        print(f"\nwritten: bench/results/{stamp}.json (and latest.json); total {document['total_wall_s']} s")
        return 0 if all(r.get("error") is None for r in results.values()) else 1
    finally:
        if started and not args.keep_stack:
            log("stopping the bench stack (this run started it)")
            stack.stop(config)


def write(stamp: str, document: dict, partial: bool) -> None:
    """After every scenario the results so far go to <stamp>.partial.json, so a run cut short keeps them;
    at the end to <stamp>.json and latest.json."""
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(document, indent=2, default=str) + "\n"
    name = f"{stamp}.partial.json" if partial else f"{stamp}.json"
    tmp = RESULTS / f"{name}.tmp"
    tmp.write_text(text)
    tmp.replace(RESULTS / name)
    if not partial:
        (RESULTS / f"{stamp}.partial.json").unlink(missing_ok=True)
        (RESULTS / "latest.json").write_text(text)


def profile(ctx, n: int) -> int:
    """The execution worker under cProfile over n fresh events like the dataset's (appended to its topic)."""
    import pstats

    from bench import scenarios
    from bench.scratch_run import timed_worker

    out = RESULTS / "profile-execution.pstats"
    RESULTS.mkdir(exist_ok=True)
    timed = timed_worker(ctx, "execution", scenarios.EXECUTION.events("profile", n, {}), "SELECT 1",
                         argv=[sys.executable, "-m", "cProfile", "-o", str(out), "-m", "services.execution"], name="profile")
    print(f"profiled run: {timed.events:,} events in {timed.seconds:.1f} s = {timed.events_per_s:,.0f} events/s "
          "(under cProfile, slower than a normal run)\n")
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
