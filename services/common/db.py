"""PostgreSQL plumbing every service shares: engine, positions, processed-event ids, outbox, dead letters.

Each service owns one schema. Connections set `search_path` to it, so the service's SQL and its
migrations never name a schema: `mom replay` rebuilds into a scratch schema with the same code.
"""
from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.common.settings import sqlalchemy_url

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def checked_schema(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"database schema {name!r}: must be a lower-case SQL identifier")
    return name


async def discard(conn: AsyncConnection) -> None:
    """Close a connection for good: the server ends its session, and with it any session lock (returned to
    the pool, it would keep it)."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


async def try_session_lock(engine: AsyncEngine, key_sql: str) -> AsyncConnection | None:
    """One attempt at a session advisory lock (`key_sql`, an SQL expression of the key), on a connection of
    its own: that connection while it holds the lock (`discard` it to let go), None if another session holds
    it (the connection goes back to the pool, holding nothing)."""
    conn = await engine.connect()
    try:
        locked = (await conn.execute(text(f"SELECT pg_try_advisory_lock({key_sql})"))).scalar()
        await conn.commit()
    except BaseException:
        await discard(conn)
        raise
    if not locked:
        await conn.close()
        return None
    return conn


def make_engine(database_url: str, schema: str, *, pool_size: int = 4) -> AsyncEngine:
    """The service's engine: sessions in its schema, in the time zone `UTC` by that name, and without JIT.

    psycopg gives timestamptz values the session's zone: `datetime.UTC` for `UTC`, a ZoneInfo for any
    other name (a server's default is often `Etc/UTC`). Events decode with `datetime.UTC`, and comparing
    or hashing two aware datetimes whose tzinfo objects differ asks both for their offsets: ten times the
    cost of the same-object case, on every comparison of a stored clock with an event time.

    PostgreSQL compiles a statement whose estimated cost passes `jit_above_cost` (100,000 by default)
    before it runs it. The planner cannot see into `unnest` of an array parameter, so the batch
    statements (a row per event, per unit or per period, joined laterally) are often estimated far
    above that, and compiling took about half a second a statement here, for statements that then ran
    in milliseconds (docs/performance.md). Services' sessions therefore run without JIT; analysts'
    sessions keep the server's setting."""
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=True,
        connect_args={"options": f"-c search_path={checked_schema(schema)} -c TimeZone=UTC -c jit=off"},
    )


# -- array parameters in binary ------------------------------------------------------------------------
#
# psycopg sends a Python list as a *text* array literal, quoting element by element with a regular
# expression: about 3.5 us per element, 7 ms for the 2,000 event ids of one batch. Wrapping a list in
# one of these types sends it as a binary array instead (one struct.pack per element, ~20x cheaper).
# The SQL is unchanged: `unnest(CAST(:ids AS text[]))` receives a text[] either way.

class TextArray(list):
    """A list of str (or None) sent as a binary text[] parameter."""


class Int4Array(list):
    """A list of int sent as a binary integer[] parameter."""


class Int8Array(list):
    """A list of int sent as a binary bigint[] parameter."""


class ByteaArray(list):
    """A list of bytes sent as a binary bytea[] parameter."""


class TimestamptzArray(list):
    """A list of timezone-aware datetimes (or None) sent as a binary timestamptz[] parameter."""


_ARRAY_HEAD = struct.Struct("!iiiii").pack   # ndim, has nulls, element oid, length, lower bound
_EMPTY_ARRAY = struct.Struct("!iii").pack
_LENGTH = struct.Struct("!i").pack
_NULL = _LENGTH(-1)
_INT4 = struct.Struct("!ii").pack
_INT8 = struct.Struct("!iq").pack


def _binary_array(element_oid: int, items: list, parts: list[bytes], has_null: bool) -> bytes:
    if not items:
        return _EMPTY_ARRAY(0, 0, element_oid)
    return _ARRAY_HEAD(1, int(has_null), element_oid, len(items), 1) + b"".join(parts)


def _varlena_parts(items: Iterable[bytes | None]) -> tuple[list[bytes], bool]:
    parts: list[bytes] = []
    has_null = False
    for b in items:
        if b is None:
            parts.append(_NULL)
            has_null = True
        else:
            parts.append(_LENGTH(len(b)))
            parts.append(b)
    return parts, has_null


class _TextArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1009  # text[]

    def dump(self, obj: TextArray) -> bytes:
        if None in obj:
            parts, has_null = _varlena_parts(None if s is None else s.encode() for s in obj)
            return _binary_array(25, obj, parts, has_null)
        length = _LENGTH
        return _binary_array(25, obj, [length(len(b)) + b for b in [s.encode() for s in obj]], False)


class _ByteaArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1001  # bytea[]

    def dump(self, obj: ByteaArray) -> bytes:
        parts, has_null = _varlena_parts(None if b is None else bytes(b) for b in obj)
        return _binary_array(17, obj, parts, has_null)


