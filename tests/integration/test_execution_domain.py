"""Execution's domain against the real broker and database: a shift with breaks, an order, a lockout,
operators, a reason reassignment, a late revision and an event later than the lateness; then the
same facts rebuilt in other batch sizes and interleavings give identical tables."""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.common.runtime import build_worker
from services.execution.app import build as build_execution
from tests.integration.conftest import assert_a_replay_equals, start_at_end
from tests.integration.test_consumer_loop import end_offsets, query, run_until

pytestmark = pytest.mark.integration
DAY = datetime(2026, 3, 29, tzinfo=UTC)  # the spring-forward day in Europe/Berlin: a 23-hour local day


def at(hour: float) -> datetime:
    return DAY + timedelta(hours=hour)


def recorded(base: datetime, n: int) -> datetime:
    return base + timedelta(microseconds=n)


def scenario(run: str, unit_name: str = "press07", accepted_after: int = 0) -> tuple[list[dict], dict]:
    """A shift of one unit on its line. `accepted_after`: microseconds by which this stream's acceptance
    times follow the base (each partition holds events in acceptance order, as ingest writes them)."""
    site = f"acme{run}.berlin"
    line = f"{site}.assembly.line1"
    unit = f"{line}.{unit_name}"
    n = iter(range(1_000_000))
    now = datetime(2026, 3, 29, 20, tzinfo=UTC) + timedelta(microseconds=accepted_after)  # when ingest accepted the live data

    def ev(event_type: str, when: datetime, rec: datetime | None = None, **body) -> dict:
        i = next(n)
        return {"type": event_type, "event_id": f"{unit}-{i}", "occurred_at": when, "recorded_at": rec, **body}

    events = [
        ev("EquipmentRegistered", at(0), equipment_id=site, name="Berlin", parent_id=None, level="site",
           time_zone="Europe/Berlin", capacity_per_hour=None),
        ev("EquipmentRegistered", at(0), equipment_id=line, name="Line 1", parent_id=site, level="work_center",
           time_zone=None, capacity_per_hour=None),
        ev("EquipmentRegistered", at(0), equipment_id=unit, name="Press", parent_id=line, level="work_unit",
           time_zone=None, capacity_per_hour=600.0),
        ev("ShiftScheduled", at(0), shift_id=f"S-{run}", equipment_id=line, starts_at=at(4), ends_at=at(12),
           breaks=[{"starts_at": at(8), "ends_at": at(8.5)}]),
        ev("ProductDefined", at(0), product_id=f"P-{unit}", name="Bracket", unit=None, ideal_cycle_time_s=2.0,
           bom=[{"material_id": "M-STEEL-2MM", "quantity_per_unit": 0.5}],
           routing=[{"operation": "0010", "equipment_id": unit, "ideal_cycle_time_s": 1.5}]),
        ev("ProductionOrderReleased", at(0), order_id=f"WO-{unit}", product_id=f"P-{unit}", quantity=5000.0, due_at=None),
        ev("OperatorSignedIn", at(4), operator_id="OP-17", equipment_id=unit),
        ev("OperationStarted", at(4), order_id=f"WO-{unit}", operation="0010", equipment_id=unit, operator_id="OP-17"),
        ev("MachineStateChanged", at(4), equipment_id=unit, state="RUNNING", reason_code=None),
        ev("MachineStateChanged", at(5.5), equipment_id=unit, state="DOWN", reason_code="JAM"),
        ev("MachineStateChanged", at(5.75), equipment_id=unit, state="RUNNING", reason_code=None),
        ev("DowntimeReasonAssigned", at(6), equipment_id=unit, since=at(5.5), reason_code="HYDRAULICS"),
        ev("EquipmentLockedOut", at(9), equipment_id=unit, work_order_id=f"MWO-{unit}", plan_id="PM-1", reason=None),
        ev("MachineStateChanged", at(9), equipment_id=unit, state="MAINTENANCE", reason_code=None),
        ev("EquipmentReleased", at(9.5), equipment_id=unit, work_order_id=f"MWO-{unit}"),
        ev("MachineStateChanged", at(9.5), equipment_id=unit, state="RUNNING", reason_code=None),
        ev("ScrapReported", at(10), equipment_id=unit, order_id=f"WO-{unit}", quantity=5, reason_code="BURR", rework=False),
        ev("OperatorSignedOut", at(11.75), operator_id="OP-17", equipment_id=unit),
    ]
    events += [ev("PartsProduced", at(4 + k / 10), equipment_id=unit, good=100, reject=2, order_id=None)
               for k in range(80) if not (15 <= k < 18 or 40 <= k < 45 or 50 <= k < 55)]
    events += [ev("MachineStateChanged", at(12), equipment_id=unit, state="IDLE", reason_code=None),
               ev("OperationCompleted", at(12), order_id=f"WO-{unit}", operation="0010", equipment_id=unit,
                  operator_id="OP-17"),
               ev("MachineStateChanged", at(13), equipment_id=unit, state="IDLE", reason_code="NO_ORDER")]
    # A count from 06:05 that arrives after hour 06 closed: a revision. And one from two days before.
    late = ev("PartsProduced", at(6 + 5 / 60), rec=recorded(now + timedelta(minutes=5), 0), equipment_id=unit,
              good=7, reject=0, order_id=None)
    too_late = ev("PartsProduced", at(-48), rec=recorded(now + timedelta(minutes=6), 0), equipment_id=unit,
                  good=99, reject=0, order_id=None)
    events.sort(key=lambda e: e["occurred_at"])  # as the plant sent them, accepted in that order
    for i, event in enumerate(events):
        event["recorded_at"] = recorded(now, i)
    return events + [late, too_late], {"unit": unit, "line": line, "site": site, "late": late, "too_late": too_late}


