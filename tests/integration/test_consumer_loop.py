"""The shared consumer loop against the real broker and database: exact effects from at-least-once delivery."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Consumer

from services.common import kafka, localstack
from services.common.db import Span, StalePosition, advance_positions, load_positions, make_engine
from services.common.runtime import build_worker
from services.execution.app import build as build_execution
from services.execution.projections import ExecutionProjector
from tests.integration.conftest import start_at_end

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def unit() -> str:
    return f"acme.berlin.assembly.line1.press{uuid.uuid4().hex[:8]}"


def produce(prepared, events: list[dict]) -> None:
    producer = kafka.producer(prepared.kafka)
    for event in events:
        event_type = event["type"]
        record = {k: v for k, v in event.items() if k != "type"}
        record.setdefault("recorded_at", record["occurred_at"])
        record.setdefault("source", "test")
        record.setdefault("correlation_id", None)
        producer.produce(prepared.catalogue.topic_for(event_type).name,
                         key=prepared.catalogue.key_for(event_type, record).encode(),
                         value=prepared.codec.encode(event_type, record))
    assert producer.flush(30) == 0


def parts(equipment: str, n: int, *, good: int = 3, reject: int = 1, prefix: str = "") -> list[dict]:
    return [{"type": "PartsProduced", "event_id": f"{prefix or equipment}-p{i}", "occurred_at": T0 + timedelta(seconds=30 * i),
             "equipment_id": equipment, "good": good, "reject": reject, "order_id": None} for i in range(n)]


def states(equipment: str, sequence: list[str]) -> list[dict]:
    return [{"type": "MachineStateChanged", "event_id": f"{equipment}-s{i}", "occurred_at": T0 + timedelta(minutes=i),
             "equipment_id": equipment, "state": s, "reason_code": "JAM" if s == "DOWN" else None}
            for i, s in enumerate(sequence)]


def query(prepared, schema: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(prepared.superuser_url, options=f"-c search_path={schema}") as conn:
        return conn.execute(sql, args).fetchall()


def end_offsets(prepared, topic: str) -> int:
    """Events on a topic so far: the sum of its partitions' high watermarks."""
    return sum(kafka.end_offsets(prepared.kafka, [topic]).values())


async def run_until(worker, done: Callable[[], bool], timeout_s: float = 240.0) -> None:
    tasks = [asyncio.create_task(worker.loop.run()), asyncio.create_task(worker.relay.run())]
    try:
        deadline = time.monotonic() + timeout_s
        while not done():
            for task in tasks:
                if task.done():
                    task.result()
            assert time.monotonic() < deadline, "the worker did not catch up in time"
            await asyncio.sleep(0.2)
    finally:
        await worker.close(*tasks)


