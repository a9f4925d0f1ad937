"""Maintenance against the real broker and database: a known shift gives the hand-computed failures,
reliability KPIs, work orders, dues and lockouts; and `mom replay maintenance` rebuilds identical tables."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from services.common.catalogue import Catalogue
from services.common.kafka import end_offsets
from services.common.migrations import upgrade
from services.common.replay import compare, rebuild, seed_positions
from services.common.runtime import build_worker
from services.common.settings import Settings
from services.maintenance.app import build
from services.maintenance.model import ConditionLimit, Rules, compact
from tests.integration.test_consumer_loop import produce, query, read_topic, run_until

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 2, tzinfo=UTC)
RULES = Rules(condition_limits=(ConditionLimit("hydraulic_pressure", low=80.0, high=200.0, for_s=60.0),))


def at(hhmm: str) -> datetime:
    parts = [int(p) for p in hhmm.split(":")]
    hour, minute, second = (parts + [0, 0])[:3]
    return DAY.replace(hour=hour, minute=minute, second=second)


def make_spec(settings: Settings, catalogue: Catalogue):
    return build(settings, catalogue, rules=RULES)


@pytest.fixture
def maintenance_scratch(prepared) -> Iterator[Settings]:
    """Worker settings with an empty maintenance schema of its own and a fresh consumer group."""
    schema = f"maintenance_{uuid.uuid4().hex[:10]}"
    upgrade(prepared.superuser_url, "maintenance", schema=schema)
    yield Settings(service="maintenance", kafka=prepared.kafka, database_url=prepared.superuser_url,
                   registry_url=prepared.status["registry"]["url"] or "", batch_max_events=7,
                   group_id=f"test.{schema}", db_schema=schema)
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def start_at_end(prepared, settings: Settings) -> dict[tuple[str, int], int]:
    """Seed the scratch schema's positions at the current end of maintenance's input topics."""
    ends = end_offsets(settings.kafka, make_spec(settings, prepared.catalogue).input_topics)
    seed_positions(prepared.superuser_url, settings.db_schema, ends)
    return ends


def caught_up(prepared, settings: Settings) -> Callable[[], bool]:
    targets = end_offsets(settings.kafka, make_spec(settings, prepared.catalogue).input_topics)

    def check() -> bool:
        done = {(t, p): o for t, p, o in query(prepared, settings.db_schema, "SELECT topic, partition, next_offset FROM positions")}
        return all(done.get(tp, 0) >= end for tp, end in targets.items())
    return check


def machine(equipment: str, hhmm: str, event_type: str, **body) -> dict:
    return {"type": event_type, "event_id": f"{equipment}-{event_type}-{hhmm}", "occurred_at": at(hhmm), "equipment_id": equipment,
            **body}


def state(unit: str, hhmm: str, s: str, reason: str | None = None) -> dict:
    return machine(unit, hhmm, "MachineStateChanged", state=s, reason_code=reason)


def work(order_id: str, status: str, hhmm: str) -> dict:
    return {"type": "MaintenanceWorkReported", "event_id": f"{order_id}-{status}", "occurred_at": at(hhmm),
            "work_order_id": order_id, "status": status, "technician_id": "TECH-07"}


def shift(unit: str) -> list[dict]:
    """The known shift of the unit tests (docs/maintenance.md), with plans, runtime and technicians' work."""
    plans = [
        {"type": "MaintenancePlanDefined", "event_id": f"{unit}-plan-rt", "occurred_at": at("05:00"), "plan_id": f"MP-{unit}-RT",
         "equipment_id": unit, "task": "Change hydraulic filter",
         "trigger": {"kind": "runtime_hours", "interval_s": None, "hours": 1.0, "cycles": None}},
        {"type": "MaintenancePlanDefined", "event_id": f"{unit}-plan-cal", "occurred_at": at("05:00"), "plan_id": f"MP-{unit}-CAL",
         "equipment_id": unit, "task": "Inspect guards", "trigger": {"kind": "calendar", "interval_s": 4 * 3600.0, "hours": None,
                                                                    "cycles": None}},
    ]
    timeline = [
        state(unit, "06:00", "RUNNING"),
        machine(unit, "06:10", "ProcessValueMeasured", parameter="hydraulic_pressure", value=210.0, unit="bar"),
        machine(unit, "06:11:30", "ProcessValueMeasured", parameter="hydraulic_pressure", value=215.0, unit="bar"),
        machine(unit, "06:20", "ProcessValueMeasured", parameter="hydraulic_pressure", value=150.0, unit="bar"),
        state(unit, "07:00", "DOWN", "E-HYD-12"),
        {"type": "RuntimeAccumulated", "event_id": f"{unit}:runtime:06", "occurred_at": at("07:00"), "equipment_id": unit,
         "period_start": at("06:00"), "period_end": at("07:00"), "runtime_s": 3600.0, "cycles": 600,
         "total_runtime_s": 3600.0, "total_cycles": 600},
        state(unit, "07:30", "RUNNING"),
        {"type": "DowntimeEnded", "event_id": f"{unit}-s3:downtime-ended", "occurred_at": at("07:30"), "equipment_id": unit,
         "state": "DOWN", "reason_code": "E-HYD-12-VALVE", "started_at": at("07:00"), "duration_s": 1800.0,
         "classification": "unplanned_stop"},
        work(f"CM-{unit}-{compact(at('07:00'))}", "STARTED", "07:40"),
        state(unit, "08:00", "SETUP", "CHANGEOVER"),
        work(f"CM-{unit}-{compact(at('07:00'))}", "COMPLETED", "08:10"),
        state(unit, "08:20", "RUNNING"),
        state(unit, "09:00", "DOWN", "JAM"),
        state(unit, "09:01", "RUNNING"),
        state(unit, "10:00", "IDLE"),
        state(unit, "10:30", "RUNNING"),
        state(unit, "11:00", "DOWN"),
        machine(unit, "11:00:30", "AlarmRaised", alarm_code="A-0815", severity="critical", text="Hydraulic pressure low"),
        state(unit, "11:20", "BLOCKED", "CONVEYOR-FULL"),
        machine(unit, "11:35", "AlarmCleared", alarm_code="A-0815", severity="critical", text=None),
        state(unit, "11:40", "RUNNING"),
        state(unit, "12:00", "DOWN", "BREAK"),
        state(unit, "12:10", "RUNNING"),
        work(f"PM-MP-{unit}-RT-r1-1", "STARTED", "12:20"),
        work(f"PM-MP-{unit}-RT-r1-1", "COMPLETED", "12:30"),
        work(f"MWO-NOPE-{unit}", "STARTED", "12:40"),
        state(unit, "13:00", "OFFLINE", "END-OF-SHIFT"),
    ]
    return plans + timeline