def produce_all(prepared, events: list[dict]) -> None:
    from services.common import kafka
    producer = kafka.producer(prepared.kafka)
    for event in events:
        event_type = event["type"]
        record = {k: v for k, v in event.items() if k != "type"}
        record.setdefault("source", "test")
        record.setdefault("correlation_id", None)
        producer.produce(prepared.catalogue.topic_for(event_type).name,
                         key=prepared.catalogue.key_for(event_type, record).encode(),
                         value=prepared.codec.encode(event_type, record))
    assert producer.flush(30) == 0


def caught_up_everywhere(prepared, settings, spec):
    topics = spec.input_topics
    targets = {t: end_offsets(prepared, t) for t in topics}

    def check() -> bool:
        rows = dict(query(prepared, settings.db_schema,
                          "SELECT topic, sum(next_offset) FROM positions GROUP BY topic"))
        return all(rows.get(t, 0) >= target for t, target in targets.items())
    return check


def produce_unit_facts(prepared, unit: str, now: datetime, facts: list[tuple], *, in_acceptance_order: bool = False) -> None:
    """One unit's facts, each (event type, event time, seconds after `now` it was accepted, body), with
    the ids `<unit>-<index>`: produced in the list's order, or sorted by acceptance time."""
    events = [{"type": t, "event_id": f"{unit}-{i}", "occurred_at": when, "recorded_at": now + timedelta(seconds=seconds),
               "equipment_id": unit, **body} for i, (t, when, seconds, body) in enumerate(facts)]
    produce_all(prepared, sorted(events, key=lambda e: e["recorded_at"]) if in_acceptance_order else events)


def running_in_a_shift(run: str) -> list[tuple]:
    """The opening facts of a unit (as produce_unit_facts takes them): registered, in a shift from 06:00 to
    10:00, and RUNNING from 06:00; accepted 2 s and 1 s before `now`, and at `now`."""
    return [("EquipmentRegistered", at(0), -2, {"name": "Press", "parent_id": None, "level": "work_unit",
                                                "time_zone": None, "capacity_per_hour": None}),
            ("ShiftScheduled", at(0), -1, {"shift_id": f"S-{run}", "starts_at": at(6), "ends_at": at(10), "breaks": []}),
            ("MachineStateChanged", at(6), 0, {"state": "RUNNING", "reason_code": None})]


async def build_live(prepared, settings):
    worker = build_worker(settings, lambda c: build_execution(settings, c))
    await run_until(worker, caught_up_everywhere(prepared, settings, worker.spec))


