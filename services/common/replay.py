"""`mom replay SERVICE`: rebuild a service's tables from offset 0 into a scratch schema, and compare.

The rebuild runs the service's own loop with a fresh consumer group into `<service>_replay` (created
by the same migrations, thanks to search_path), up to the end offsets its input topics had when the
replay began. Derived events are not published again: they are on their topic already.

With `workers` N, N processes each fold a share of the input partitions, assigned by hand
(`ConsumerLoop.read_only`): the partitions of the topics the service declares apart as Kafka's range
assignor would split them, every other partition in the first process (`shares`). They keep one
acceptance order between them as live workers do (docs/architecture.md, "Several workers of one
service"): the tables are the same for any N. Work a projector defers to the end of a replay (see `ConsumerLoop.settle`)
depends on the folded facts alone; once the fold is done, each process settles its share of it
(execution: every N-th unit's periods).
"""
from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from services.common import logging as mom_logging
from services.common import metrics
from services.common.catalogue import Catalogue
from services.common.db import checked_schema
from services.common.kafka import end_offsets
from services.common.loop import ServiceSpec
from services.common.migrations import upgrade
from services.common.runtime import Worker, build_worker, settle_heap
from services.common.settings import Settings

NOT_COMPARED = frozenset({"alembic_version", "outbox"})  # bookkeeping: the relay empties the live outbox
HELPER_STOP_S = 120.0  # the least time the helpers get to finish their settle
POLL_S = 0.25


@dataclass(frozen=True)
class Rebuilt:
    seconds: float
    applied: int          # events the fold applied
    settle_seconds: float  # of `seconds`, the work deferred to the end (settle), shared by the processes


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


def _done(admin_url: str, schema: str, targets: dict[tuple[str, int], int]) -> tuple[bool, int]:
    """Whether every input partition's position reached its target, and how many events lie below them."""
    done = _positions(admin_url, schema)
    return (all(done.get(tp, 0) >= end for tp, end in targets.items()),
            sum(min(done.get(tp, 0), end) for tp, end in targets.items()))


def _applied(service: str) -> int:
    """Events this process's loops of `service` applied so far (the worker metric, summed over types)."""
    return int(sum(sample.value for family in metrics.EVENTS_PROCESSED.collect() for sample in family.samples
                   if sample.name.endswith("_total") and sample.labels.get("service") == service))


def _deferring(worker: Worker) -> Worker:
    defer = getattr(worker.spec.projector, "defer", None)
    if defer is not None:
        defer()  # work a live worker does per batch, done once at the end (see settle)
    return worker


def ranges(partitions: list[tuple[str, int]], workers: int) -> list[list[tuple[str, int]]]:
    """Each worker's share of the partitions, as Kafka's range assignor gives them: every topic's
    partitions in order, in contiguous ranges, the first workers one more where they do not divide."""
    shares: list[list[tuple[str, int]]] = [[] for _ in range(workers)]
    for topic in sorted({t for t, _ in partitions}):
        mine = sorted(p for p in partitions if p[0] == topic)
        size, extra = divmod(len(mine), workers)
        at = 0
        for i in range(workers):
            n = size + (1 if i < extra else 0)
            shares[i].extend(mine[at:at + n])
            at += n
    return shares


def shares(partitions: list[tuple[str, int]], workers: int, apart: tuple[str, ...]) -> list[list[tuple[str, int]]]:
    """Each process's share of a replay: the partitions of the topics the service declares apart
    (ServiceSpec.partitions_apart) in ranges, as the range assignor splits them; those of every other topic
    to the first process. Split among processes, the latter would be folded by turns, a few events a turn
    where they interleave (services/common/active.py); in one process they are merged as they come."""
    split = ranges([tp for tp in partitions if tp[0] in apart], workers)
    split[0] = sorted(split[0] + [tp for tp in partitions if tp[0] not in apart])
    return split


