"""Maintenance end to end: events posted to ingest over HTTP, execution's derived downtime and runtime
consumed by maintenance, and maintenance's lockout counted by execution as planned down time.

A unit runs from 06:00, fails at 07:00 (E-HYD-12) and is restored at 07:30; its first closed hour
(06:00-07:00, 3600 s RUNNING) makes a 1-hour runtime plan fall due. A technician works the preventive
order 09:00-09:30 with the unit in MAINTENANCE: maintenance locks the unit out, execution books the
half hour as PDOT.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from services.cli import prepare
from services.common import localstack
from tests.e2e.test_oee_published_examples import post
from tests.waiting import positions_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
SERVICES = ("ingest", "execution", "maintenance")
DAY = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def running(stack: localstack.StackConfig) -> Iterator[dict]:
    yield localstack.up(stack, services=SERVICES, after_infra=prepare)
    localstack.stop_services(stack, SERVICES)


def at(hour: int, minute: int = 0) -> str:
    return (DAY + timedelta(hours=hour, minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wait_for_row(status: dict, sql: str, args: tuple, service: str):
    with psycopg.connect(status["database"]["analyst_url"], autocommit=True) as conn:
        return wait_until(lambda: conn.execute(sql, args).fetchone(), positions_of(status["database"]["url"], service))


def test_a_failure_a_due_plan_and_its_lockout_flow_between_execution_and_maintenance(running):
    run = uuid.uuid4().hex[:8]
    site = f"acme{run}.berlin"
    unit = f"{site}.assembly.line1.press07"
    n = iter(range(1, 1_000_000))

    def event(event_type: str, when: str, **body) -> dict:
        return {"type": event_type, "event_id": f"{run}-{next(n)}", "occurred_at": when, **body}

    def state(when: str, s: str, reason: str | None = None) -> dict:
        return event("MachineStateChanged", when, equipment_id=unit, state=s, **({"reason_code": reason} if reason else {}))

    # Given a plant, a shift, a runtime plan, and the first hours of the unit
    post(running, [
        event("EquipmentRegistered", at(0), equipment_id=site, name="Berlin", level="site", time_zone="UTC"),
        event("EquipmentRegistered", at(0), equipment_id=unit, name="Press 7", level="work_unit", parent_id=site),
        event("ShiftScheduled", at(0), shift_id=f"S-{run}", equipment_id=site, starts_at=at(6), ends_at=at(14), breaks=[]),
        event("MaintenancePlanDefined", at(5), plan_id=f"MP-{run}", equipment_id=unit, task="Change hydraulic filter",
              trigger={"kind": "runtime_hours", "hours": 1.0}),
        state(at(6), "RUNNING"), state(at(7), "DOWN", "E-HYD-12"), state(at(7, 30), "RUNNING"),
    ])
    # Then maintenance records the failure, with execution's classification of the stop
    failure = wait_for_row(running, """SELECT ttr_s, reason_code, execution_classification, work_order_id
                                       FROM maintenance.failures WHERE equipment_id = %s
                                       AND execution_classification IS NOT NULL""", (unit,), "maintenance")
    assert failure is not None, "no failure in maintenance.failures"
    assert failure[:3] == (Decimal("1800"), "E-HYD-12", "unplanned_stop")
    # And execution's first closed hour makes the runtime plan fall due, with a preventive order
    order = wait_for_row(running, """SELECT work_order_id, status FROM maintenance.work_orders
                                     WHERE equipment_id = %s AND kind = 'preventive'""", (unit,), "maintenance")
    assert order is not None and order[1] == "OPEN", "the runtime plan did not fall due"
    # When a technician works the order with the unit in MAINTENANCE, and the shift goes on
    post(running, [
        state(at(9), "MAINTENANCE", "PM"),
        event("MaintenanceWorkReported", at(9), work_order_id=order[0], status="STARTED", technician_id="TECH-07"),
        event("MaintenanceWorkReported", at(9, 30), work_order_id=order[0], status="COMPLETED", technician_id="TECH-07"),
        state(at(9, 30), "RUNNING"), state(at(11), "IDLE"),
    ])
    # Then the order is closed with its lockout, and execution counts the locked-out half hour as planned down time
    closed = wait_for_row(running, """SELECT status, locked_out, work_duration_s FROM maintenance.work_orders
                                      WHERE work_order_id = %s AND status = 'CLOSED'""", (order[0],), "maintenance")
    assert closed == ("CLOSED", True, Decimal("1800"))
    hour = wait_for_row(running, """SELECT pdot_s, apt_s FROM kpi.oee WHERE equipment_id = %s AND period = 'hour'
                                    AND period_start = %s AND pdot_s = 1800""", (unit, DAY + timedelta(hours=9)), "execution")
    assert hour == (1800, 1800)
    # And the reliability KPIs of the day are in the kpi schema
    kpis = wait_for_row(running, """SELECT failures, mttr_s, mttf_s FROM kpi.reliability
                                    WHERE equipment_id = %s AND period_start = %s""", (unit, DAY), "maintenance")
    assert kpis == (1, Decimal("1800"), Decimal("3600"))