async def test_a_shift_with_an_order_a_lockout_and_late_facts_then_a_replay_in_other_batches(prepared, scratch):
    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    events, ids = scenario(run)
    produce_all(prepared, events)
    live = replace(scratch, batch_max_events=7)
    await build_live(prepared, live)
    schema, unit = live.db_schema, ids["unit"]

    # Elements add up in every stored period and version
    for table in ("period_elements", "period_versions"):
        broken = query(prepared, schema, f"""SELECT period, period_start FROM {table}
            WHERE pbt_us <> apt_us + asut_us + adet_us + adot_us OR pot_us <> pbt_us + pdot_us""")
        assert broken == [], table
    # The shift: 8 h planned on the line, inherited by the unit. It ran through its break, so only the
    # half hour of lockout is planned down time; 15 min down for the jam; the late count revised it.
    shift = query(prepared, schema, """SELECT pot_s, pdot_s, apt_s, adet_s, version, apat_s, aoet_s, aubt_s
                                       FROM oee WHERE equipment_id = %s AND period = 'shift'""", unit)
    assert shift == [(28800, 1800, 28800 - 1800 - 900, 900, 2, 27900, 28800, 27000)]
    # Days are local Berlin days: 2026-03-29 has 23 hours
    day = query(prepared, schema, "SELECT period_start, period_end FROM oee WHERE equipment_id = %s AND period = 'day'", unit)
    assert [(e - s) for s, e in day] == [timedelta(hours=23)]
    # The late count revised hour 06 UTC (08:00 Berlin): version 2, and 'as known' before it shows version 1
    versions = query(prepared, schema, """SELECT version, pq FROM oee_versions
        WHERE equipment_id = %s AND period = 'hour' AND period_start = %s ORDER BY version""", unit, at(6))
    assert [v for v, _ in versions] == [1, 2] and versions[1][1] == versions[0][1] + 7
    before = query(prepared, schema, """SELECT version FROM oee_as_known_at(%s)
        WHERE equipment_id = %s AND period = 'hour' AND period_start = %s""", ids["late"]["recorded_at"] - timedelta(seconds=1),
                   unit, at(6))
    assert before == [(1,)]
    # The event from two days before is kept apart, not applied
    assert query(prepared, schema, "SELECT event_id FROM late_events WHERE equipment_id = %s", unit) == [
        (ids["too_late"]["event_id"],)]
    # The jam was reclassified by the operator, without rewriting the timeline
    assert query(prepared, schema, """SELECT reported_reason_code, reason_code, reclassified, classification
        FROM downtime WHERE equipment_id = %s AND state = 'DOWN'""", unit) == [("JAM", "HYDRAULICS", True, "unplanned_stop")]
    # The order ran and completed; scrap moved parts from good to scrap
    order = query(prepared, schema, "SELECT status, good, scrap FROM orders WHERE order_id = %s", f"WO-{unit}")
    assert order[0][0] == "COMPLETED" and order[0][2] == 5 + 2 * 67
    # The line rolls up as sums of elements
    line = query(prepared, schema, """SELECT apt_s, pbt_s FROM oee_rollup WHERE equipment_id = %s AND period = 'shift'""",
                 ids["line"])
    assert line == [(28800 - 1800 - 900, 28800 - 1800)]

    # A replay in large batches gives identical tables, period versions included
    await assert_a_replay_equals(prepared, scratch, build_execution, schema, start, workers=2)


async def test_interleaving_the_streams_of_work_units_differently_gives_identical_figures(prepared, scratch):
    start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    a1, ids_a1 = scenario(run, "press01")
    b1, ids_b1 = scenario(run, "press02", accepted_after=3_600_000_000)  # sent after a1 (and its late facts)
    a2, ids_a2 = scenario(run + "x", "press01", accepted_after=7_200_000_000)  # sent after both
    b2, ids_b2 = scenario(run + "x", "press02", accepted_after=7_200_000_000)
    produce_all(prepared, a1 + b1)  # one unit's whole stream, then the other's, accepted in that order
    merged = sorted(a2 + b2, key=lambda e: (e["recorded_at"], e["type"]))  # strictly interleaved
    produce_all(prepared, list(reversed(merged[:6])) + merged[6:])  # and the first plan facts reversed
    await build_live(prepared, scratch)

    def figures(unit: str) -> list[tuple]:
        return query(prepared, scratch.db_schema, """SELECT period, period_start, version, pot_s, pdot_s, apt_s, asut_s,
            adet_s, adot_s, aubt_s, aoet_s, apat_s, apwt_s, ideal_s, pq, gq, sq, rq FROM oee
            WHERE equipment_id = %s ORDER BY 1, 2""", unit)

    for left, right in ((ids_a1, ids_a2), (ids_b1, ids_b2)):
        assert figures(left["unit"]) == figures(right["unit"]) != []