def _helper(settings: Settings, make_spec: Callable[[Settings, Catalogue], ServiceSpec], share: tuple[int, int],
            partitions: list[tuple[str, int]], timeout_s: float, folded: Any, applied: Any) -> None:
    """A further process of a rebuild: fold `partitions` until the fold is done everywhere (`folded`, a
    multiprocessing event, is set), add the events it applied to `applied`, then settle its `share` of the
    deferred work."""
    mom_logging.configure(f"{settings.service}-replay", "WARNING")
    worker = _deferring(build_worker(settings, lambda catalogue: make_spec(settings, catalogue)))
    worker.loop.read_only(partitions)
    settle_heap()

    async def run() -> None:
        task = asyncio.create_task(worker.loop.run())
        try:
            if not await asyncio.to_thread(folded.wait, timeout_s):
                raise TimeoutError("the first process never said the fold was done")
            worker.loop.stop()
            await task
            with applied.get_lock():
                applied.value += _applied(worker.spec.name)
            await worker.loop.settle(share)
        finally:
            await worker.close(task)

    asyncio.run(run())


class _Helpers:
    """The further processes of a rebuild, as seen from the first one (which also folds, and watches the positions)."""

    def __init__(self, shares: list[list[tuple[str, int]]], service: str, settings: Settings,
                 make_spec: Callable[[Settings, Catalogue], ServiceSpec], timeout_s: float) -> None:
        spawn = multiprocessing.get_context("spawn")  # not fork: this process already holds librdkafka's threads
        self.folded = spawn.Event()
        self.applied = spawn.Value("q", 0)
        workers = len(shares)
        self.processes = [spawn.Process(target=_helper, name=f"{service}-replay-{i}", daemon=True,
                                        args=(settings, make_spec, (i, workers), shares[i], timeout_s, self.folded,
                                              self.applied))
                          for i in range(1, workers)]

    def start(self) -> None:
        for process in self.processes:
            try:
                process.start()
            except (TypeError, AttributeError, pickle.PicklingError) as exc:
                raise ValueError(f"workers={len(self.processes) + 1}: a helper process cannot be given the service's "
                                 f"build (make_spec must be a module's function, or a partial of one, with picklable "
                                 f"arguments): {exc}") from exc

    def check(self) -> None:
        for process in self.processes:
            if process.exitcode not in (None, 0):
                raise RuntimeError(f"replay helper {process.name} exited with {process.exitcode}")

    async def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                raise TimeoutError(f"replay helper {process.name} did not finish within {timeout_s:.0f} s")
        self.check()

    def terminate(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()


async def rebuild(settings: Settings, make_spec: Callable[[Settings, Catalogue], ServiceSpec], admin_url: str,
                  schema: str, *, timeout_s: float = 3600.0, progress: Callable[[int, int], None] = lambda d, t: None,
                  start: dict[tuple[str, int], int] | None = None, workers: int = 1) -> Rebuilt:
    """Replay every input topic from offset 0 (or from `start`, per partition) into `schema` (dropped
    first), by `workers` processes that share the fold and then the settle (`make_spec` must then be
    importable: helpers are started, not forked)."""
    if workers < 1:
        raise ValueError(f"workers={workers}: must be at least 1")
    schema = checked_schema(schema)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    upgrade(admin_url, settings.service, schema=schema)
    if start:
        seed_positions(admin_url, schema, start)
    replay_settings = replace(settings, database_url=admin_url, db_schema=schema,
                              group_id=f"{settings.group_id}.replay.{uuid.uuid4().hex[:8]}")
    worker = _deferring(build_worker(replay_settings, lambda catalogue: make_spec(replay_settings, catalogue)))
    targets = end_offsets(replay_settings.kafka, worker.spec.input_topics)
    total = sum(targets.values())
    started = time.monotonic()
    split = shares(sorted(targets), workers, worker.spec.partitions_apart)
    worker.loop.read_only(split[0])
    helpers = _Helpers(split, settings.service, replay_settings, make_spec, timeout_s)
    applied_before = _applied(worker.spec.name)
    task = asyncio.create_task(worker.loop.run())
    try:
        helpers.start()
        while True:
            finished, done = _done(admin_url, schema, targets)
            if finished:
                worker.loop.stop()
                await task
                break
            helpers.check()
            progress(done, total)
            if task.done():
                task.result()
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"replay of {settings.service} did not finish in {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)
        settling = time.monotonic()
        helpers.folded.set()
        await worker.loop.settle((0, workers))
        await helpers.join(max(timeout_s - (time.monotonic() - started), HELPER_STOP_S))
        settled = time.monotonic() - settling
    finally:
        helpers.terminate()
        await worker.close(task)
    progress(total, total)
    return Rebuilt(time.monotonic() - started, _applied(worker.spec.name) - applied_before + helpers.applied.value, settled)


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
