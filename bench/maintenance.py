"""The maintenance workload: machine events through one maintenance worker, end to end.

A seeded stream over 50 work units is produced to the machine topic after one calendar plan per unit:
mostly process values (one parameter under a condition limit, a few excursions), state changes with a
technical failure every tenth stop, and critical alarms. The check is that the failures, dues and
condition requests in the projection are the ones the stream implies.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from bench.scratch_run import Workload

UNITS = 50
START = datetime(2026, 11, 2, 6, tzinfo=UTC)
LIMITS = [{"parameter": "hydraulic_pressure", "low": 80.0, "high": 200.0, "for_s": 30.0}]


def _events(run: str, n: int, expected: dict) -> Iterator[tuple[str, dict]]:
    """The stream; `expected` gets what it must produce: failures, calendar dues, condition requests."""
    base = {"source": "bench", "correlation_id": None}
    units = [f"acme.site1.area1.line{u % 10 + 1}.bench{run}u{u:02d}" for u in range(UNITS)]
    for u, unit in enumerate(units):
        yield ("MaintenancePlanDefined", {
            **base, "event_id": f"{run}-plan-{u}", "occurred_at": START, "recorded_at": START, "plan_id": f"MP-{run}-{u}",
            "equipment_id": unit, "task": "Inspect guards",
            "trigger": {"kind": "calendar", "interval_s": 3600.0, "hours": None, "cycles": None}})
    per_unit = max(1, n // UNITS)
    expected.update(failures=0, dues=0, requests=0)
    for u, unit in enumerate(units):
        down = False
        stops = 0
        excursion_since: datetime | None = None
        requested = False
        for i in range(per_unit):
            at = START + timedelta(seconds=10 * (i + 1))
            common = {**base, "event_id": f"{run}-{u}-{i}", "occurred_at": at, "recorded_at": at, "equipment_id": unit}
            if i % 50 == 0:  # a stop every 500 s, running again 300 s later
                down = not down
                if down:
                    stops += 1
                    reason = "E-HYD-12" if stops % 10 == 0 else "BREAK"
                    expected["failures"] += reason == "E-HYD-12"
                    yield ("MachineStateChanged", {**common, "state": "DOWN", "reason_code": reason})
                else:
                    yield ("MachineStateChanged", {**common, "state": "RUNNING", "reason_code": None})
            elif i % 997 == 0:
                yield ("AlarmRaised", {**common, "alarm_code": "A-17", "severity": "warning", "text": "Oil level low"})
            else:
                excursion = (i // 100) % 20 == 7  # 100 values (1000 s) above the limit now and then
                value = 230.0 if excursion else 150.0 + (i % 7)
                if not excursion:
                    excursion_since, requested = None, False
                elif excursion_since is None:
                    excursion_since = at
                if excursion and not requested and (at - excursion_since).total_seconds() >= LIMITS[0]["for_s"]:
                    requested = True
                    expected["requests"] += 1
                yield ("ProcessValueMeasured", {**common, "parameter": "hydraulic_pressure", "value": value,
                                                "unit": "bar"})
        expected["dues"] += int(timedelta(seconds=10 * per_unit) // timedelta(hours=1))


def _check(found: tuple, expected: dict) -> tuple[bool, str]:
    failures, dues, requests = (int(v) for v in found)
    ok = (failures, dues, requests) == (expected["failures"], expected["dues"], expected["requests"])
    return ok, (f"projection {'OK' if ok else 'WRONG'}: {failures} failures (expected {expected['failures']}), "
                f"{dues} dues (expected {expected['dues']}), {requests} condition requests (expected {expected['requests']})")


MAINTENANCE = Workload(
    service="maintenance", events=_events, check=_check,
    query=('SELECT (SELECT count(*) FROM "{schema}".failure_log), (SELECT count(*) FROM "{schema}".pm_dues), '
           '(SELECT count(*) FROM "{schema}".work_order_state WHERE kind = \'condition\')'),
    describe=(f"{UNITS} units: process values under a condition limit, state changes, alarms, "
              f"one calendar plan each"),
    env={"MOM_MAINTENANCE_CONDITION_LIMITS": json.dumps(LIMITS)})