async def test_two_workers_that_split_the_partitions_and_start_apart_build_what_one_worker_replays(prepared, scratch):
    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    events: list[dict] = []
    for n, name in enumerate(("press01", "press02", "press03", "press04", "press05")):
        events += scenario(run, name, accepted_after=n)[0]  # the units' streams interleaved in acceptance order
    produce_all(prepared, events)
    live = replace(scratch, batch_max_events=7)
    first, second = (build_worker(live, lambda c: build_execution(live, c)) for _ in range(2))
    for worker, half in ((first, 0), (second, 1)):  # as Kafka's range assignor splits each topic
        partitions = sorted(tp for tp in start if tp[0] in worker.spec.input_topics)
        worker.loop.read_only([(t, p) for t, p in partitions
                               if (p >= sum(1 for u, _ in partitions if u == t) / 2) == bool(half)])
    done = caught_up_everywhere(prepared, live, first.spec)
    tasks = [asyncio.create_task(first.loop.run())]
    try:
        await asyncio.sleep(3.0)  # the first worker alone, as far as the second's partitions let it go
        tasks.append(asyncio.create_task(second.loop.run()))
        deadline = time.monotonic() + 240
        while not done():
            assert not any(t.done() for t in tasks) and time.monotonic() < deadline, "the workers did not catch up"
            await asyncio.sleep(0.2)
    finally:
        await first.close(tasks[0])
        await second.close(tasks[1] if len(tasks) > 1 else None)
    assert query(prepared, live.db_schema, "SELECT count(*) FROM orders WHERE status = 'COMPLETED'") == [(5,)]
    await assert_a_replay_equals(prepared, scratch, build_execution, live.db_schema, start)


async def test_a_sign_in_before_the_first_machine_fact_makes_no_earlier_period_in_any_batching(prepared, scratch):
    """Found by the chaos run: the operator signs in at 03:50, the machine's first fact is at 04:00, and
    the sign-in is processed after it (here: the terminal sent it late). No hour before 04:00 is made or
    closed, live in large batches as in a replay of one event per batch."""
    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    unit = f"acme{run}.berlin.assembly.line1.press03"
    now = datetime(2026, 3, 29, 20, tzinfo=UTC)
    facts = [("EquipmentRegistered", at(0), {"equipment_id": unit, "name": "Press", "parent_id": None, "level": "work_unit",
                                             "time_zone": None, "capacity_per_hour": None}),
             ("ShiftScheduled", at(0), {"shift_id": f"S-{run}", "equipment_id": unit, "starts_at": at(4), "ends_at": at(6),
                                        "breaks": []}),
             ("MachineStateChanged", at(4), {"equipment_id": unit, "state": "RUNNING", "reason_code": None}),
             ("PartsProduced", at(4.5), {"equipment_id": unit, "good": 10, "reject": 0, "order_id": None}),
             ("MachineStateChanged", at(5.25), {"equipment_id": unit, "state": "IDLE", "reason_code": None}),
             ("OperatorSignedIn", at(3 + 50 / 60), {"operator_id": "OP-3", "equipment_id": unit})]
    produce_all(prepared, [{"type": t, "event_id": f"{unit}-{i}", "occurred_at": when, "recorded_at": recorded(now, i), **body}
                           for i, (t, when, body) in enumerate(facts)])
    live = scratch
    await build_live(prepared, live)
    hours = query(prepared, live.db_schema, """SELECT period_start, version FROM period_elements
        WHERE equipment_id = %s AND period = 'hour' ORDER BY 1""", unit)
    assert hours == [(at(4), 1), (at(5), 0)]
    await assert_a_replay_equals(prepared, scratch, build_execution, live.db_schema, start, batch_max_events=1)


