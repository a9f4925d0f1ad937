"""`mom replay SERVICE`: rebuild a service's tables from offset 0 into a scratch schema, and compare.

The rebuild runs the service's own loop with a fresh consumer group into `<service>_replay` (created
by the same migrations, thanks to search_path), up to the end offsets its input topics had when the
replay began. Derived events are not published again: they are on their topic already.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import psycopg

from services.common.catalogue import Catalogue
from services.common.db import checked_schema
from services.common.kafka import end_offsets
from services.common.loop import ServiceSpec
from services.common.migrations import upgrade
from services.common.runtime import build_worker
from services.common.settings import Settings

NOT_COMPARED = frozenset({"alembic_version", "outbox"})  # bookkeeping: the relay empties the live outbox


@dataclass(frozen=True)
class TableDifference:
    table: str
    only_live: int
    only_replay: int


def seed_positions(admin_url: str, schema: str, positions: dict[tuple[str, int], int]) -> None:
    """Start a schema's projection at given offsets rather than at 0 (a segment of the log)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.cursor().executemany(
            f'INSERT INTO "{checked_schema(schema)}".positions (topic, partition, next_offset) VALUES (%s, %s, %s)',
            [(t, p, o) for (t, p), o in sorted(positions.items())])


def _positions(admin_url: str, schema: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(f'SELECT topic, partition, next_offset FROM "{schema}".positions').fetchall()
    return {(t, p): o for t, p, o in rows}


async def rebuild(settings: Settings, make_spec: Callable[[Settings, Catalogue], ServiceSpec], admin_url: str,
                  schema: str, *, timeout_s: float = 3600.0, progress: Callable[[int, int], None] = lambda d, t: None,
                  start: dict[tuple[str, int], int] | None = None) -> float:
    """Replay every input topic from offset 0 (or from `start`, per partition) into `schema` (dropped
    first); returns the seconds it took."""
    schema = checked_schema(schema)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    upgrade(admin_url, settings.service, schema=schema)
    if start:
        seed_positions(admin_url, schema, start)
    replay_settings = replace(settings, database_url=admin_url, db_schema=schema,
                              group_id=f"{settings.group_id}.replay.{uuid.uuid4().hex[:8]}")
    worker = build_worker(replay_settings, lambda catalogue: make_spec(replay_settings, catalogue))
    defer = getattr(worker.spec.projector, "defer", None)
    if defer is not None:
        defer()  # work a live worker does per batch, done once at the end (see settle)
    targets = end_offsets(replay_settings.kafka, worker.spec.input_topics)
    total = sum(targets.values())
    started = time.monotonic()
    task = asyncio.create_task(worker.loop.run())
    try:
        while True:
            done = _positions(admin_url, schema)
            if all(done.get(tp, 0) >= end for tp, end in targets.items()):
                worker.loop.stop()
                await task
                await worker.loop.settle()
                break
            progress(sum(min(done.get(tp, 0), end) for tp, end in targets.items()), total)
            if task.done():
                task.result()
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"replay of {settings.service} did not finish in {timeout_s:.0f} s")
            await asyncio.sleep(0.25)
    finally:
        await worker.close(task)
    progress(total, total)
    return time.monotonic() - started


def compare(admin_url: str, live: str, rebuilt: str) -> list[TableDifference]:
    """Row-for-row comparison (multiset difference both ways) of every table the two schemas share."""
    live, rebuilt = checked_schema(live), checked_schema(rebuilt)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            """SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'
               INTERSECT SELECT table_name FROM information_schema.tables WHERE table_schema = %s
               ORDER BY 1""", (live, rebuilt)).fetchall() if r[0] not in NOT_COMPARED]
        differences = []
        for table in tables:
            only_live = conn.execute(
                f'SELECT count(*) FROM (SELECT * FROM "{live}"."{table}" EXCEPT ALL SELECT * FROM "{rebuilt}"."{table}") d'
            ).fetchone()[0]
            only_replay = conn.execute(
                f'SELECT count(*) FROM (SELECT * FROM "{rebuilt}"."{table}" EXCEPT ALL SELECT * FROM "{live}"."{table}") d'
            ).fetchone()[0]
            differences.append(TableDifference(table, only_live, only_replay))
    return differences
