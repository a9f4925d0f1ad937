"""Published OEE worked examples, reproduced through the public interface: events posted to ingest
over HTTP, figures read from kpi.oee.

The Vorne/OEE.com "OEE calculation" example: an 8-hour shift (06:00-14:00) with two 15-minute breaks
and a 30-minute meal break (planned production time 420 min), 47 minutes of down time, an ideal cycle
time of 1.0 s, 19,271 parts counted of which 423 rejects. Published: availability 0.8881, performance
0.8611, quality 0.9780, OEE 0.7479; exactly 373/420, 19271/22380, 18848/19271 and their product.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import psycopg
import pytest

from services.cli import prepare
from services.common import localstack
from tests.waiting import positions_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
SERVICES = ("ingest", "execution")
DAY = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def running(stack: localstack.StackConfig) -> Iterator[dict]:
    yield localstack.up(stack, services=SERVICES, after_infra=prepare)
    localstack.stop_services(stack, SERVICES)


def at(hour: int, minute: int = 0, second: int = 0) -> str:
    return (DAY + timedelta(hours=hour, minutes=minute, seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def post(status: dict, events: list[dict]) -> dict:
    for start in range(0, len(events), 1000):
        request = urllib.request.Request(
            status["ingest"]["url"] + "/v1/events", data=json.dumps(events[start:start + 1000]).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {status['ingest']['token']}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["rejected"] == 0, answer
    return answer


def vorne_shift(site: str, run: str) -> list[dict]:
    line, unit = f"{site}.assembly.line1", f"{site}.assembly.line1.press07"
    n = iter(range(1, 1_000_000))

    def event(event_type: str, when: str, **body) -> dict:
        return {"type": event_type, "event_id": f"{run}-{next(n)}", "occurred_at": when, **body}

    plan = [
        event("EquipmentRegistered", at(0), equipment_id=site, name="Berlin", level="site", time_zone="UTC"),
        event("EquipmentRegistered", at(0), equipment_id=f"{site}.assembly", name="Assembly", level="area",
              parent_id=site),
        event("EquipmentRegistered", at(0), equipment_id=line, name="Line 1", level="work_center",
              parent_id=f"{site}.assembly"),
        event("EquipmentRegistered", at(0), equipment_id=unit, name="Press 7", level="work_unit", parent_id=line),
        event("ShiftScheduled", at(0), shift_id=f"S-{run}-A", equipment_id=site, starts_at=at(6), ends_at=at(14),
              breaks=[{"starts_at": at(8), "ends_at": at(8, 15)}, {"starts_at": at(10), "ends_at": at(10, 30)},
                      {"starts_at": at(12), "ends_at": at(12, 15)}]),
        event("ProductDefined", at(0), product_id=f"P-{run}", name="Bracket", ideal_cycle_time_s=1.0,
              routing=[{"operation": "0010", "equipment_id": unit, "ideal_cycle_time_s": 1.0}]),
        event("ProductionOrderReleased", at(0), order_id=f"WO-{run}", product_id=f"P-{run}", quantity=20000),
    ]
    operator = [event("OperationStarted", at(6), order_id=f"WO-{run}", operation="0010", equipment_id=unit,
                      operator_id="OP-17")]
    states = [("RUNNING", at(6)), ("DOWN", at(7)), ("RUNNING", at(7, 47)),
              ("IDLE", at(8)), ("RUNNING", at(8, 15)), ("IDLE", at(10)), ("RUNNING", at(10, 30)),
              ("IDLE", at(12)), ("RUNNING", at(12, 15)), ("IDLE", at(14))]
    machine = [event("MachineStateChanged", when, equipment_id=unit, state=state,
                     **({"reason_code": "JAM"} if state == "DOWN" else {})) for state, when in states]
    # 373 running minutes: one count per running minute, 19,271 parts and 423 rejects in all
    running = [m for m in range(6 * 60, 14 * 60)
               if not (7 * 60 <= m < 7 * 60 + 47 or 8 * 60 <= m < 8 * 60 + 15 or 10 * 60 <= m < 10 * 60 + 30
                       or 12 * 60 <= m < 12 * 60 + 15)]
    assert len(running) == 373
    total, rejects = 19271, 423
    for i, minute in enumerate(running):
        produced = total // 373 + (1 if i < total % 373 else 0)
        reject = rejects // 373 + (1 if i < rejects % 373 else 0)
        machine.append(event("PartsProduced", at(minute // 60, minute % 60, 30), equipment_id=unit,
                             good=produced - reject, reject=reject, order_id=f"WO-{run}"))
    machine.sort(key=lambda e: e["occurred_at"])
    return plan + operator + machine


def wait_for_row(status: dict, sql: str, args: tuple, service: str = "execution"):
    """The first row of `sql` once the running `service` has produced it; None if the service stops
    making progress first (see tests/waiting.py)."""
    with psycopg.connect(status["database"]["analyst_url"], autocommit=True) as conn:
        return wait_until(lambda: conn.execute(sql, args).fetchone(),
                          positions_of(status["database"]["url"], service))


def test_the_vorne_oee_example_comes_out_exactly_in_kpi_oee(running):
    run = uuid.uuid4().hex[:8]
    site = f"acme{run}.berlin"
    post(running, vorne_shift(site, run))
    unit = f"{site}.assembly.line1.press07"
    row = wait_for_row(running, """
        SELECT pot_s, pdot_s, pbt_s, apt_s, adet_s, ideal_s, pq, gq, sq, availability, effectiveness, quality_ratio, oee
        FROM kpi.oee WHERE equipment_id = %s AND period = 'shift' AND shift_id = %s AND version >= 1""",
                       (unit, f"S-{run}-A"))
    assert row is not None, "the shift was not closed in kpi.oee"
    pot, pdot, pbt, apt, adet, ideal, pq, gq, sq, availability, effectiveness, quality, oee = row
    assert (pot, pdot, pbt, apt, adet) == (480 * 60, 60 * 60, 420 * 60, 373 * 60, 47 * 60)
    assert (ideal, pq, gq, sq) == (19271, 19271, 18848, 423)
    expected = {"availability": Fraction(373, 420), "effectiveness": Fraction(19271, 373 * 60),
                "quality": Fraction(18848, 19271)}
    expected["oee"] = expected["availability"] * expected["effectiveness"] * expected["quality"]
    for name, value in (("availability", availability), ("effectiveness", effectiveness),
                        ("quality", quality), ("oee", oee)):
        assert abs(Fraction(str(value)) - expected[name]) <= expected[name] * Fraction(1, 10**9), name
    assert (round(float(availability), 4), round(float(effectiveness), 4), round(float(quality), 4),
            round(float(oee), 4)) == (0.8881, 0.8611, 0.9780, 0.7479)
    # The day and the line roll up from the same elements
    day = wait_for_row(running, "SELECT apt_s, pbt_s, pq FROM kpi.oee WHERE equipment_id = %s AND period = 'day'",
                       (unit,))
    assert day == (373 * 60, 420 * 60, 19271)
    line = wait_for_row(running, """SELECT apt_s, pbt_s, gq, oee FROM kpi.oee_rollup
                                    WHERE equipment_id = %s AND period = 'shift'""", (f"{site}.assembly.line1",))
    assert line[:3] == (373 * 60, 420 * 60, 18848) and abs(float(line[3]) - float(expected["oee"])) < 1e-12