async def test_equipment_that_names_itself_or_each_other_as_parent_still_rolls_up(prepared, scratch):
    """A unit that is its own parent, and two pieces of equipment that are each other's: the roll-up
    views answer (a walk of the hierarchy that never ended would hold every query of them)."""
    start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    site, line, unit = f"acme{run}", f"acme{run}.line1", f"acme{run}.line1.press01"
    selfish, a, b = f"acme{run}.loop0", f"acme{run}.loopA", f"acme{run}.loopB"
    now = datetime(2026, 3, 29, 20, tzinfo=UTC)
    reference = [(site, None, "site"), (line, site, "work_center"), (unit, line, "work_unit"),
                 (selfish, selfish, "work_unit"), (a, b, "work_unit"), (b, a, "work_center")]
    facts = [("EquipmentRegistered", at(0), {"equipment_id": e, "name": e, "parent_id": p, "level": level,
                                             "time_zone": None, "capacity_per_hour": None})
             for e, p, level in reference]
    for u in (unit, selfish, a):
        facts += [("MachineStateChanged", at(4), {"equipment_id": u, "state": "RUNNING", "reason_code": None}),
                  ("PartsProduced", at(4.5), {"equipment_id": u, "good": 9, "reject": 1, "order_id": None}),
                  ("MachineStateChanged", at(5.25), {"equipment_id": u, "state": "IDLE", "reason_code": None})]
    produce_all(prepared, [{"type": t, "event_id": f"{run}-{i}", "occurred_at": when, "recorded_at": recorded(now, i), **body}
                           for i, (t, when, body) in enumerate(facts)])
    await build_live(prepared, scratch)
    with psycopg.connect(prepared.superuser_url, options=f"-c search_path={scratch.db_schema} -c statement_timeout=20000") as conn:
        rows = conn.execute("""SELECT equipment_id, work_units, pq, sq FROM oee_rollup
                               WHERE period = 'hour' AND period_start = %s ORDER BY 1""", (at(4),)).fetchall()
    assert rows == [(site, 1, 10, 1), (line, 1, 10, 1), (b, 1, 10, 1)]


@pytest.mark.parametrize("batch_max_events", [1, 1000])
async def test_an_hour_closed_before_a_fact_recorded_later_gets_that_fact_as_version_2_in_any_batching(
        prepared, scratch, batch_max_events):
    """A count from 06:30 is recorded after the fact from 07:01 that closes hour 06 (the terminal sent
    it late, into the same partition). Version 1 of hour 06 leaves it out and version 2 takes it in,
    whether the count came in an earlier batch (one event per batch) or in the closing batch; hours
    that nothing recorded later bears on close with the figures just computed. A replay gives the
    same tables."""
    from prometheus_client import REGISTRY

    def closed(how: str) -> float:
        return REGISTRY.get_sample_value("mom_execution_closed_periods_total", {"how": how}) or 0.0

    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    unit = f"acme{run}.berlin.assembly.line1.press05"
    now = datetime(2026, 3, 29, 20, tzinfo=UTC)
    facts = [("MachineStateChanged", at(6), 0, {"state": "RUNNING", "reason_code": None}),
             ("PartsProduced", at(6.25), 1, {"good": 10, "reject": 0, "order_id": None}),
             ("PartsProduced", at(6.5), 10, {"good": 7, "reject": 1, "order_id": None}),  # recorded after the next
             ("PartsProduced", at(7 + 1 / 60), 5, {"good": 3, "reject": 0, "order_id": None}),  # closes hour 06
             ("PartsProduced", at(7.5), 20, {"good": 4, "reject": 0, "order_id": None}),
             ("MachineStateChanged", at(8.25), 30, {"state": "IDLE", "reason_code": None})]  # closes hour 07
    produce_unit_facts(prepared, unit, now, facts)
    as_computed, at_cutoff = closed("as_computed"), closed("at_cutoff")
    live = replace(scratch, batch_max_events=batch_max_events)
    await build_live(prepared, live)
    versions = query(prepared, live.db_schema, """SELECT period_start, version, known_at, pq FROM oee_versions
        WHERE equipment_id = %s AND period = 'hour' ORDER BY 1, 2""", unit)
    assert versions == [(at(6), 1, now + timedelta(seconds=5), 10), (at(6), 2, now + timedelta(seconds=10), 18),
                        (at(7), 1, now + timedelta(seconds=30), 7)]
    assert closed("as_computed") - as_computed == 1  # hour 07
    assert closed("at_cutoff") - at_cutoff == 1  # hour 06
    await assert_a_replay_equals(prepared, scratch, build_execution, live.db_schema, start)


