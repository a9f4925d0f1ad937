"""The outbox relay: publishes committed derived events exactly once, in commit order, then deletes them.

Kafka decides what was published. Each batch of outbox rows goes out in one Kafka transaction, and the
same transaction commits, as the offset metadata of a consumer group that never consumes (the relay's
marker group), the ids of the rows it carries. A read_committed reader sees all of a transaction or
none of it; a committed transaction's marker names its rows. The rows are deleted once the
transaction committed; should the process die between the commit and the delete, the next relay to
lead reads the marker and deletes those rows instead of publishing them again.

One relay per outbox leads: it holds a session advisory lock of the service schema. Every leader of an
outbox uses the same transactional.id, so taking the lead fences a predecessor that lost its lock but
still runs (init_transactions aborts the predecessor's open transaction and refuses its later ones).
The leader publishes, in id order, the rows of every worker of the service: those of its own worker
as soon as a commit wakes it, those of other workers within its poll interval.

Fault injection for the chaos test (docs/chaos.md), each hook a probability p (0 < p <= 1) in the
environment; unset (the default), a hook is inert:
  MOM_FAULT_KILL_AFTER_COMMIT   SIGKILL after a loop commit that added outbox rows, before the relay
                                publishes them;
  MOM_FAULT_KILL_AFTER_PUBLISH  SIGKILL after the Kafka transaction committed, before the rows are
                                deleted.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import metrics
from services.common.db import Int8Array, discard, try_session_lock

log = logging.getLogger(__name__)

FAULT_KILL_AFTER_COMMIT = "MOM_FAULT_KILL_AFTER_COMMIT"
FAULT_KILL_AFTER_PUBLISH = "MOM_FAULT_KILL_AFTER_PUBLISH"

MARKER_CHARS = 3800  # below the broker's offset.metadata.max.bytes (4096 by default)
KAFKA_TIMEOUT_S = 30.0
# A call into the transactional producer that has not returned by then counts as failed, whatever its own
# timeout said: after a broker restart send_offsets_to_transaction was seen to wait for minutes past it,
# in the first transaction of every relay. The relay then lets go of the lead; whoever takes it next
# fences this producer (see _bounded). A transaction takes milliseconds; taking the lead may wait for
# a coordinator that is still loading.
TRANSACTION_DEADLINE_S = 20.0
LEAD_DEADLINE_S = 2 * KAFKA_TIMEOUT_S
CLOSE_WAIT_S = 10.0  # how long resign() waits for the clients to close (see resign)
_LOCK = "hashtext('mom.outbox.' || current_schema())"
_COORDINATOR_NOT_READY = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT,
                                    KafkaError.UNSTABLE_OFFSET_COMMIT})

Clients = Callable[[], tuple[Producer, Consumer]]  # a transactional producer and a reader of the marker group


def fault_probability(variable: str, env=os.environ) -> float:
    """A chaos fault hook's probability from the environment: 0.0 (inert) unless set to a number in (0, 1]."""
    try:
        return min(max(float(env.get(variable, "") or 0.0), 0.0), 1.0)
    except ValueError:
        return 0.0


def _maybe_die(probability: float, moment: str) -> None:
    if probability and random.random() < probability:
        log.warning("fault hook: SIGKILL " + moment)
        os.kill(os.getpid(), signal.SIGKILL)


# -- the marker: which outbox rows a transaction published --

def encode_marker(table_oid: int, ids: Sequence[int]) -> str:
    """`<oid of the outbox table>:<runs of ids>`, each run `lo-hi` (or `id`) in base 36, comma-separated;
    `ids` ascending. The oid tells a marker of a dropped and re-created outbox from a current one."""
    runs: list[str] = []
    lo = hi = None
    for i in ids:
        if hi is not None and i == hi + 1:
            hi = i
            continue
        if lo is not None:
            runs.append(_run(lo, hi))
        lo = hi = i
    if lo is not None:
        runs.append(_run(lo, hi))
    return f"{table_oid}:{','.join(runs)}"


def decode_marker(marker: str | None) -> tuple[int, list[int]] | None:
    """The table oid and the ids of a marker; None for no marker or one this relay did not write."""
    if not marker or ":" not in marker:
        return None
    oid, _, runs = marker.partition(":")
    try:
        ids: list[int] = []
        for run in filter(None, runs.split(",")):
            lo, _, hi = run.partition("-")
            ids.extend(range(int(lo, 36), int(hi or lo, 36) + 1))
        return int(oid), ids
    except ValueError:
        return None


