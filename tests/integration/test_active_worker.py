"""One active worker for a service with no topic apart (services/common/active.py), against the real
database and, for the hand-over, real worker processes."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from services.common import active
from services.common.active import ActiveLock, ActiveLost
from services.common.db import make_engine
from tests.integration.test_consumer_loop import produce, query, read_topic
from tests.integration.test_maintenance_domain import maintenance_scratch, start_at_end  # noqa: F401 - a fixture
from tests.integration.test_maintenance_sigkill import HOURS, reports, worker_env

pytestmark = pytest.mark.integration


def _holder_pids(prepared, schema: str) -> list[int]:
    """Backends holding the schema's active lock."""
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        key = conn.execute("SELECT hashtext('mom.active.' || %s)", (schema,)).fetchone()[0]
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = (%s::bigint & 4294967295)::oid",
            (key,)).fetchall()]


def _terminate(prepared, pids: list[int]) -> None:
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_one_worker_holds_the_lock_a_lost_session_is_taken_again_or_given_up(prepared, maintenance_scratch,  # noqa: F811
                                                                                    monkeypatch):
    monkeypatch.setattr(active, "LEAD_POLL_S", 0.1)
    monkeypatch.setattr(active, "LEAD_CHECK_S", 0.2)
    schema = maintenance_scratch.db_schema
    engines = [make_engine(prepared.superuser_url, schema) for _ in range(2)]
    first, second = (ActiveLock(engine, "maintenance") for engine in engines)
    stop = asyncio.Event()
    try:
        assert await first.acquire(stop) and not first.standing_by
        # the second stands by for as long as the first holds the lock
        waiting = asyncio.create_task(second.acquire(stop))
        await asyncio.sleep(1.0)
        assert not waiting.done() and second.standing_by
        # the first loses its session with nobody else asking: it takes the lock again and stays active
        stop.set()
        assert await waiting is False
        stop.clear()
        (holder,) = _holder_pids(prepared, schema)
        watch = asyncio.create_task(first.watch())
        _terminate(prepared, [holder])
        deadline = time.monotonic() + 10
        while _holder_pids(prepared, schema) in ([], [holder]):
            assert time.monotonic() < deadline, "the lock was not taken again"
            await asyncio.sleep(0.05)
        assert not watch.done()
        # it loses it again and the second takes it first: the first gives up (ActiveLost)
        watch.cancel()
        _terminate(prepared, _holder_pids(prepared, schema))
        assert await second.acquire(stop) and not second.standing_by
        with pytest.raises(ActiveLost):
            await asyncio.wait_for(first.watch(), 10)
        # a release lets the other take it at once
        await second.release()
        assert second.standing_by and _holder_pids(prepared, schema) == []
    finally:
        for lock in (first, second):
            await lock.release()
        for engine in engines:
            await engine.dispose()


def _logged(path: Path, message: str) -> bool:
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("message") == message:
                return True
        except ValueError:
            continue
    return False


def test_a_second_worker_stands_by_and_takes_over_when_the_active_one_dies(prepared, maintenance_scratch,  # noqa: F811
                                                                           tmp_path):
    settings = maintenance_scratch
    start = start_at_end(prepared, settings)
    unit = f"acme.berlin.assembly.line1.press{uuid.uuid4().hex[:8]}"
    topic = prepared.catalogue.topic_for("RuntimeAccumulated").name
    begun = sum(o for (t, _), o in start.items() if t == topic)
    env = worker_env(prepared, settings, MOM_KAFKA_SESSION_TIMEOUT_MS="6000", MOM_LOG_LEVEL="INFO")

    def processed() -> int:
        return query(prepared, settings.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s",
                     topic)[0][0] - begun

    def wait_for(done, what: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
            for proc in procs:
                assert proc is killed or proc.poll() is None, f"a worker exited with {proc.returncode}"
            time.sleep(0.05)

    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs: list[subprocess.Popen] = []
    killed = None
    try:
        for log in logs:
            procs.append(subprocess.Popen([sys.executable, "-m", "services.maintenance"], env=env,
                                          stdout=log.open("w"), stderr=subprocess.STDOUT))
            wait_for(lambda log=log: _logged(log, "active: this worker consumes")
                     or _logged(log, "standing by: another worker of the service consumes"), f"{log.name} started")
        assert _logged(logs[0], "active: this worker consumes")
        assert _logged(logs[1], "standing by: another worker of the service consumes")
        produce(prepared, reports(unit))
        wait_for(lambda: processed() >= 500, "the active worker folds")
        killed = procs[0]
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        wait_for(lambda: _logged(logs[1], "active: this worker consumes"), "the standby takes over")
        wait_for(lambda: processed() >= HOURS and not query(prepared, settings.db_schema, "SELECT count(*) FROM outbox")[0][0],
                 "the new active worker folds the rest and publishes it")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    assert query(prepared, settings.db_schema, "SELECT due_index FROM pm_dues WHERE plan_id = %s ORDER BY 1",
                 f"MP-{unit}") == [(1,), (2,)]
    published = read_topic(prepared, prepared.catalogue.topic_for("PreventiveMaintenanceDue").name, unit)
    assert sorted(i for i in published if ":due:" in i) == [f"MP-{unit}:r1:due:1", f"MP-{unit}:r1:due:2"]
