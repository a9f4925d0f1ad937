"""The relay lets go of the lead even when its producer will not close: the lock goes first, and a
close that hangs (an abort librdkafka waits on without end) is left to a thread of its own."""
from __future__ import annotations

import asyncio
import threading
import time

from services.common import outbox
from services.common.outbox import OutboxRelay


class Hanging:
    """A client whose abort and close wait until released, as a producer with a broken transaction did."""

    def __init__(self, release: threading.Event) -> None:
        self.release, self.closed = release, threading.Event()

    def abort_transaction(self, _timeout):
        self.release.wait()

    def close(self):
        self.release.wait()
        self.closed.set()


class Lock:
    """The advisory lock's connection: invalidated and closed is how the server ends the session lock."""

    def __init__(self) -> None:
        self.ended = False

    async def invalidate(self):
        self.ended = True

    async def close(self):
        pass


def test_a_producer_that_will_not_close_does_not_keep_the_lock(monkeypatch, caplog):
    monkeypatch.setattr(outbox, "CLOSE_WAIT_S", 0.2)
    release = threading.Event()
    relay = OutboxRelay("test", engine=None, clients=None, marker_topic=None)
    producer, lock = Hanging(release), Lock()
    relay._producer, relay._reader, relay._lock = producer, None, lock
    started = time.monotonic()
    try:
        asyncio.run(relay.resign())
        assert time.monotonic() - started < 5
        assert lock.ended and not relay.leading
        assert "left closing in the background" in caplog.text
        assert not producer.closed.is_set()
    finally:
        release.set()
    assert producer.closed.wait(5)  # once the abort returns, the close goes on


def test_clients_that_close_at_once_are_closed_before_resign_returns(monkeypatch, caplog):
    release = threading.Event()
    release.set()
    relay = OutboxRelay("test", engine=None, clients=None, marker_topic=None)
    producer, reader, lock = Hanging(release), Hanging(release), Lock()
    relay._producer, relay._reader, relay._lock = producer, reader, lock
    asyncio.run(relay.resign())
    assert producer.closed.is_set() and reader.closed.is_set() and lock.ended
    assert "left closing" not in caplog.text


def test_a_kafka_call_that_does_not_return_by_its_deadline_counts_as_failed():
    release = threading.Event()

    async def scenario():
        started = time.monotonic()
        try:
            await outbox._bounded(release.wait, deadline_s=0.2)
        except TimeoutError as exc:
            assert "did not return in 0 s" in str(exc) or "did not return" in str(exc)
            return time.monotonic() - started
        raise AssertionError("no TimeoutError")

    try:
        assert asyncio.run(scenario()) < 5
    finally:
        release.set()


def test_a_kafka_call_within_its_deadline_gives_its_result_or_its_error():
    def fails():
        raise ValueError("refused")

    async def scenario():
        assert await outbox._bounded(lambda a, b: a + b, 2, 3, deadline_s=5) == 5
        try:
            await outbox._bounded(fails, deadline_s=5)
        except ValueError as exc:
            return str(exc)

    assert asyncio.run(scenario()) == "refused"