def _run(lo: int, hi: int) -> str:
    return _base36(lo) if lo == hi else f"{_base36(lo)}-{_base36(hi)}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def fitting(table_oid: int, ids: Sequence[int]) -> int:
    """How many of `ids` (ascending) one marker can name: all of them unless gaps make it too long."""
    n = len(ids)
    while n > 1 and len(encode_marker(table_oid, ids[:n])) > MARKER_CHARS:
        n //= 2
    return n


class OutboxRelay:
    """Publishes one service schema's outbox. Nothing connects until run() (or publish_pending) is awaited."""

    def __init__(self, service: str, engine: AsyncEngine, clients: Clients | None, *, marker_topic: str | None,
                 batch: int = 5000, idle_poll_s: float = 0.25) -> None:
        self._service = service
        self._engine = engine
        self._clients = clients
        self._marker_topic = marker_topic
        self._batch = batch
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._kill_after_commit = fault_probability(FAULT_KILL_AFTER_COMMIT)
        self._kill_after_publish = fault_probability(FAULT_KILL_AFTER_PUBLISH)
        self._lock: AsyncConnection | None = None  # holds the advisory lock while this relay leads
        self._producer: Producer | None = None
        self._reader: Consumer | None = None
        self._group: Any = None  # the marker group's metadata, for send_offsets_to_transaction
        self._oid: int | None = None
        self._backlog = 0

    @property
    def leading(self) -> bool:
        return self._producer is not None

    def wake(self) -> None:
        """Publish soon: the consumer loop calls this after a commit that added outbox rows (only then)."""
        _maybe_die(self._kill_after_commit, "after the commit, before the outbox publish")
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.5
        try:
            while True:
                try:
                    if await self.lead():
                        while await self.publish_pending() and self._backlog:
                            pass
                    backoff = 0.5
                except Exception as exc:
                    await self.resign()
                    if self._stopping:
                        log.error("outbox not drained at stop; the next leader publishes it",
                                  extra={"fields": {"error": str(exc)[:300]}})
                        return
                    log.warning("outbox publish failed, retrying", extra={"fields": {"error": str(exc)[:300], "in_s": backoff}})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if self._stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
                self._wake.clear()
        finally:
            await self.resign()

    # -- leadership --

    async def lead(self) -> bool:
        """Take the lead of this outbox if no other relay has it; True while this relay leads. On taking it:
        fence the predecessor, then delete the rows its last committed transaction published."""
        if self._producer is not None:
            return True
        assert self._clients is not None and self._marker_topic is not None, "a relay that publishes needs clients"
        conn = await try_session_lock(self._engine, _LOCK)
        if conn is None:
            return False
        self._lock = conn
        started = time.monotonic()
        self._producer, self._reader = await asyncio.to_thread(self._clients)
        self._group, marker = await _bounded(self._fence_and_read_marker, deadline_s=LEAD_DEADLINE_S)
        async with self._engine.begin() as db:
            self._oid = (await db.execute(text("SELECT 'outbox'::regclass::oid"))).scalar()
            published = decode_marker(marker)
            recovered = 0
            if published is not None and published[0] == self._oid and published[1]:
                recovered = (await db.execute(text("DELETE FROM outbox WHERE id = ANY(:ids)"),
                                              {"ids": Int8Array(published[1])})).rowcount
        metrics.OUTBOX_LEADER.labels(self._service).set(1)
        log.info("leading the outbox", extra={"fields": {
            "took_s": round(time.monotonic() - started, 3), "published_before_a_crash": recovered}})
        return True

    def _fence_and_read_marker(self) -> tuple[Any, str | None]:
        assert self._producer is not None and self._reader is not None
        self._producer.init_transactions(KAFKA_TIMEOUT_S)
        deadline = time.monotonic() + KAFKA_TIMEOUT_S
        while True:  # the group coordinator may still be loading, or just moved
            try:
                (committed,) = self._reader.committed([TopicPartition(self._marker_topic, 0)], timeout=10)
                break
            except KafkaException as exc:
                if exc.args[0].code() not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if committed.error is not None:
            raise KafkaException(committed.error)
        return self._reader.consumer_group_metadata(), committed.metadata

    async def resign(self) -> None:
        """Let go of the lead. The lock goes first: its connection is closed rather than pooled (a pooled
        one would keep the session lock), so another relay may lead at once; taking the lead fences this
        relay's producer. Then the clients are closed, in a thread of their own: closing a transactional
        producer aborts its open transaction, and after a broker restart librdkafka has been seen to
        wait on that abort without end. A close that has not finished in CLOSE_WAIT_S is left to finish
        in the background, and said so."""
        producer, reader, lock = self._producer, self._reader, self._lock
        self._producer = self._reader = self._lock = None
        if lock is not None:
            await discard(lock)
            metrics.OUTBOX_LEADER.labels(self._service).set(0)
        if producer is not None or reader is not None:
            try:
                await _bounded(_close_clients, producer, reader, deadline_s=CLOSE_WAIT_S)
            except TimeoutError:
                log.warning("outbox clients did not close; left closing in the background",
                            extra={"fields": {"waited_s": CLOSE_WAIT_S}})

    # -- publishing --

    async def publish_pending(self) -> int:
        """Publish up to one batch of outbox rows in one Kafka transaction, then delete them; returns how many.
        Only the leader publishes: 0 without the lead."""
        if not await self.lead():
            return 0
        async with self._engine.begin() as conn:
            rows = (await conn.execute(
                text("SELECT id, event_id, event_type, topic, key, value FROM outbox ORDER BY id LIMIT :n"),
                {"n": self._batch})).all()
        if not rows:
            self._backlog = 0
            metrics.OUTBOX_BACKLOG.labels(self._service).set(0)
            return 0
        ids = [row.id for row in rows]
        n = fitting(self._oid, ids)
        await _bounded(self._transact, rows[:n], encode_marker(self._oid, ids[:n]), deadline_s=TRANSACTION_DEADLINE_S)
        _maybe_die(self._kill_after_publish, "after the outbox transaction, before the delete")
        async with self._engine.begin() as conn:
            await conn.execute(text("DELETE FROM outbox WHERE id = ANY(:ids)"), {"ids": Int8Array(ids[:n])})
            if len(rows) < self._batch:  # the SELECT saw everything there was
                self._backlog = len(rows) - n
            else:  # a full batch: more may wait; count them (only while there is a backlog)
                self._backlog = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar()
        metrics.OUTBOX_PUBLISHED.labels(self._service).inc(n)
        metrics.OUTBOX_BACKLOG.labels(self._service).set(self._backlog)
        return n

    def _transact(self, rows: Sequence[Any], marker: str) -> None:
        """One Kafka transaction: the rows, and the marker naming them (runs in a thread)."""
        producer = self._producer
        assert producer is not None
        producer.begin_transaction()
        try:
            for row in rows:
                self._produce(producer, row)
            producer.send_offsets_to_transaction(
                [TopicPartition(self._marker_topic, 0, rows[-1].id, metadata=marker)], self._group, KAFKA_TIMEOUT_S)
            for attempt in range(3):
                try:
                    producer.commit_transaction(KAFKA_TIMEOUT_S)
                    return
                except KafkaException as exc:
                    if not exc.args[0].retriable() or attempt == 2:
                        raise
        except KafkaException as exc:
            if exc.args[0].txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(KAFKA_TIMEOUT_S)
            raise

    @staticmethod
    def _produce(producer: Producer, row: Any) -> None:
        headers = [("event_type", row.event_type.encode()), ("event_id", row.event_id.encode())]
        while True:
            try:
                producer.produce(row.topic, value=row.value, key=row.key, headers=headers)
                return
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)


async def _bounded(fn: Callable[..., Any], *args: Any, deadline_s: float) -> Any:
    """fn(*args) in a thread of its own; TimeoutError if it has not returned within `deadline_s`. The
    thread is then left to finish (or not) without a waiter: it cannot be interrupted inside librdkafka.
    Its producer can do no harm by then: the next leader's init_transactions fences it, and a
    transaction it still commits before that is named by its marker, which the next leader reads."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():  # the waiter gave up
            return
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, daemon=True, name=f"outbox-{getattr(fn, '__name__', 'call')}").start()
    try:
        return await asyncio.wait_for(done, deadline_s)
    except TimeoutError:
        raise TimeoutError(f"{getattr(fn, '__name__', 'a Kafka call')} did not return in {deadline_s:.0f} s") from None


def _close_clients(producer: Producer | None, reader: Consumer | None) -> None:
    if producer is not None:  # a transaction left open is aborted within a bound before close() tries it again
        with contextlib.suppress(Exception):
            producer.abort_transaction(KAFKA_TIMEOUT_S)
    for client in (reader, producer):
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
