"""One active worker for a service whose input partitions gain nothing from being split.

Workers of one service fold in one acceptance order (docs/architecture.md, "Several workers of one
service"): an event waits for every earlier event another worker holds and has not folded yet. For a
topic a service declares apart (ServiceSpec.partitions_apart) that wait is left out, and workers fold
its partitions side by side. A service with no topic apart gains nothing from a second worker: the two
fold by turns, and where their partitions' events interleave (a catch-up of inspections keyed by
characteristic, say) each turn is one batch of a few events and a round trip through PostgreSQL, about
twenty events a second in all, where one worker folds thousands.

So the workers of such a service elect one to consume: the holder of a PostgreSQL session lock named
after the service's schema. The others stand by (ready, not in the consumer group) and ask for the
lock every LEAD_POLL_S; when the active worker dies, its session ends, the lock is free, and a standby
joins the group and goes on from the stored positions. The lock decides who consumes, never what is
correct: should two workers consume for a while (a session lost and the lock taken by a standby
before the active one noticed), the acceptance order and the conditional position updates keep the
projections exact, as they always do. The active worker checks its session every LEAD_CHECK_S; if it
was lost and another worker holds the lock by then, it stops (ActiveLost), and its supervisor starts
it again as a standby.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import metrics
from services.common.db import discard, try_session_lock

log = logging.getLogger(__name__)

LEAD_POLL_S = 1.0   # a standby asks for the lock this often
LEAD_CHECK_S = 5.0  # the active worker checks that its session (and with it the lock) is still there this often
_LOCK = "hashtext('mom.active.' || current_schema())"


class ActiveLost(RuntimeError):
    """Another worker took the lock while this one's session was lost: this one must not go on consuming."""


class ActiveLock:
    def __init__(self, engine: AsyncEngine, service: str) -> None:
        self._engine = engine
        self._service = service
        self._conn: AsyncConnection | None = None
        self.standing_by = True

    async def _try(self) -> bool:
        """One attempt to take the lock, on a connection of its own that keeps it (a session lock)."""
        self._conn = await try_session_lock(self._engine, _LOCK)
        return self._conn is not None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this worker holds the lock (True), or until `stop` is set (False)."""
        metrics.WORKER_ACTIVE.labels(self._service).set(0)
        said = away = False
        while not stop.is_set():
            try:
                if await self._try():
                    self.standing_by = False
                    metrics.WORKER_ACTIVE.labels(self._service).set(1)
                    log.info("active: this worker consumes")
                    return True
                away = False
                if not said:
                    log.info("standing by: another worker of the service consumes", extra={"fields": {"poll_s": LEAD_POLL_S}})
                    said = True
            except Exception as exc:  # the database away: a standby waits for it like the loop does
                if not away:  # once an outage, not every poll
                    log.warning("standby lock not asked: database unavailable", extra={"fields": {"error": str(exc)[:300]}})
                    away = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEAD_POLL_S)
        return False

    async def watch(self) -> None:
        """Run while this worker is active: check the lock's session every LEAD_CHECK_S; when it was lost,
        take the lock again, or raise ActiveLost if another worker holds it by then. Never returns."""
        while True:
            await asyncio.sleep(LEAD_CHECK_S)
            if await self._alive():
                continue
            await self._drop()
            log.warning("the session holding the active lock was lost; taking it again")
            while True:
                try:
                    if await self._try():
                        log.info("active lock taken again")
                        break
                    raise ActiveLost("another worker of the service took the active lock while this worker's database "
                                     "session was lost; this worker stops so that it starts again as a standby")
                except ActiveLost:
                    metrics.WORKER_ACTIVE.labels(self._service).set(0)
                    raise
                except Exception as exc:  # the database still away: the loop waits for it too
                    log.debug("active lock not asked", extra={"fields": {"error": str(exc)[:300]}})
                    await asyncio.sleep(LEAD_POLL_S)

    async def _alive(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.execute(text("SELECT 1"))
            await conn.commit()
            return True
        except Exception:  # noqa: BLE001 - a lost session is the answer
            return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await discard(conn)

    async def release(self) -> None:
        """Let go of the lock (its session ends with its connection): a standby may take over at once."""
        await self._drop()
        self.standing_by = True
        metrics.WORKER_ACTIVE.labels(self._service).set(0)

