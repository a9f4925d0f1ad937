"""`make demo`: start the stack and the services, send a shift of a small line through ingest,
wait until the projections hold it, print the report, and stop what the demo started."""
from __future__ import annotations

import json
import sys
import time
import urllib.request

import psycopg
from confluent_kafka import Consumer

from services.cli import available_services, prepare
from services.common import localstack
from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.kafka import end_offsets
from services.common.settings import REPO_ROOT, KafkaSettings
from services.report import ReportQuery
from services.report import run as report
from simulator.scenario import LINE, bad_items, ground_truth, shift

CHUNK = 1000  # items per request to ingest


def post(status: dict, events: list[dict]) -> dict:
    request = urllib.request.Request(
        status["ingest"]["url"] + "/v1/events", data=json.dumps(events).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {status['ingest']['token']}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def send(status: dict, events: list[dict]) -> tuple[int, int, list[str]]:
    """Posts the events in chunks, in order; returns accepted, refused and the refusals' messages."""
    accepted, refused, messages = 0, 0, []
    for first in range(0, len(events), CHUNK):
        answer = post(status, events[first:first + CHUNK])
        accepted, refused = accepted + answer["accepted"], refused + answer["rejected"]
        for result in answer["results"]:
            for error in result.get("errors", []):
                messages.append(f"item {first + result['index']}: {error['field']}: {error['rule']}: "
                                f"{error['message']}")
    return accepted, refused, messages


def wait_caught_up(status: dict, topics: list[str], timeout_s: float = 120.0) -> float:
    """Until execution's stored positions reach the end of its input topics; returns the seconds waited."""
    target = sum(end_offsets(KafkaSettings(bootstrap=status["kafka"]["bootstrap"]), topics).values())
    started = time.monotonic()
    with psycopg.connect(status["database"]["url"], autocommit=True) as conn:
        while True:
            done = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM execution.positions WHERE topic = ANY(%s)",
                                (topics,)).fetchone()[0]
            if done >= target:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise SystemExit(f"execution did not catch up: {done} of {target} events after {timeout_s:.0f} s")
            time.sleep(0.2)


def read_topic(status: dict, event_type: str, idle_polls: int = 4) -> list[tuple[str, dict]]:
    """Every event on the topic that carries event_type, decoded with the published schemas."""
    catalogue = Catalogue.load()
    codec = codec_for(catalogue, status["registry"]["url"] or "", REPO_ROOT / "schemas")
    consumer = Consumer({"bootstrap.servers": status["kafka"]["bootstrap"], "group.id": f"mom-demo-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([catalogue.topic_for(event_type).name])
    events, idle = [], 0
    try:
        while idle < idle_polls:
            records = [r for r in consumer.consume(1000, 0.5) if r.error() is None]
            idle = 0 if records else idle + 1
            events.extend(codec.decode(r.value()) for r in records)
    finally:
        consumer.close()
    return events


def print_derived(status: dict) -> None:
    derived = read_topic(status, "DowntimeStarted")
    counts: dict[str, int] = {}
    for event_type, _ in derived:
        counts[event_type] = counts.get(event_type, 0) + 1
    print(f"\nexecution's derived events (its own topic, through the outbox): {len(derived)}")
    for event_type, number in sorted(counts.items()):
        print(f"  {number:5d}  {event_type}")
    print("\nstops that ended (DowntimeEnded; times UTC):")
    ended = sorted((r for t, r in derived if t == "DowntimeEnded"), key=lambda r: (r["equipment_id"], r["started_at"]))
    for record in ended:
        print(f"  {record['started_at']:%H:%M:%S}  {record['equipment_id']:<32} {record['state']:<8} "
              f"{record['reason_code'] or '':<14} {record['duration_s']:6.0f} s  {record['classification']}")
    rejected = read_topic(status, "EventRejected")
    print(f"\nrefused items kept on the rejected topic: {len(rejected)}")


def table(conn: psycopg.Connection, title: str, sql: str) -> None:
    cursor = conn.execute(sql)
    names = [c.name for c in cursor.description]
    rows = [[("" if v is None else str(v)) for v in row] for row in cursor.fetchall()]
    widths = [max(len(n), *(len(r[i]) for r in rows)) if rows else len(n) for i, n in enumerate(names)]
    print(f"\n{title}")
    print("  " + "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def main() -> int:
    config = localstack.StackConfig.from_env()
    was_running = localstack.status(config)["kafka"]["running"]
    print("starting the stack and the services (first run resolves Kafka and the registry from Maven) ...")
    started = time.monotonic()
    status = localstack.up(config, services=available_services(), after_infra=prepare)
    print(f"up in {time.monotonic() - started:.1f} s: Kafka {status['kafka']['bootstrap']}, "
          f"PostgreSQL {status['database']['url']}, ingest {status['ingest']['url']}")
    try:
        events = shift() + bad_items()
        sent = time.monotonic()
        accepted, refused, messages = send(status, events)
        print(f"\nsent {len(events)} events to ingest in chunks of {CHUNK}: {accepted} accepted, {refused} refused")
        for message in messages:
            print(f"  {message}")
        catalogue = Catalogue.load()
        topics = sorted({catalogue.topic_for(e["type"]).name for e in events})
        waited = wait_caught_up(status, topics)
        print(f"execution caught up {waited:.1f} s after ingest answered "
              f"({time.monotonic() - sent:.1f} s after the first request)")
        with psycopg.connect(status["database"]["url"]) as conn:
            table(conn, "execution.equipment_state: each work unit's current state and since when",
                  "SELECT equipment_id, state, reason_code, since FROM execution.equipment_state ORDER BY 1")
        print("\n" + report(ReportQuery(scope=LINE, period="shift"), url=status["database"]["analyst_url"]))
        print("\nthe scenario's own figures for the shift (simulator ground truth):")
        for unit, truth in ground_truth().items():
            print(f"  {unit:<32} availability {truth['availability'] * 100:5.1f} %  "
                  f"performance {truth['effectiveness'] * 100:5.1f} %  quality {truth['quality_ratio'] * 100:5.1f} %  "
                  f"OEE {truth['oee'] * 100:5.1f} %")
        print_derived(status)
    finally:
        if not was_running:
            localstack.down(config)
            print("\nstopped everything the demo started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
