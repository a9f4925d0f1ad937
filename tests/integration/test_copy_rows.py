"""COPY of new rows, in binary where every column allows it and as text where one does not: the rows
read back are the rows written, NULLs, escapes and time zones included. And the claim of event ids,
which copies the new ones in: duplicates drop out, whoever stored them first."""
from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from services.common.db import claim_event_ids, copy_rows, make_engine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 6, 0, 0, 123456, tzinfo=UTC)
ROWS = [
    ("PRESS-07", T0, 3, True, 0.25, None),
    ("PRESS-07\ttab\\slash\nline", T0 + timedelta(microseconds=1), None, False, None, "scrap"),
    ("WELD-02", datetime(2026, 11, 2, 8, 0, tzinfo=timezone(timedelta(hours=2))), 2**40, None, -1.5e-7, "ünïcode"),
]


@pytest.fixture
def schema(prepared):
    name = f"copy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        conn.execute(f'''CREATE TABLE "{name}".facts (unit text, at timestamptz, n bigint, ok boolean,
                                                       v double precision, note text)''')
        conn.execute(f'CREATE TABLE "{name}".tagged (unit text, at timestamptz, tags jsonb)')
        conn.execute(f'CREATE TABLE "{name}".processed_events (event_id text PRIMARY KEY)')
    yield name
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def read(prepared, schema: str, sql: str) -> list[tuple]:
    with psycopg.connect(prepared.superuser_url) as conn:
        return conn.execute(sql.format(schema=schema)).fetchall()


async def test_rows_copied_in_binary_read_back_unchanged(prepared, schema):
    engine = make_engine(prepared.superuser_url, schema)
    try:
        async with engine.begin() as conn:
            await copy_rows(conn, "facts", ("unit", "at", "n", "ok", "v", "note"), ROWS)
            await copy_rows(conn, "facts", ("unit", "at", "n", "ok", "v", "note"), ROWS[:1])  # types known now
    finally:
        await engine.dispose()
    got = read(prepared, schema, 'SELECT unit, at, n, ok, v, note FROM "{schema}".facts')
    assert got == [*ROWS, ROWS[0]]


async def test_a_value_the_binary_format_would_refuse_sends_the_rows_as_text(prepared, schema):
    engine = make_engine(prepared.superuser_url, schema)
    try:
        async with engine.begin() as conn:  # an int for the text column `note`: text format turns it into '7'
            await copy_rows(conn, "facts", ("unit", "at", "n", "ok", "v", "note"), [("PRESS-07", T0, 1, True, 2, 7)])
    finally:
        await engine.dispose()
    assert read(prepared, schema, 'SELECT note, v FROM "{schema}".facts') == [("7", 2.0)]


async def test_a_table_with_a_column_binary_does_not_cover_is_copied_as_text(prepared, schema):
    engine = make_engine(prepared.superuser_url, schema)
    try:
        async with engine.begin() as conn:
            await copy_rows(conn, "tagged", ("unit", "at", "tags"), [("PRESS-07", T0, '{"shift": "A"}')])
    finally:
        await engine.dispose()
    assert read(prepared, schema, 'SELECT unit, at, tags FROM "{schema}".tagged') == [("PRESS-07", T0, {"shift": "A"})]


ODD_IDS = ["PRESS-07-000123", "tab\there", "back\\slash", "new\nline", "carriage\rreturn", "ünïcode-€", "\\N"]


async def test_claimed_event_ids_are_stored_verbatim_escapes_included(prepared, schema):
    engine = make_engine(prepared.superuser_url, schema)
    try:
        async with engine.begin() as conn:
            assert await claim_event_ids(conn, ODD_IDS) == set(ODD_IDS)
    finally:
        await engine.dispose()
    assert sorted(r[0] for r in read(prepared, schema, 'SELECT event_id FROM "{schema}".processed_events')) == sorted(ODD_IDS)


async def test_ids_claimed_before_are_duplicates_and_only_the_new_ones_are_stored(prepared, schema):
    engine = make_engine(prepared.superuser_url, schema)
    try:
        async with engine.begin() as conn:
            await claim_event_ids(conn, ["WO-1042:a", "WO-1042:b"])
        async with engine.begin() as conn:
            assert await claim_event_ids(conn, ["WO-1042:b", "WO-1042:c", "WO-1042:a", "WO-1042:d"]) == {"WO-1042:c", "WO-1042:d"}
    finally:
        await engine.dispose()
    assert read(prepared, schema, 'SELECT count(*) FROM "{schema}".processed_events') == [(4,)]


async def test_an_id_claimed_by_another_transaction_at_the_same_time_fails_the_second_and_is_a_duplicate_after(prepared, schema):
    """The second claim waits for the first transaction; once that committed, it fails on the primary key
    (the loop then commits the batch again), and claimed again the id is a duplicate."""
    engine = make_engine(prepared.superuser_url, schema)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            assert await claim_event_ids(first, ["LOT-2026-0117:moved"]) == {"LOT-2026-0117:moved"}
            await second.begin()
            racing = asyncio.ensure_future(claim_event_ids(second, ["LOT-2026-0117:moved", "LOT-2026-0117:held"]))
            await asyncio.sleep(0.3)
            assert not racing.done()  # waits on the first transaction's key
            await first.commit()
            with pytest.raises(psycopg.errors.UniqueViolation):
                await racing
            await second.rollback()
            await second.begin()
            assert await claim_event_ids(second, ["LOT-2026-0117:moved", "LOT-2026-0117:held"]) == {"LOT-2026-0117:held"}
            await second.commit()
    finally:
        await engine.dispose()
    assert read(prepared, schema, 'SELECT count(*) FROM "{schema}".processed_events') == [(2,)]
