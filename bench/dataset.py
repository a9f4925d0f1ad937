"""The benchmark's input: N machine events pre-produced once into the catalogue's machine topic.

A realistic mix over 200 work units (`acme.site1.area1.line{n}.unit{m}`): about 70 % PartsProduced and
30 % MachineStateChanged, event times increasing, unique event ids. The generator is seeded, so a
given N always produces the same events; a manifest in the bench state dir records N and the totals
the projection must reach (sum of good and reject), and the topic is re-created when it does not hold
exactly that dataset.
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.kafka import apply_topics
from services.common.kafka import end_offsets as kafka_end_offsets
from services.common.settings import REPO_ROOT, KafkaSettings

SEED = 20261102
UNITS = tuple(f"acme.site1.area1.line{n}.unit{m}" for n in range(1, 21) for m in range(1, 11))  # 200
START = datetime(2026, 11, 2, 6, 0, 0, tzinfo=UTC)
START_MICROS = int(START.timestamp()) * 1_000_000
STEP_MICROS = 50_000  # 20 events per second of plant time, across all units
STATES = ("RUNNING",) * 12 + ("IDLE", "IDLE", "DOWN", "DOWN", "SETUP", "BLOCKED", "STARVED", "PLANNED_STOP")
REASONS = ("E-HYD-12", "E-ELC-03", "E-MEC-41", None)


def machine_topic(catalogue: Catalogue) -> str:
    return catalogue.topic_for("MachineStateChanged").name


def generate(n: int) -> Iterator[tuple[str, dict]]:
    """(event_type, Avro record) for events 0..n-1; deterministic for a given n."""
    rng = random.Random(SEED)
    for i in range(n):
        unit = UNITS[rng.randrange(len(UNITS))]
        t = START_MICROS + i * STEP_MICROS
        envelope = {"event_id": f"bench-{i:09d}", "occurred_at": t, "recorded_at": t + 1_000,
                    "source": "bench", "correlation_id": None, "equipment_id": unit}
        if rng.random() < 0.7:
            reject = 1 if rng.random() < 0.05 else 0
            yield "PartsProduced", {**envelope, "good": rng.randint(1, 10), "reject": reject, "order_id": None}
        else:
            state = rng.choice(STATES)
            yield "MachineStateChanged", {**envelope, "state": state,
                                          "reason_code": rng.choice(REASONS) if state == "DOWN" else None}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    return {p: o for (_, p), o in kafka_end_offsets(KafkaSettings(bootstrap=bootstrap), [topic]).items()}


def manifest_path(state_dir: Path) -> Path:
    return state_dir / "bench-dataset.json"


def ensure(bootstrap: str, state_dir: Path, n: int, log=print) -> dict:
    """Make the machine topic hold exactly the N-event dataset; returns the manifest (totals to expect)."""
    catalogue = Catalogue.load()
    topic = machine_topic(catalogue)
    path = manifest_path(state_dir)
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        manifest = {}
    offsets = end_offsets(bootstrap, topic)
    if manifest.get("events") == n and manifest.get("seed") == SEED and sum(offsets.values()) == n:
        log(f"dataset: reusing {n:,} events already in {topic}")
        return manifest
    # Anything else in the topic (another N, ingest's events): drop the topic and produce afresh.
    if sum(offsets.values()):
        log(f"dataset: {topic} holds {sum(offsets.values()):,} events, not the {n:,}-event dataset; re-creating it")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            future.result()
        deadline = time.monotonic() + 60
        while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
            time.sleep(0.5)
    path.unlink(missing_ok=True)
    for _attempt in range(30):
        try:
            apply_topics(KafkaSettings(bootstrap=bootstrap), catalogue)
            break
        except Exception:  # the broker may still be finishing the delete
            time.sleep(1)
    manifest = produce(bootstrap, catalogue, topic, n, log)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def produce(bootstrap: str, catalogue: Catalogue, topic: str, n: int, log=print) -> dict:
    codec = codec_for(catalogue, "", REPO_ROOT / "schemas")
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 50, "batch.num.messages": 100_000, "batch.size": 4_000_000,
        "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
        "compression.type": "lz4",
    })
    failures: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    good = reject = parts = states = 0
    started = time.perf_counter()
    for i, (event_type, record) in enumerate(generate(n)):
        if event_type == "PartsProduced":
            good += record["good"]
            reject += record["reject"]
            parts += 1
        else:
            states += 1
        value = codec.encode(event_type, record)
        key = catalogue.key_for(event_type, record).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - started
    if remaining or failures:
        raise RuntimeError(f"dataset: {remaining} undelivered, {len(failures)} failed: {failures[:3]}")
    log(f"dataset: produced {n:,} events to {topic} in {seconds:.1f} s ({n / seconds:,.0f}/s)")
    return {"events": n, "seed": SEED, "topic": topic, "good": good, "reject": reject,
            "parts_produced": parts, "machine_state_changed": states, "produce_seconds": round(seconds, 2),
            "units": len(UNITS)}


if __name__ == "__main__":
    from bench import stack

    cfg = stack.config()
    print(ensure(cfg.bootstrap, cfg.state_dir, int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
