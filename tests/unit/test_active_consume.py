"""runtime.consume with an elected active worker: what the worker does as a standby and on taking over
(the lock itself against PostgreSQL: tests/integration/test_active_worker.py)."""
from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest

from services.common.active import ActiveLost
from services.common.runtime import Worker, consume


class Lock:
    """An ActiveLock that grants the lock once `grant` is set, and loses it to another worker when `lose` is."""

    def __init__(self) -> None:
        self.standing_by = True
        self.grant, self.lose = asyncio.Event(), asyncio.Event()
        self.released = False

    async def acquire(self, stop: asyncio.Event) -> bool:
        waits = {asyncio.ensure_future(self.grant.wait()), asyncio.ensure_future(stop.wait())}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        if stop.is_set():
            return False
        self.standing_by = False
        return True

    async def watch(self) -> None:
        await self.lose.wait()
        raise ActiveLost("taken over")

    async def release(self) -> None:
        self.released, self.standing_by = True, True


class Loop:
    def __init__(self) -> None:
        self.last_progress = 0.0  # as if built long ago
        self.running = asyncio.Event()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


def worker(lock: Lock, loop: Loop) -> Worker:
    return Worker(settings=SimpleNamespace(), spec=SimpleNamespace(), engine=None, loop=loop, relay=None,  # type: ignore[arg-type]
                  consumer=None, ends_reader=None, active=lock)  # type: ignore[arg-type]


async def status(w: Worker) -> tuple[int, dict]:
    response = await w.healthz(None)  # type: ignore[arg-type]
    return response.status, json.loads(response.body)


async def test_a_standby_is_healthy_consumes_nothing_and_counts_its_liveness_from_taking_over():
    lock, loop = Lock(), Loop()
    w = worker(lock, loop)
    stop = asyncio.Event()
    task = asyncio.create_task(consume(w, stop))
    await asyncio.sleep(0.05)
    assert not loop.running.is_set()
    assert await status(w) == (200, {"status": "standby"})
    lock.grant.set()
    await asyncio.wait_for(loop.running.wait(), 1)
    assert time.time() - loop.last_progress < 5  # not 0.0: that would read as stalled for decades
    assert await status(w) == (200, {"status": "ok"})
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert lock.released


async def test_an_active_worker_whose_lock_was_taken_over_stops_its_loop_and_fails():
    lock, loop = Lock(), Loop()
    lock.grant.set()
    task = asyncio.create_task(consume(worker(lock, loop), asyncio.Event()))
    await asyncio.wait_for(loop.running.wait(), 1)
    lock.lose.set()
    with pytest.raises(ActiveLost):
        await asyncio.wait_for(task, 1)
    assert loop._stop.is_set() and lock.released


async def test_a_standby_asked_to_stop_never_consumes():
    lock, loop = Lock(), Loop()
    stop = asyncio.Event()
    task = asyncio.create_task(consume(worker(lock, loop), stop))
    stop.set()
    await asyncio.wait_for(task, 1)
    assert not loop.running.is_set() and not lock.released


class Granting:
    """A connection on which pg_try_advisory_lock answers true."""

    async def execute(self, _statement):
        return SimpleNamespace(scalar=lambda: True)

    async def commit(self) -> None: ...
    async def close(self) -> None: ...
    async def invalidate(self) -> None: ...


class AwayThenBack:
    """An engine whose database is away for the first `away` connection attempts."""

    def __init__(self, away: int) -> None:
        self.away = away

    async def connect(self):
        if self.away:
            self.away -= 1
            raise OSError("connection refused")
        return Granting()


async def test_a_standby_says_once_that_the_database_is_away_and_takes_the_lock_when_it_is_back(monkeypatch, caplog):
    from services.common import active

    monkeypatch.setattr(active, "LEAD_POLL_S", 0.01)
    lock = active.ActiveLock(AwayThenBack(away=5), "quality")  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="services.common.active"):
        assert await asyncio.wait_for(lock.acquire(asyncio.Event()), 5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("standby lock not asked: database unavailable") == 1
    assert messages[-1] == "active: this worker consumes" and not lock.standing_by
    await lock.release()