async def test_a_known_shift_gives_hand_computed_reliability_and_replays_identically(prepared, maintenance_scratch):
    settings = maintenance_scratch
    start = start_at_end(prepared, settings)
    unit = f"acme.berlin.assembly.line1.press{uuid.uuid4().hex[:8]}"
    # Given the known shift on the machine, execution, plan and operator topics
    produce(prepared, shift(unit))
    # When a worker (in small batches) consumes everything there is
    await run_until(build_worker(settings, lambda c: make_spec(settings, c)), caught_up(prepared, settings), timeout_s=120)
    schema = settings.db_schema
    # Then the failures are the hand-computed ones, enriched with execution's reason and classification
    failures = query(prepared, schema, """SELECT started_at, restored_at, ttr_s, ttf_s, reason_code, reason_at_end, alarm_code,
                                                 execution_classification, work_order_status
                                          FROM failures WHERE equipment_id = %s ORDER BY started_at""", unit)
    assert failures == [
        (at("07:00"), at("07:30"), Decimal("1800"), Decimal("3600"), "E-HYD-12", "E-HYD-12-VALVE", None, "unplanned_stop", "CLOSED"),
        (at("11:00"), at("11:40"), Decimal("2400"), Decimal("10740"), None, None, "A-0815", None, "OPEN")]
    # And MTBF, MTTF, MTTR and the corrective maintenance ratio equal the hand computation
    [kpis] = query(prepared, schema, """SELECT failures, operating_s, mtbf_s, mttf_s, mttr_s, cm_ratio FROM reliability
                                        WHERE equipment_id = %s AND period_start = %s""", unit, DAY)
    assert kpis[:5] == (2, Decimal("18540"), Decimal("9270"), Decimal("7170"), Decimal("2100"))
    assert kpis[5] == Decimal("0.75")  # CMT 1800 s / (CMT 1800 s + PMT 600 s)
    # And the work orders: corrective, preventive (runtime and calendar) and a condition request
    orders = query(prepared, schema, """SELECT kind, status, locked_out, work_duration_s FROM work_orders
                                        WHERE equipment_id = %s ORDER BY opened_at, work_order_id""", unit)
    assert orders == [("condition", "OPEN", False, None), ("preventive", "CLOSED", True, Decimal("600")),
                      ("corrective", "CLOSED", False, Decimal("1800")), ("preventive", "OPEN", False, None),
                      ("corrective", "OPEN", False, None), ("preventive", "OPEN", False, None)]
    # And the preventive schedule says what is due next by runtime and by calendar
    schedule = query(prepared, schema, """SELECT trigger_kind, dues_so_far, next_due_at, runtime_h_since_defined,
                                                 next_due_runtime_h, runtime_h_remaining
                                          FROM pm_schedule WHERE equipment_id = %s ORDER BY plan_id""", unit)
    assert schedule == [("calendar", 2, at("17:00"), None, None, None),
                        ("runtime_hours", 1, None, Decimal("1"), Decimal("2"), Decimal("1"))]
    # And the derived events left through the outbox, each once by id
    published = read_topic(prepared, prepared.catalogue.topic_for("WorkOrderOpened").name, unit)
    dues = sorted(i for i in set(published) if ":due:" in i)
    assert dues == [f"MP-{unit}-CAL:r1:due:1", f"MP-{unit}-CAL:r1:due:2", f"MP-{unit}-RT:r1:due:1"]
    assert {f"PM-MP-{unit}-RT-r1-1:locked-out", f"PM-MP-{unit}-RT-r1-1:released"} <= set(published)
    assert sum(i.endswith(":opened") for i in set(published)) == 6
    assert sum(i.endswith(":closed") for i in set(published)) == 2
    assert read_topic(prepared, prepared.catalogue.topic_for("MaintenanceInputRefused").name, f"MWO-NOPE-{unit}") == [
        f"MWO-NOPE-{unit}-STARTED:refused"]

    # When the service is replayed from the same offsets into another schema, in large batches
    target = f"{schema}_r"
    try:
        await rebuild(replace(settings, batch_max_events=2000), make_spec, prepared.superuser_url, target, start=start,
                      timeout_s=120)
        # Then every table is identical, row for row
        differences = compare(prepared.superuser_url, schema, target)
        assert {d.table for d in differences} >= {"failure_log", "work_order_state", "plans", "pm_dues", "operating_time",
                                                  "unit_state", "alarm_log", "condition_state", "downtime_facts"}
        assert [(d.table, d.only_live, d.only_replay) for d in differences if d.only_live or d.only_replay] == []
    finally:
        with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')


def test_the_analyst_role_reads_the_views(prepared):
    with psycopg.connect(prepared.superuser_url) as conn:
        granted = {r[0] for r in conn.execute(
            """SELECT table_name FROM information_schema.role_table_grants
               WHERE grantee = 'mom_analyst' AND table_schema = 'maintenance'""")}
    assert {"work_orders", "failures", "reliability", "pm_schedule"} <= granted