class _Int4ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1007  # integer[]

    def dump(self, obj: Int4Array) -> bytes:
        return _binary_array(23, obj, [_INT4(4, v) for v in obj], False)


class _Int8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1016  # bigint[]

    def dump(self, obj: Int8Array) -> bytes:
        return _binary_array(20, obj, [_INT8(8, v) for v in obj], False)


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class _TimestamptzArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1185  # timestamptz[]

    def dump(self, obj: TimestamptzArray) -> bytes:
        epoch, us, pack = _PG_EPOCH, _MICROSECOND, _INT8
        if None in obj:
            parts = [_NULL if v is None else pack(8, (v - epoch) // us) for v in obj]
            return _binary_array(1184, obj, parts, True)
        return _binary_array(1184, obj, [pack(8, (v - epoch) // us) for v in obj], False)


# Registered on psycopg's global adapters map: only these marker types are affected.
psycopg.adapters.register_dumper(TextArray, _TextArrayDumper)
psycopg.adapters.register_dumper(ByteaArray, _ByteaArrayDumper)
psycopg.adapters.register_dumper(Int4Array, _Int4ArrayDumper)
psycopg.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
psycopg.adapters.register_dumper(TimestamptzArray, _TimestamptzArrayDumper)


# -- COPY ------------------------------------------------------------------------------------------------
#
# psycopg's copy.write_row() in text format turns each value into text (an aware datetime alone costs
# more than a microsecond here). With the columns' types set, COPY runs in binary format, where
# psycopg's C dumpers pack numbers and timestamps directly: half the cost per row. Binary is used only
# where every column has one of these types; anything else (jsonb, arrays) goes as text, as before.

_BINARY_COPY_TYPES: dict[str, frozenset[type]] = {  # column type -> the Python types its binary dumper takes
    "text": frozenset({str}), "timestamp with time zone": frozenset({datetime}),
    "bigint": frozenset({int, bool}), "integer": frozenset({int, bool}), "smallint": frozenset({int, bool}),
    "boolean": frozenset({bool}), "double precision": frozenset({float, int, bool}),
}
_copy_types: dict[tuple[int, str, tuple[str, ...]], list[tuple[int, frozenset[type]]] | None] = {}


async def _binary_copy_types(cursor: Any, key: tuple[int, str, tuple[str, ...]]) -> list[tuple[int, frozenset[type]]] | None:
    """Each column's type oid and the Python types it takes in binary, once per engine, table and
    columns; None unless every column's type allows binary."""
    if key not in _copy_types:
        _, table, columns = key
        await cursor.execute(
            """SELECT a.attname, a.atttypid::int, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
               WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped""", (table,))
        found = {name: (oid, kind) for name, oid, kind in await cursor.fetchall()}
        types = [found.get(c) for c in columns]
        _copy_types[key] = ([(t[0], _BINARY_COPY_TYPES[t[1]]) for t in types]  # type: ignore[index]
                            if all(t is not None and t[1] in _BINARY_COPY_TYPES for t in types) else None)
    return _copy_types[key]


def _fits(columns: list[tuple[int, frozenset[type]]], rows: Sequence[tuple]) -> bool:
    """Whether every value is one the binary dumper of its column takes (an int for a text column is not)."""
    return all((set(map(type, values)) - {type(None)}) <= allowed
               for (_, allowed), values in zip(columns, zip(*rows, strict=True), strict=True))


async def copy_rows(conn: AsyncConnection, table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Many new rows through COPY on the transaction's own connection: far cheaper than parameters."""
    if not rows:
        return
    raw = await conn.get_raw_connection()
    async with raw.driver_connection.cursor() as cursor:
        types = await _binary_copy_types(cursor, (id(conn.sync_engine), table, tuple(columns)))
        binary = types is not None and _fits(types, rows)
        async with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{' (FORMAT BINARY)' if binary else ''}") as copy:
            if binary:
                copy.set_types([oid for oid, _ in types])  # type: ignore[union-attr]
            for row in rows:
                await copy.write_row(row)


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
    topics = TextArray([t for t, _ in pairs])
    numbers = Int4Array([p for _, p in pairs])
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
        text("""UPDATE positions AS p SET next_offset = v.next, head_recorded_at = NULL
                FROM unnest(CAST(:topics AS text[]), CAST(:parts AS integer[]),
                            CAST(:starts AS bigint[]), CAST(:nexts AS bigint[])) AS v(topic, partition, start, next)
                WHERE p.topic = v.topic AND p.partition = v.partition AND p.next_offset = v.start"""),
        {
            "topics": TextArray([s.topic for s in spans]), "parts": Int4Array([s.partition for s in spans]),
            "starts": Int8Array([s.start for s in spans]), "nexts": Int8Array([s.next for s in spans]),
        },
    )
    if result.rowcount != len(spans):
        raise StalePosition(f"{len(spans) - result.rowcount} of {len(spans)} partitions moved under this batch")


# Each partition's next record as its worker fetched it (see ConsumerLoop._exchange_heads). It describes the
# log, not the worker: the record at an offset never changes, so the value holds while the position stays
# where it was published for, whoever holds the partition by then.
POSITION_HEADS_DDL = "ALTER TABLE positions ADD COLUMN head_recorded_at timestamptz"
UNDATED = datetime.min.replace(tzinfo=UTC)  # the head of a record without a recorded_at (undecodable): first


async def publish_heads(conn: AsyncConnection, heads: Sequence[tuple[str, int, int, datetime]]) -> None:
    """Store (topic, partition, position, recorded_at): the first record at or past `position` was accepted at
    `recorded_at`. A partition whose position moved meanwhile is left as it is (its new head is not known)."""
    if not heads:
        return
    await conn.execute(
        text("""UPDATE positions AS p SET head_recorded_at = v.at
                FROM unnest(CAST(:topics AS text[]), CAST(:parts AS integer[]),
                            CAST(:offsets AS bigint[]), CAST(:ats AS timestamptz[])) AS v(topic, partition, at_offset, at)
                WHERE p.topic = v.topic AND p.partition = v.partition AND p.next_offset = v.at_offset"""),
        {"topics": TextArray([h[0] for h in heads]), "parts": Int4Array([h[1] for h in heads]),
         "offsets": Int8Array([h[2] for h in heads]), "ats": TimestamptzArray([h[3] for h in heads])},
    )


async def load_heads(conn: AsyncConnection, partitions: Sequence[tuple[str, int]]
                     ) -> dict[tuple[str, int], tuple[int, datetime | None]]:
    """Each partition's stored position and the recorded_at of its next record, where published (a partition
    never consumed is missing)."""
    if not partitions:
        return {}
    rows = await conn.execute(
        text("""SELECT topic, partition, next_offset, head_recorded_at FROM positions
                WHERE (topic, partition) IN (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:parts AS integer[])))"""),
        {"topics": TextArray([t for t, _ in partitions]), "parts": Int4Array([p for _, p in partitions])},
    )
    return {(r.topic, r.partition): (r.next_offset, r.head_recorded_at) for r in rows}


async def claim_event_ids(conn: AsyncConnection, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as processed; returns those never processed before (the rest are duplicates).

    Two statements, not one `INSERT ... ON CONFLICT DO NOTHING RETURNING`: looking the ids up (an index
    probe each, and normally nothing found) and copying in the new ones costs PostgreSQL less than half
    of the speculative insertion ON CONFLICT makes of every row (about 25 and 75 ms for 10,000 ids here).
    Two workers claiming one new id at once (an event re-published under another partition) cannot both
    win: the second's COPY waits for the first's transaction and then fails on the primary key, and the
    loop commits that batch again, whose look-up now finds the id."""
    if not event_ids:
        return set()
    rows = await conn.execute(text("SELECT event_id FROM processed_events WHERE event_id = ANY(:ids)"),
                              {"ids": TextArray(event_ids)})
    seen = {r[0] for r in rows}
    fresh = [i for i in event_ids if i not in seen] if seen else list(event_ids)
    await copy_text_column(conn, "processed_events", "event_id", fresh)
    return set(fresh)


_COPY_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


async def copy_text_column(conn: AsyncConnection, table: str, column: str, values: Sequence[str]) -> None:
    """Many new one-column text rows through COPY in one write: a row at a time (copy_rows) costs a
    microsecond or two of Python each, which for the event ids of a batch is most of the claim."""
    if not values:
        return
    data = "\n".join(values)
    if "\\" in data or "\t" in data or "\r" in data or data.count("\n") != len(values) - 1:
        data = "\n".join(v.translate(_COPY_TEXT_ESCAPES) for v in values)
    raw = await conn.get_raw_connection()
    async with raw.driver_connection.cursor() as cursor, cursor.copy(f"COPY {table} ({column}) FROM STDIN") as copy:
        await copy.write((data + "\n").encode())


async def add_outbox(conn: AsyncConnection, rows: Sequence[OutboxRow]) -> None:
    if not rows:
        return
    await conn.execute(
        text("""INSERT INTO outbox (event_id, event_type, topic, key, value)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:topics AS text[]),
                                     CAST(:keys AS bytea[]), CAST(:values AS bytea[]))"""),
        {
            "ids": TextArray([r.event_id for r in rows]), "types": TextArray([r.event_type for r in rows]),
            "topics": TextArray([r.topic for r in rows]), "keys": ByteaArray([r.key for r in rows]),
            "values": ByteaArray([r.value for r in rows]),
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