@pytest.mark.parametrize("batch_max_events", [1, 1000])
async def test_an_hour_is_closed_by_the_first_recorded_fact_past_its_end_not_the_first_in_event_time(
        prepared, scratch, batch_max_events):
    """After hour 06 a count from 07:40 is accepted at +8 s and one from 07:10 only at +20 s (a terminal
    that reported late; the partition holds them in acceptance order): the hour is known closed from
    +8 s on, by the later count in event time. A live worker in any batching and a replay, whose
    settle finds every hour's closing fact in one pass over the unit's facts, give the same versions."""
    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    unit = f"acme{run}.berlin.assembly.line1.press06"
    now = datetime(2026, 3, 29, 20, tzinfo=UTC)
    facts = [("MachineStateChanged", at(6), 0, {"state": "RUNNING", "reason_code": None}),
             ("PartsProduced", at(6.5), 1, {"good": 5, "reject": 0, "order_id": None}),
             ("PartsProduced", at(7 + 10 / 60), 20, {"good": 3, "reject": 0, "order_id": None}),
             ("PartsProduced", at(7 + 40 / 60), 8, {"good": 2, "reject": 1, "order_id": None}),  # closes hour 06
             ("MachineStateChanged", at(8.25), 30, {"state": "IDLE", "reason_code": None})]  # closes hour 07
    produce_unit_facts(prepared, unit, now, facts, in_acceptance_order=True)
    live = replace(scratch, batch_max_events=batch_max_events)
    await build_live(prepared, live)
    versions = query(prepared, live.db_schema, """SELECT period_start, version, known_at, caused_by, pq FROM oee_versions
        WHERE equipment_id = %s AND period = 'hour' ORDER BY 1, 2""", unit)
    assert versions == [(at(6), 1, now + timedelta(seconds=8), f"{unit}-3", 5),
                        (at(7), 1, now + timedelta(seconds=30), f"{unit}-4", 6)]
    await assert_a_replay_equals(prepared, scratch, build_execution, live.db_schema, start)


@pytest.mark.parametrize("batch_max_events", [1, 1000])
async def test_an_hour_whose_starting_state_was_recorded_after_it_closed_keeps_version_1_as_then_known(
        prepared, scratch, batch_max_events):
    """In a shift from 06:00, hour 07 is closed at +30 s by the change at 08:15. A change at 06:50, the state hour 07 starts in,
    is only accepted at +40 s: hour 07's figures now start DOWN, but its version 1, as known at +30 s,
    starts RUNNING (and the fact, inside hour 06, makes hour 06's version 2). A replay's settle, which
    takes an hour's figures as its version 1 where nothing recorded later bears on it, must compute
    this one at its cutoff, as the live worker did."""
    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    unit = f"acme{run}.berlin.assembly.line1.press08"
    now = datetime(2026, 3, 29, 20, tzinfo=UTC)
    facts = [*running_in_a_shift(run),
             ("PartsProduced", at(6.5), 1, {"good": 5, "reject": 0, "order_id": None}),
             ("PartsProduced", at(7 + 10 / 60), 5, {"good": 3, "reject": 0, "order_id": None}),  # closes hour 06
             ("PartsProduced", at(7 + 40 / 60), 8, {"good": 2, "reject": 1, "order_id": None}),
             ("MachineStateChanged", at(8.25), 30, {"state": "IDLE", "reason_code": None}),  # closes hour 07
             ("MachineStateChanged", at(6 + 50 / 60), 40, {"state": "DOWN", "reason_code": "JAM"})]
    produce_unit_facts(prepared, unit, now, facts)
    live = replace(scratch, batch_max_events=batch_max_events)
    await build_live(prepared, live)
    versions = query(prepared, live.db_schema, """SELECT period_start, version, known_at, apt_s FROM oee_versions
        WHERE equipment_id = %s AND period = 'hour' ORDER BY 1, 2""", unit)
    assert [(v[0], v[1], v[2]) for v in versions] == [(at(6), 1, now + timedelta(seconds=5)),
                                                      (at(6), 2, now + timedelta(seconds=40)),
                                                      (at(7), 1, now + timedelta(seconds=30))]
    assert versions[2][3] == 3600  # running all hour 07, as known when it closed
    current = query(prepared, live.db_schema, """SELECT apt_s FROM oee WHERE equipment_id = %s AND period = 'hour'
        AND period_start = %s""", unit, at(7))
    assert current == [(0,)]  # down all hour 07, as known now
    await assert_a_replay_equals(prepared, scratch, build_execution, live.db_schema, start)


