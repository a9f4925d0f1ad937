"""The outbox relay: publishes committed derived events, in commit order, then deletes them.

Publishing is at least once (a crash between the broker's acknowledgement and the delete publishes
again); consumers drop the second copy by its deterministic event_id. One relay per service schema
publishes at a time (an advisory lock), so events of one key keep their order.

Fault injection for the chaos test (docs/chaos.md): when MOM_FAULT_KILL_AFTER_COMMIT is set to a
probability p (0 < p <= 1), the process SIGKILLs itself with probability p each time the loop reports
a commit that added outbox rows, i.e. after the database commit and before the relay publishes them.
Unset (the default), the hook is inert.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, Producer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics
from services.common.db import Int8Array

log = logging.getLogger(__name__)

FAULT_KILL_AFTER_COMMIT = "MOM_FAULT_KILL_AFTER_COMMIT"


def kill_after_commit_probability(env=os.environ) -> float:
    """The chaos fault hook's probability from the environment: 0.0 (inert) unless set to a number in (0, 1]."""
    try:
        return min(max(float(env.get(FAULT_KILL_AFTER_COMMIT, "") or 0.0), 0.0), 1.0)
    except ValueError:
        return 0.0


class OutboxRelay:
    def __init__(self, service: str, engine: AsyncEngine, producer: Producer, *, batch: int = 5000,
                 idle_poll_s: float = 1.0) -> None:
        self._service = service
        self._engine = engine
        self._producer = producer
        self._batch = batch
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._kill_after_commit = kill_after_commit_probability()

    def wake(self) -> None:
        """Publish soon: the consumer loop calls this after a commit that added outbox rows (only then)."""
        if self._kill_after_commit and random.random() < self._kill_after_commit:
            log.warning("fault hook: SIGKILL after the commit, before the outbox publish")
            os.kill(os.getpid(), signal.SIGKILL)
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                while await self.publish_pending() == self._batch:
                    pass
                backoff = 0.5
            except Exception as exc:
                if self._stopping:
                    log.error("outbox not drained at stop; the next start publishes it", extra={"fields": {"error": str(exc)[:300]}})
                    return
                log.warning("outbox publish failed, retrying", extra={"fields": {"error": str(exc)[:300], "in_s": backoff}})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if self._stopping:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish up to one batch of outbox rows; returns how many were published. The rows the broker
        acknowledged are deleted even when others of the batch failed, so that a retry sends only the
        failed ones again (sending the whole batch again put acknowledged events on the topic twice)."""
        failed = ""
        async with self._engine.begin() as conn:
            locked = (await conn.execute(
                text("SELECT pg_try_advisory_xact_lock(hashtext('mom.outbox.' || current_schema()))"))).scalar()
            if not locked:
                return 0
            rows = (await conn.execute(
                text("SELECT id, event_id, event_type, topic, key, value FROM outbox ORDER BY id LIMIT :n"),
                {"n": self._batch})).all()
            if rows:
                acknowledged: list[int] = []
                failures: list[str] = []

                def outcome(row_id: int) -> Callable[[Any, Any], None]:
                    def delivered(err, _msg) -> None:
                        if err is None:
                            acknowledged.append(row_id)
                        else:
                            failures.append(str(err))
                    return delivered

                for row in rows:
                    self._produce(row.topic, row.key, row.value,
                                  [("event_type", row.event_type.encode()), ("event_id", row.event_id.encode())],
                                  outcome(row.id))
                remaining = await asyncio.to_thread(self._producer.flush, 30.0)
                if remaining:  # still queued after the wait: withdrawn, so that only the retry sends them
                    self._producer.purge(in_queue=True, in_flight=False)
                    self._producer.poll(0)
                # By id, not by range: a row of a concurrent worker's later commit may carry a lower id.
                await conn.execute(text("DELETE FROM outbox WHERE id = ANY(:ids)"), {"ids": Int8Array(acknowledged)})
                metrics.OUTBOX_PUBLISHED.labels(self._service).inc(len(acknowledged))
                if remaining or failures:
                    failed = f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}"
            if not failed:
                if len(rows) < self._batch:
                    # The SELECT saw everything there was, and all of it is published now: no count(*) needed.
                    # (Rows a concurrent worker commits meanwhile wake that worker's relay.)
                    backlog = 0
                else:  # a full batch: more may wait; count them (only while there is a backlog)
                    backlog = max((await conn.execute(text("SELECT count(*) FROM outbox"))).scalar() - len(rows), 0)
                metrics.OUTBOX_BACKLOG.labels(self._service).set(backlog)
        if failed:  # raised after the block, so that the deletion of what was acknowledged commits
            raise KafkaException(failed)
        return len(rows)

    def _produce(self, topic, key, value, headers, on_delivery) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.1)
