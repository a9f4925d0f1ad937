"""Waiting for a running service without guessing how fast the machine is.

A service started by a test first works through every event earlier tests left on the shared
topics; on a busy machine that can take minutes. So a wait gives up when the service stops making
progress (its positions have not moved for `stall_s`), not after a fixed time, and never later
than `limit_s`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], progress: Callable[[], object] | None = None, *,
               stall_s: float = 60.0, limit_s: float = 900.0, interval_s: float = 0.5) -> T | None:
    """Poll `check` until it returns something other than None (or an empty result).

    Gives up, returning the last result, when `progress()` has not changed for `stall_s` seconds
    (or, without `progress`, after `stall_s`), or after `limit_s` in any case.
    """
    started = last_move = time.monotonic()
    last = progress() if progress else None
    while True:
        result = check()
        if result:
            return result
        now = time.monotonic()
        if progress is not None:
            current = progress()
            if current != last:
                last, last_move = current, now
        if now - last_move > stall_s or now - started > limit_s:
            return result
        time.sleep(interval_s)


def positions_of(database_url: str, schema: str) -> Callable[[], int]:
    """The sum of a service schema's consumer positions: it grows while the service works."""
    def read() -> int:
        with psycopg.connect(database_url, autocommit=True) as conn:
            return conn.execute(f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".positions').fetchone()[0]
    return read
