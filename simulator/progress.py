"""Has every running service caught up? Each service's stored positions against the topics' end
offsets, and its outbox drained; decided by progress, never by a fixed sleep."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import psycopg

from services.common.kafka import end_offsets
from services.common.settings import KafkaSettings


def lag(status: dict, services: Sequence[str]) -> tuple[dict[str, int], int]:
    """Events each service still has to read (plus rows waiting in its outbox), and the sum of all
    positions (it grows while any service works)."""
    behind: dict[str, int] = {}
    positions: dict[str, dict[tuple[str, int], int]] = {}
    with psycopg.connect(status["database"]["url"], autocommit=True) as conn:
        for service in services:
            rows = conn.execute(f'SELECT topic, partition, next_offset FROM "{service}".positions').fetchall()
            positions[service] = {(t, p): n for t, p, n in rows}
            waiting = conn.execute(f'SELECT count(*) FROM "{service}".outbox').fetchone()[0]
            behind[service] = waiting if rows else max(waiting, 1)
    topics = sorted({t for mine in positions.values() for t, _ in mine})
    ends = end_offsets(KafkaSettings(bootstrap=status["kafka"]["bootstrap"]), topics) if topics else {}
    for service, mine in positions.items():
        mine_topics = {t for t, _ in mine}
        behind[service] += sum(max(0, end - mine.get((t, p), 0)) for (t, p), end in ends.items() if t in mine_topics)
    return behind, sum(n for mine in positions.values() for n in mine.values())


def wait_caught_up(status: dict, services: Sequence[str], *, stall_s: float = 120.0, limit_s: float = 1200.0,
                   report: Callable[[dict[str, int]], None] | None = None, quiet_polls: int = 2,
                   interval_s: float = 0.3) -> float:
    """Until every service has read its topics to the end with its outbox empty, twice in a row (a
    derived event published between the checks shows up as new lag). Gives up when no position has
    moved for `stall_s`; returns the seconds waited."""
    started = last_move = time.monotonic()
    last_total, quiet = -1, 0
    while True:
        behind, total = lag(status, services)
        if report:
            report(behind)
        quiet = quiet + 1 if not any(behind.values()) else 0
        if quiet >= quiet_polls:
            return time.monotonic() - started
        now = time.monotonic()
        if total != last_total:
            last_total, last_move = total, now
        if now - last_move > stall_s or now - started > limit_s:
            raise TimeoutError(f"services did not catch up: still behind {behind} after {now - started:.0f} s")
        time.sleep(interval_s)
