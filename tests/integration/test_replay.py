"""`mom replay`: a schema rebuilt from offset 0 equals the live one, row for row, and a difference shows."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest

from services.common.replay import compare, rebuild
from services.common.runtime import build_worker
from services.execution.app import build as build_execution
from tests.integration.conftest import start_at_end
from tests.integration.test_consumer_loop import T0, caught_up, parts, produce, run_until, states, unit

pytestmark = pytest.mark.integration


async def test_a_rebuilt_schema_equals_the_live_one_row_for_row(prepared, scratch):
    # Given a live projection built in small batches from states and parts of a few work units
    start = start_at_end(prepared, scratch)
    presses = [unit() for _ in range(3)]
    for press in presses:
        produce(prepared, states(press, ["RUNNING", "DOWN", "IDLE", "RUNNING", "DOWN"]) + parts(press, 300))
        produce(prepared, parts(press, 20))  # resent: duplicates by id
    live = replace(scratch, batch_max_events=211)
    await run_until(build_worker(live, lambda c: build_execution(live, c)), caught_up(prepared, live))
    # When the service is replayed from offset 0 into another schema, in large batches
    target = f"{scratch.db_schema}_r"
    try:
        await rebuild(scratch, build_execution, prepared.superuser_url, target, start=start)
        # Then every table is identical, row for row
        differences = compare(prepared.superuser_url, scratch.db_schema, target)
        assert {d.table for d in differences} >= {"equipment_status", "period_elements", "period_versions", "positions",
                                                  "processed_events", "dead_letters"}
        assert [(d.table, d.only_live, d.only_replay) for d in differences if d.only_live or d.only_replay] == []
        # And a single changed row is found
        with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
            conn.execute(f"""UPDATE "{target}".period_elements SET pq = pq + 1
                             WHERE equipment_id = %s AND period = 'hour' AND period_start = %s""", (presses[0], T0))
        changed = {d.table: (d.only_live, d.only_replay) for d in compare(prepared.superuser_url, scratch.db_schema, target)}
        assert changed["period_elements"] == (1, 1)
    finally:
        with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')


async def test_periods_extended_batch_by_batch_equal_those_computed_from_the_stored_facts(prepared, scratch):
    # Given one unit whose stream, in batches of three, extends its open hours from the clock on, with
    # two state changes at one instant (listed against their ids' order) and scrap inside an open hour
    start = start_at_end(prepared, scratch)
    press = unit()

    def state(i: int, event_id: str, minute: float, value: str) -> dict:
        return {"type": "MachineStateChanged", "event_id": f"{press}-{event_id}", "occurred_at": T0 + timedelta(minutes=minute),
                "equipment_id": press, "state": value, "reason_code": None}

    events = [state(0, "s0", 0, "RUNNING"), *parts(press, 40), state(1, "s2", 20, "DOWN"), state(2, "s1", 20, "IDLE"),
              state(3, "s3", 21, "RUNNING"), *parts(press, 200, prefix=f"{press}-b")[60:],
              {"type": "ScrapReported", "event_id": f"{press}-scrap", "occurred_at": T0 + timedelta(minutes=99.75),
               "equipment_id": press, "order_id": None, "quantity": 4, "reason_code": "BURR", "rework": False},
              state(4, "s4", 101, "SETUP"), *[{**p, "occurred_at": p["occurred_at"] + timedelta(minutes=100)}
                                               for p in parts(press, 30, prefix=f"{press}-c")]]
    produce(prepared, events)
    live = replace(scratch, batch_max_events=3)
    await run_until(build_worker(live, lambda c: build_execution(live, c)), caught_up(prepared, live))
    # When the service is replayed, which computes every period once from the stored facts
    target = f"{scratch.db_schema}_r"
    try:
        await rebuild(scratch, build_execution, prepared.superuser_url, target, start=start)
        # Then periods, versions and clocks are identical, row for row
        differences = [(d.table, d.only_live, d.only_replay) for d in compare(prepared.superuser_url, scratch.db_schema, target)
                       if d.only_live or d.only_replay]
        assert differences == []
        with psycopg.connect(prepared.superuser_url) as conn:
            hours = conn.execute(f"""SELECT count(*), sum(sq) FROM "{target}".period_elements
                                     WHERE equipment_id = %s AND period = 'hour'""", (press,)).fetchone()
            tie = conn.execute(f'SELECT last_state FROM "{target}".unit_clock WHERE equipment_id = %s', (press,)).fetchone()
        assert hours == (2, 40 + 140 + 30 + 4)  # one reject per report, and the scrap
        assert tie == ("SETUP",)
    finally:
        with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')


async def test_a_rebuild_whose_periods_two_processes_share_equals_the_live_schema(prepared, scratch):
    # Given a live projection, built by one worker, of four units
    start = start_at_end(prepared, scratch)
    presses = [unit() for _ in range(4)]
    events = [e for press in presses for e in states(press, ["RUNNING", "DOWN", "RUNNING", "IDLE"]) + parts(press, 150)]
    produce(prepared, events)
    live = replace(scratch, batch_max_events=97)
    await run_until(build_worker(live, lambda c: build_execution(live, c)), caught_up(prepared, live))
    # When it is replayed, and two processes share the periods computed at the end
    target = f"{scratch.db_schema}_r"
    try:
        rebuilt = await rebuild(replace(scratch, batch_max_events=50), build_execution, prepared.superuser_url, target,
                                start=start, workers=2)
        # Then every event was applied once, and every table, every unit's periods included, equals the live one
        assert rebuilt.applied == len(events)
        differences = [(d.table, d.only_live, d.only_replay) for d in compare(prepared.superuser_url, scratch.db_schema, target)
                       if d.only_live or d.only_replay]
        assert differences == []
        with psycopg.connect(prepared.superuser_url) as conn:
            hours = conn.execute(f"""SELECT count(DISTINCT equipment_id), sum(pq) FROM "{target}".period_elements
                                     WHERE period = 'hour'""").fetchone()
        assert hours == (len(presses), len(presses) * 150 * 4)
    finally:
        with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')


async def test_a_rebuild_needs_at_least_one_worker(prepared, scratch):
    with pytest.raises(ValueError, match="workers=0: must be at least 1"):
        await rebuild(scratch, build_execution, prepared.superuser_url, f"{scratch.db_schema}_r", workers=0)


async def test_a_rebuild_by_several_workers_refuses_a_build_it_cannot_hand_to_them(prepared, scratch):
    target = f"{scratch.db_schema}_r"
    try:
        with pytest.raises(ValueError, match="workers=2: a helper process cannot be given the service's build"):
            await rebuild(scratch, lambda s, c: build_execution(s, c), prepared.superuser_url, target, workers=2)
    finally:
        with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')


def test_scratch_schema_names_are_checked():
    with pytest.raises(ValueError, match="identifier"):
        compare("postgresql://unused", "execution", f"x; DROP TABLE y --{uuid.uuid4().hex[:4]}")