def caught_up(prepared, settings) -> Callable[[], bool]:
    topic = prepared.catalogue.topic_for("PartsProduced").name
    target = end_offsets(prepared, topic)

    def check() -> bool:
        rows = query(prepared, settings.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s", topic)
        return rows[0][0] >= target
    return check


async def test_a_batch_commits_rows_positions_and_derived_events_together(prepared, scratch):
    # Given a work unit that runs, goes down and runs again, and reports parts
    start_at_end(prepared, scratch)
    press = unit()
    produce(prepared, states(press, ["RUNNING", "DOWN", "RUNNING"]) + parts(press, 40))
    # When a worker consumes everything there is
    worker = build_worker(scratch, lambda catalogue: build_execution(scratch, catalogue))
    await run_until(worker, caught_up(prepared, scratch))
    # Then its state, its counts and its position are in the database
    assert query(prepared, scratch.db_schema, "SELECT state, since FROM equipment_state WHERE equipment_id = %s", press) == [
        ("RUNNING", T0 + timedelta(minutes=2))]
    assert query(prepared, scratch.db_schema, "SELECT sum(good), sum(reject) FROM hourly_counts WHERE equipment_id = %s",
                 press) == [(120, 40)]
    # And the derived downtime events left through the outbox
    assert query(prepared, scratch.db_schema, "SELECT count(*) FROM outbox") == [(0,)]
    published = read_topic(prepared, prepared.catalogue.topic_for("DowntimeEnded").name, press)
    # (other workers on the same topics may publish the same derived events: consumers drop copies by id)
    assert sorted(set(published)) == [f"{press}-s1:downtime-started", f"{press}-s2:downtime-ended"]


def read_topic(prepared, topic: str, key: str) -> list[str]:
    consumer = Consumer({"bootstrap.servers": prepared.kafka.bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    ids, idle = [], 0
    try:
        while idle < 6:
            records = consumer.consume(500, 0.5)
            idle = idle + 1 if not records else 0
            for r in records:
                if r.error() is None and r.key() == key.encode():
                    ids.append(prepared.codec.decode(r.value())[1]["event_id"])
    finally:
        consumer.close()
    return ids


async def test_a_resent_event_id_is_applied_once(prepared, scratch):
    start_at_end(prepared, scratch)
    press = unit()
    batch = parts(press, 5)
    produce(prepared, batch)
    produce(prepared, batch[:3])  # the client resent three events: new offsets, same ids
    worker = build_worker(scratch, lambda catalogue: build_execution(scratch, catalogue))
    await run_until(worker, caught_up(prepared, scratch))
    assert query(prepared, scratch.db_schema, "SELECT sum(good) FROM hourly_counts WHERE equipment_id = %s", press) == [(15,)]


class PoisonedProjector(ExecutionProjector):
    """Raises on some event ids, as a handler bug would; counts its calls."""

    def __init__(self, *poison: str) -> None:
        super().__init__()
        self.poison = set(poison)
        self.calls = 0

    async def apply(self, conn, events):
        self.calls += 1
        derived = await super().apply(conn, events)
        if any(e.event_id in self.poison for e in events):
            raise RuntimeError("handler bug")
        return derived


async def test_an_event_whose_handler_fails_goes_to_dead_letters_and_the_partition_moves_on(prepared, scratch):
    start_at_end(prepared, scratch)
    press = unit()
    events = parts(press, 10)
    produce(prepared, events)
    poison = events[4]["event_id"]

    def spec(catalogue):
        from dataclasses import replace
        return replace(build_execution(scratch, catalogue), projector=PoisonedProjector(poison))

    worker = build_worker(scratch, spec)
    await run_until(worker, caught_up(prepared, scratch))
    # nine good reports are counted, the poisoned one is kept with its reason, none is counted twice
    assert query(prepared, scratch.db_schema, "SELECT sum(good) FROM hourly_counts WHERE equipment_id = %s", press) == [(27,)]
    dead = query(prepared, scratch.db_schema, "SELECT event_type, error FROM dead_letters")
    assert [(t, "handler bug" in e) for t, e in dead] == [("PartsProduced", True)]


async def test_two_failing_events_in_a_large_batch_are_found_in_halves_not_one_by_one(prepared, scratch):
    start_at_end(prepared, scratch)
    press = unit()
    events = parts(press, 400)
    produce(prepared, events)
    projector = PoisonedProjector(events[37]["event_id"], events[301]["event_id"])

    def spec(catalogue):
        from dataclasses import replace
        return replace(build_execution(scratch, catalogue), projector=projector)

    worker = build_worker(replace(scratch, batch_max_events=1000), spec)
    await run_until(worker, caught_up(prepared, scratch))
    assert query(prepared, scratch.db_schema, "SELECT sum(good) FROM hourly_counts WHERE equipment_id = %s", press) == [
        (3 * 398,)]
    dead = query(prepared, scratch.db_schema, "SELECT event_type, error FROM dead_letters")
    assert [(t, "handler bug" in e) for t, e in dead] == [("PartsProduced", True)] * 2
    # one event per commit would take 400 calls; halving takes about 2 x 2 x log2(400)
    assert projector.calls <= 50, projector.calls


async def test_a_batch_from_a_stale_position_is_refused_whole(prepared, scratch):
    topic = prepared.catalogue.topic_for("PartsProduced").name
    engine = make_engine(scratch.database_url, scratch.db_schema)
    try:
        async with engine.begin() as conn:
            assert await load_positions(conn, [(topic, 0), (topic, 1)]) == {(topic, 0): 0, (topic, 1): 0}
            await advance_positions(conn, [Span(topic, 0, 0, 10)])
        # a worker that still believes partition 0 starts at 0 (it lost it in a rebalance)
        with pytest.raises(StalePosition):
            async with engine.begin() as conn:
                await advance_positions(conn, [Span(topic, 1, 0, 4), Span(topic, 0, 0, 12)])
        async with engine.begin() as conn:
            assert await load_positions(conn, [(topic, 0), (topic, 1)]) == {(topic, 0): 10, (topic, 1): 0}
    finally:
        await engine.dispose()


def test_a_worker_killed_mid_stream_resumes_with_nothing_lost_and_nothing_counted_twice(prepared, scratch):
    # Given many reports from a few work units
    start_at_end(prepared, scratch)
    presses = [unit() for _ in range(4)]
    total = 0
    for press in presses:
        batch = parts(press, 4000, good=2, reject=1)
        total += len(batch)
        produce(prepared, batch)
    env = {**os.environ, "MOM_KAFKA_BOOTSTRAP": prepared.kafka.bootstrap, "MOM_DATABASE_URL": scratch.database_url,
           "MOM_REGISTRY_URL": scratch.registry_url, "MOM_HTTP_PORT": "0", "MOM_HTTP_HOST": "127.0.0.1", "MOM_GROUP_ID": scratch.group_id,
           "MOM_DB_SCHEMA": scratch.db_schema, "MOM_BATCH_MAX_EVENTS": "200"}
    topic = prepared.catalogue.topic_for("PartsProduced").name
    target = end_offsets(prepared, topic)

    def position() -> int:
        return query(prepared, scratch.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s", topic)[0][0]

    # When the worker is killed with SIGKILL while it is part-way through, twice
    for _ in range(2):
        worker = subprocess.Popen([sys.executable, "-m", "services.execution"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = position()
        deadline = time.monotonic() + 60
        while position() < start + 2000 and position() < target:
            assert time.monotonic() < deadline and worker.poll() is None, "the worker made no progress"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert position() < target, "the kill came too late to prove anything"
    # And started once more, to the end
    worker = subprocess.Popen([sys.executable, "-m", "services.execution"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while position() < target:
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not finish"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)
    # Then every report is counted exactly once
    rows = query(prepared, scratch.db_schema,
                 "SELECT sum(good), sum(reject) FROM hourly_counts WHERE equipment_id = ANY(%s)", presses)
    assert rows == [(2 * total, total)]
    assert query(prepared, scratch.db_schema, "SELECT count(*) FROM processed_events WHERE event_id LIKE 'acme.%%'")[0][0] >= total


async def test_a_worker_whose_commit_fails_while_postgresql_restarts_reads_on_from_its_positions(prepared, scratch, stack):
    """Found by the full chaos run: after a commit failed because PostgreSQL went away, the worker stood
    past the records of the failed batch for good. It must seek back once the database returns."""
    start_at_end(prepared, scratch)
    press = unit()
    first, second = parts(press, 30), parts(press, 30, prefix=f"{press}-later")
    produce(prepared, first)
    worker = build_worker(scratch, lambda catalogue: build_execution(scratch, catalogue))
    tasks = [asyncio.create_task(worker.loop.run()), asyncio.create_task(worker.relay.run())]
    try:
        deadline = time.monotonic() + 240
        while not caught_up(prepared, scratch)():
            assert time.monotonic() < deadline and not tasks[0].done(), "the worker did not read the first part"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(localstack._stop_postgres, stack)
        try:
            produce(prepared, second)
            await asyncio.sleep(3)  # the worker takes the second part and its commit fails: it backs off
        finally:
            await asyncio.to_thread(localstack._ensure_postgres, stack)
        deadline = time.monotonic() + 240
        while not caught_up(prepared, scratch)():
            assert time.monotonic() < deadline and not tasks[0].done(), "the worker never read on after the restart"
            await asyncio.sleep(0.2)
        counted = query(prepared, scratch.db_schema, "SELECT sum(good), count(*) FROM production WHERE equipment_id = %s", press)
        assert counted == [(3 * 60, 60)]
    finally:
        await worker.close(*tasks)