@pytest.mark.parametrize("batch_max_events", [1, 1000])
async def test_a_lockout_recorded_after_its_hour_closed_revises_it_and_version_1_stays_as_then_known(
        prepared, scratch, batch_max_events):
    """Hour 07 is closed at +30 s by the change at 08:15. A lockout from 07:20 to 07:40 is only accepted
    at +40 s: hour 07's version 1, as known at +30 s, holds no planned down time, and the lockout makes
    version 2 with 20 minutes of it. A replay's settle must compute version 1 at its cutoff, as the
    live worker did, not take the hour's figures now."""
    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    unit = f"acme{run}.berlin.assembly.line1.press09"
    now = datetime(2026, 3, 29, 20, tzinfo=UTC)
    facts = [*running_in_a_shift(run),
             ("PartsProduced", at(7 + 10 / 60), 5, {"good": 3, "reject": 0, "order_id": None}),  # closes hour 06
             ("MachineStateChanged", at(8.25), 30, {"state": "IDLE", "reason_code": None}),  # closes hour 07
             ("EquipmentLockedOut", at(7 + 20 / 60), 40, {"work_order_id": f"MWO-{run}", "plan_id": None, "reason": None}),
             ("EquipmentReleased", at(7 + 40 / 60), 40, {"work_order_id": f"MWO-{run}"})]
    produce_unit_facts(prepared, unit, now, facts)
    live = replace(scratch, batch_max_events=batch_max_events)
    await build_live(prepared, live)
    versions = query(prepared, live.db_schema, """SELECT version, known_at, pdot_s FROM oee_versions
        WHERE equipment_id = %s AND period = 'hour' AND period_start = %s ORDER BY 1""", unit, at(7))
    assert versions == [(1, now + timedelta(seconds=30), 0),  # no lockout known when hour 07 closed
                        (2, now + timedelta(seconds=40), 1200)]  # 20 minutes locked out, as known now
    current = query(prepared, live.db_schema, """SELECT version, pdot_s FROM oee WHERE equipment_id = %s
        AND period = 'hour' AND period_start = %s""", unit, at(7))
    assert current == [(2, 1200)]
    await assert_a_replay_equals(prepared, scratch, build_execution, live.db_schema, start)


@pytest.mark.parametrize("batch_max_events", [1, 1000])
async def test_an_hour_closed_while_a_lockout_was_open_keeps_it_in_its_versions_after_a_late_release(
        prepared, scratch, batch_max_events):
    """A lockout from 07:00 is released at 07:30, but the release is only accepted at +40 s, after hour
    08 closed (+30 s). As known then, the unit was locked out all hour 08: version 1 holds an hour of
    planned down time, and so does version 2, made by a count in it accepted at +35 s. The release makes
    version 3, with none, and version 2 of hour 07, with half an hour. In every batching, and in a
    replay, those versions must come out the same, though the lockout ended before hour 08 began."""
    start = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:6]
    unit = f"acme{run}.berlin.assembly.line1.press10"
    now = datetime(2026, 3, 29, 20, tzinfo=UTC)
    facts = [*running_in_a_shift(run),
             ("EquipmentLockedOut", at(7), 1, {"work_order_id": f"MWO-{run}", "plan_id": None, "reason": None}),
             ("PartsProduced", at(8 + 10 / 60), 5, {"good": 3, "reject": 0, "order_id": None}),  # closes hour 07
             ("MachineStateChanged", at(9 + 10 / 60), 30, {"state": "IDLE", "reason_code": None}),  # closes hour 08
             ("PartsProduced", at(8.5), 35, {"good": 2, "reject": 0, "order_id": None}),  # hour 08's version 2
             ("EquipmentReleased", at(7.5), 40, {"work_order_id": f"MWO-{run}"})]
    produce_unit_facts(prepared, unit, now, facts)
    live = replace(scratch, batch_max_events=batch_max_events)
    await build_live(prepared, live)
    versions = query(prepared, live.db_schema, """SELECT version, known_at, pdot_s FROM oee_versions
        WHERE equipment_id = %s AND period = 'hour' AND period_start = %s ORDER BY 1""", unit, at(8))
    # locked out all hour, as known when it closed and when the late count came; then released
    assert versions == [(1, now + timedelta(seconds=30), 3600), (2, now + timedelta(seconds=35), 3600),
                        (3, now + timedelta(seconds=40), 0)]
    hour_07 = query(prepared, live.db_schema, """SELECT version, known_at, pdot_s FROM oee_versions
        WHERE equipment_id = %s AND period = 'hour' AND period_start = %s ORDER BY 1""", unit, at(7))
    assert hour_07 == [(1, now + timedelta(seconds=5), 3600), (2, now + timedelta(seconds=40), 1800)]
    await assert_a_replay_equals(prepared, scratch, build_execution, live.db_schema, start)
