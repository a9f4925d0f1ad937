"""Latency from arrival to committed projection, at a fixed input rate.

A running execution worker (caught up, positions seeded at the current end of its input topics)
receives machine events produced at a steady rate. An event's arrival is the moment the producer
hands it to Kafka; it is committed when the worker's position in its partition passes its offset
(positions commit in the same transaction as the projection rows). A poller reads the positions
every `poll_ms`, so every latency is over-stated by up to that much, never under-stated.

Appending to the machine topic changes the benchmark dataset; the next run that needs the dataset
re-creates it (dataset.ensure does that by itself).
"""
from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from confluent_kafka import Producer

from bench import dataset
from services.common import localstack
from services.common.kafka import end_offsets
from services.common.replay import seed_positions
from services.common.settings import REPO_ROOT


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _wait_ready(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the worker did not become ready")


def execution_latency(ctx, rate: int, seconds: float, poll_ms: float = 10.0) -> dict:
    """Produce `rate` machine events/s for `seconds` into a caught-up execution worker; latency percentiles."""
    from services.common.settings import Settings
    from services.execution.app import build

    ctx.reset_execution()
    settings = Settings(service="execution", kafka=ctx.kafka, database_url=ctx.config.db_url(), registry_url="")
    topics = build(settings, ctx.catalogue).input_topics
    seed_positions(ctx.config.db_url(), "execution", end_offsets(ctx.kafka, topics))
    start_offsets = {p: o for (t, p), o in end_offsets(ctx.kafka, [ctx.topic]).items()}

    env = {**os.environ, **localstack.service_env(ctx.config, "execution"),
           "MOM_GROUP_ID": f"bench-latency-{uuid.uuid4().hex[:8]}", "MOM_LOG_LEVEL": "WARNING"}
    log_path = ctx.config.logs_dir / "bench-execution_latency.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.execution"], env=env, cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    sent: dict[tuple[int, int], float] = {}  # (partition, offset) -> arrival (perf_counter)
    observed: list[tuple[float, dict[int, int]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def poll_positions() -> None:
        with ctx.superuser() as conn:
            while not stop.is_set():
                rows = conn.execute("SELECT partition, next_offset FROM execution.positions WHERE topic = %s",
                                    (ctx.topic,)).fetchall()
                observed.append((time.perf_counter(), dict(rows)))
                time.sleep(poll_ms / 1000)

    try:
        _wait_ready(ctx.config.port_of("execution"), proc)
        poller = threading.Thread(target=poll_positions, daemon=True)
        poller.start()
        producer = Producer({"bootstrap.servers": ctx.config.bootstrap, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 1, "compression.type": "lz4"})
        rng = random.Random(dataset.SEED + 1)
        run = uuid.uuid4().hex[:6]
        total = int(rate * seconds)
        t0_micros = dataset.START_MICROS + (ctx.n + 1) * dataset.STEP_MICROS
        began = time.perf_counter()
        for i in range(total):
            due = began + i / rate
            now = time.perf_counter()
            if due > now:
                producer.poll(0)
                time.sleep(due - now)
            unit = dataset.UNITS[rng.randrange(len(dataset.UNITS))]
            t = t0_micros + i * 1_000
            record = {"event_id": f"lat-{run}-{i}", "occurred_at": t, "recorded_at": t, "source": "bench",
                      "correlation_id": None, "equipment_id": unit}
            if rng.random() < 0.7:
                event_type, record = "PartsProduced", {**record, "good": rng.randint(1, 10), "reject": 0, "order_id": None}
            else:
                event_type, record = "MachineStateChanged", {**record, "state": rng.choice(dataset.STATES), "reason_code": None}
            arrival = time.perf_counter()

            def delivered(err, msg, arrival=arrival) -> None:
                if err is not None:
                    failures.append(str(err))
                else:
                    sent[(msg.partition(), msg.offset())] = arrival

            producer.produce(ctx.topic, value=ctx.codec.encode(event_type, record),
                             key=ctx.catalogue.key_for(event_type, record).encode(), on_delivery=delivered)
        produce_s = time.perf_counter() - began
        if producer.flush(60) or failures:
            raise RuntimeError(f"producing failed: {failures[:3]}")
        ends = {p: o for (_t, p), o in end_offsets(ctx.kafka, [ctx.topic]).items()}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if observed and all(observed[-1][1].get(p, 0) >= o for p, o in ends.items()):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}; see {log_path}")
            time.sleep(0.05)
        else:
            raise RuntimeError("the worker did not catch up within 300 s after the last event")
        stop.set()
        poller.join(5)
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # Each offset's commit time: the first poll whose position is past it.
    committed: dict[tuple[int, int], float] = {}
    reached = dict(start_offsets)
    for at, positions in observed:
        for partition, position in positions.items():
            for offset in range(reached.get(partition, 0), position):
                committed[(partition, offset)] = at
            reached[partition] = max(reached.get(partition, 0), position)
    latencies = sorted((committed[k] - arrival) * 1000 for k, arrival in sent.items() if k in committed)
    if len(latencies) != len(sent):
        raise RuntimeError(f"{len(sent) - len(latencies)} events never seen committed")
    p50, p95, p99 = (_percentile(latencies, q) for q in (0.50, 0.95, 0.99))
    achieved = len(sent) / produce_s
    return {
        "events": len(sent), "seconds": round(produce_s, 3), "events_per_s": round(achieved, 1),
        "target_rate": rate, "latency_ms": {"p50": round(p50, 1), "p95": round(p95, 1), "p99": round(p99, 1),
                                            "max": round(latencies[-1], 1),
                                            "mean": round(statistics.fmean(latencies), 1)},
        "poll_ms": poll_ms, "log": str(log_path),
        "notes": (f"python -m services.execution (one worker, caught up) fed {rate:,} machine events/s for {seconds:g} s; "
                  f"latency from producer hand-off to committed position (positions polled every {poll_ms:g} ms, "
                  f"so figures are high by up to that); p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms; "
                  f"target p99 <= 500 ms at 10,000 events/s: {'met' if p99 <= 500 and rate >= 10_000 else 'NOT met'}"),
    }
