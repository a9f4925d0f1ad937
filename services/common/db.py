"""PostgreSQL plumbing every service shares: engine, positions, processed-event ids, outbox, dead letters.

Each service owns one schema. Connections set `search_path` to it, so the service's SQL and its
migrations never name a schema: `mom replay` rebuilds into a scratch schema with the same code.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.common.settings import sqlalchemy_url

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def checked_schema(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"database schema {name!r}: must be a lower-case SQL identifier")
    return name


def make_engine(database_url: str, schema: str, *, pool_size: int = 4) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=True,
        connect_args={"options": f"-c search_path={checked_schema(schema)}"},
    )


class StalePosition(RuntimeError):
    """A batch started from a position that is no longer the stored one: another worker moved on."""


@dataclass(frozen=True)
class Span:
    """The offsets one batch covers on one partition: [start, next)."""

    topic: str
    partition: int
    start: int
    next: int


@dataclass(frozen=True)
class OutboxRow:
    event_id: str
    event_type: str
    topic: str
    key: bytes
    value: bytes


# The DDL of the plumbing tables, run by each service's first migration (see migrations/).
PLUMBING_DDL = (
    """CREATE TABLE positions (
        topic text NOT NULL,
        partition integer NOT NULL,
        next_offset bigint NOT NULL,
        PRIMARY KEY (topic, partition))""",
    """CREATE TABLE processed_events (
        event_id text PRIMARY KEY)""",
    """CREATE TABLE outbox (
        id bigserial PRIMARY KEY,
        event_id text NOT NULL,
        event_type text NOT NULL,
        topic text NOT NULL,
        key bytea NOT NULL,
        value bytea NOT NULL)""",
    """CREATE TABLE dead_letters (
        topic text NOT NULL,
        partition integer NOT NULL,
        "offset" bigint NOT NULL,
        event_type text,
        error text NOT NULL,
        payload bytea,
        PRIMARY KEY (topic, partition, "offset"))""",
)


async def load_positions(conn: AsyncConnection, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The stored next offset of each partition, creating a zero position for a partition never seen."""
    pairs = list(partitions)
    if not pairs:
        return {}
    topics = [t for t, _ in pairs]
    numbers = [p for _, p in pairs]
    await conn.execute(
        text("""INSERT INTO positions (topic, partition, next_offset)
                SELECT t, p, 0 FROM unnest(CAST(:topics AS text[]), CAST(:parts AS integer[])) AS x(t, p)
                ON CONFLICT DO NOTHING"""),
        {"topics": topics, "parts": numbers},
    )
    rows = await conn.execute(
        text("""SELECT topic, partition, next_offset FROM positions
                WHERE (topic, partition) IN (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:parts AS integer[])))"""),
        {"topics": topics, "parts": numbers},
    )
    return {(r.topic, r.partition): r.next_offset for r in rows}


async def advance_positions(conn: AsyncConnection, spans: Sequence[Span]) -> None:
    """Move each partition's position from where the batch started to where it ended, or fail whole.

    The update is conditional on the start position, so a worker that lost a partition in a rebalance
    cannot apply a batch that the partition's new owner applies too.
    """
    if not spans:
        return
    result = await conn.execute(
        text("""UPDATE positions AS p SET next_offset = v.next
                FROM unnest(CAST(:topics AS text[]), CAST(:parts AS integer[]),
                            CAST(:starts AS bigint[]), CAST(:nexts AS bigint[])) AS v(topic, partition, start, next)
                WHERE p.topic = v.topic AND p.partition = v.partition AND p.next_offset = v.start"""),
        {
            "topics": [s.topic for s in spans], "parts": [s.partition for s in spans],
            "starts": [s.start for s in spans], "nexts": [s.next for s in spans],
        },
    )
    if result.rowcount != len(spans):
        raise StalePosition(f"{len(spans) - result.rowcount} of {len(spans)} partitions moved under this batch")


async def claim_event_ids(conn: AsyncConnection, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as processed; returns those never processed before (the rest are duplicates)."""
    if not event_ids:
        return set()
    rows = await conn.execute(
        text("""INSERT INTO processed_events (event_id) SELECT unnest(CAST(:ids AS text[]))
                ON CONFLICT DO NOTHING RETURNING event_id"""),
        {"ids": list(event_ids)},
    )
    return {r[0] for r in rows}


async def add_outbox(conn: AsyncConnection, rows: Sequence[OutboxRow]) -> None:
    if not rows:
        return
    await conn.execute(
        text("""INSERT INTO outbox (event_id, event_type, topic, key, value)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:topics AS text[]),
                                     CAST(:keys AS bytea[]), CAST(:values AS bytea[]))"""),
        {
            "ids": [r.event_id for r in rows], "types": [r.event_type for r in rows],
            "topics": [r.topic for r in rows], "keys": [r.key for r in rows], "values": [r.value for r in rows],
        },
    )


async def add_dead_letters(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Keep what could not be processed, with the reason, so a partition never stalls on one bad record."""
    if not rows:
        return
    await conn.execute(
        text("""INSERT INTO dead_letters (topic, partition, "offset", event_type, error, payload)
                VALUES (:topic, :partition, :offset, :event_type, :error, :payload)
                ON CONFLICT DO NOTHING"""),
        list(rows),
    )
