"""Latency from arrival to committed projection, at a fixed input rate.

A running worker (caught up: a scratch schema with positions seeded at the current end of its input
topics) receives its own stream produced at a steady rate. An event arrives at its Kafka record
timestamp (CreateTime, set by the producer when it takes the event; read back from the delivery
report), and is committed when the worker's position in its partition passes its offset (positions
commit in the same transaction as the projection rows). A poller reads the positions every
`poll_ms`, so every latency is over-stated by up to that much (plus the timestamp's 1 ms), never
under-stated.
"""
from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence

from bench.scratch_run import ScratchWorker, encoded, produce_messages


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the smallest value with at least q of the values at or below it)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q * len(sorted_values) - 1e-9))  # the tolerance keeps 0.95 * 100 at rank 95
    return sorted_values[min(len(sorted_values), rank) - 1]


def commit_times(start: Mapping[tuple[str, int], int],
                 observed: Iterable[tuple[float, Mapping[tuple[str, int], int]]]) -> dict[tuple[str, int, int], float]:
    """(topic, partition, offset) -> the first observation time at which the position had passed it."""
    committed: dict[tuple[str, int, int], float] = {}
    reached = dict(start)
    for at, positions in observed:
        for tp, position in positions.items():
            for offset in range(reached.get(tp, 0), position):
                committed[(*tp, offset)] = at
            reached[tp] = max(reached.get(tp, 0), position)
    return committed


def summary(latencies_ms: list[float]) -> dict:
    ordered = sorted(latencies_ms)
    return {"p50": round(percentile(ordered, 0.50), 1), "p95": round(percentile(ordered, 0.95), 1),
            "p99": round(percentile(ordered, 0.99), 1), "max": round(ordered[-1], 1),
            "mean": round(statistics.fmean(ordered), 1)}


def wait_ready(port: int, alive, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the worker did not become ready")


def batch_figures(ports: Sequence[int]) -> dict:
    """Batches the workers committed, their mean size and mean time from arrival to commit, from their
    /metrics (what makes latency at a modest rate: a fixed cost per batch shows as few, long, small batches)."""
    sums: dict[str, float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0]
                if name in ("mom_batch_size_events_sum", "mom_batch_size_events_count", "mom_batch_duration_seconds_sum"):
                    sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    batches = sums.get("mom_batch_size_events_count", 0.0)
    if not batches:
        return {}
    return {"batches": int(batches), "mean_batch_events": round(sums["mom_batch_size_events_sum"] / batches, 1),
            "mean_batch_ms": round(1000 * sums.get("mom_batch_duration_seconds_sum", 0.0) / batches, 1)}


def fixed_rate(ctx, service: str, events: Iterable[tuple[str, dict]], rate: float, seconds: float, *,
               env: Mapping[str, str] | None = None, poll_ms: float = 10.0, name: str | None = None,
               workers: int = 1) -> dict:
    """Feed `rate` events/s of the stream for `seconds` to `workers` caught-up workers of `service` (one
    consumer group); latency percentiles."""
    total = int(rate * seconds)
    arrivals: dict[tuple[str, int, int], float] = {}
    failures: list[str] = []
    observed: list[tuple[float, dict]] = []
    stop = threading.Event()

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            arrivals[(msg.topic(), msg.partition(), msg.offset())] = msg.timestamp()[1] / 1000

    # Encoded before the clock starts: the feeder stands for the plant and ingest, which run elsewhere,
    # and encoding on the fly with a sleep per message cost it about three times the CPU (7.3 against 2.5 s
    # for 100,000 events at 10,000/s).
    messages = list(encoded(ctx, itertools.islice(events, total)))
    with ScratchWorker(ctx, service, env=env, name=name or f"{service}-latency", workers=workers) as worker:
        worker.start()
        for port in worker.ports:  # each ready only once assigned: the group has formed when all are
            wait_ready(port, worker.alive)

        def poll_positions() -> None:
            sql = f'SELECT topic, partition, next_offset FROM "{worker.schema}".positions'
            with ctx.superuser() as conn:
                while not stop.is_set():
                    rows = conn.execute(sql).fetchall()
                    observed.append((time.time(), {(t, p): o for t, p, o in rows}))
                    time.sleep(poll_ms / 1000)

        poller = threading.Thread(target=poll_positions, daemon=True)
        poller.start()
        try:
            began = time.perf_counter()
            produce_messages(ctx, messages, on_delivery=delivered, rate=rate, **{"linger.ms": 1})
            produce_s = time.perf_counter() - began
            if failures:
                raise RuntimeError(f"producing failed: {failures[:3]}")
            ends: dict[tuple[str, int], int] = {}
            for t, p, o in arrivals:
                ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
            deadline = time.monotonic() + 600
            while not (observed and all(observed[-1][1].get(tp, 0) >= o for tp, o in ends.items())):
                worker.alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not catch up within 600 s after the last event")
                time.sleep(0.05)
            try:
                batches = batch_figures(worker.ports)
            except OSError:
                batches = {}
        finally:
            stop.set()
            poller.join(5)
        start = worker.start_offsets
    committed = commit_times(start, observed)
    latencies = [(committed[k] - arrival) * 1000 for k, arrival in arrivals.items() if k in committed]
    if len(latencies) != len(arrivals):
        raise RuntimeError(f"{len(arrivals) - len(latencies)} events never seen committed")
    lat = summary(latencies)
    return {
        "events": len(arrivals), "seconds": round(produce_s, 3), "events_per_s": round(len(arrivals) / produce_s, 1),
        "rate_fed": rate, "latency_ms": lat, "poll_ms": poll_ms, "log": str(worker.log_path), "worker_batches": batches,
        "workers": workers,
        "notes": (f"python -m services.{service} ({'one worker' if workers == 1 else f'{workers} workers, one group'}, caught up) fed {rate:,.0f} events/s for {seconds:g} s; "
                  f"Kafka record timestamp to committed position (polled every {poll_ms:g} ms); "
                  f"p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms; "
                  f"worker batches (its /metrics): {batches or 'not read'}"),
    }
