"""The `maintenance` scenario: machine events per second through one maintenance worker, end to end.

A seeded stream over 50 work units is produced to the machine topic after one calendar plan per unit:
mostly process values (one parameter under a condition limit, a few excursions), state changes with a
technical failure every tenth stop, and critical alarms. A `python -m services.maintenance` worker
process then reads it into a scratch schema seeded at the topics' end offsets (so only this run's
events count) and is timed from its first committed position to the last, as the quality and execution
scenarios are. Reported: events/s, and a check that the failures, dues and condition requests in the
projection are the ones the stream implies.

Standalone: `python -m bench.maintenance [N]` runs it on the bench stack (MOM_BENCH_* overrides apply).
"""
from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta

from bench.scratch_run import timed_worker

UNITS = 50
START = datetime(2026, 11, 2, 6, tzinfo=UTC)
LIMITS = [{"parameter": "hydraulic_pressure", "low": 80.0, "high": 200.0, "for_s": 30.0}]


def _events(run: str, n: int) -> tuple[list[tuple[str, dict]], dict[str, int]]:
    """The stream, and what it must produce: failures, calendar dues, condition requests."""
    base = {"source": "bench", "correlation_id": None}
    units = [f"acme.site1.area1.line{u % 10 + 1}.bench{run}u{u:02d}" for u in range(UNITS)]
    out: list[tuple[str, dict]] = [("MaintenancePlanDefined", {
        **base, "event_id": f"{run}-plan-{u}", "occurred_at": START, "recorded_at": START, "plan_id": f"MP-{run}-{u}",
        "equipment_id": unit, "task": "Inspect guards",
        "trigger": {"kind": "calendar", "interval_s": 3600.0, "hours": None, "cycles": None}}) for u, unit in enumerate(units)]
    per_unit = n // UNITS
    expected = {"failures": 0, "dues": 0, "requests": 0}
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
                    out.append(("MachineStateChanged", {**common, "state": "DOWN", "reason_code": reason}))
                else:
                    out.append(("MachineStateChanged", {**common, "state": "RUNNING", "reason_code": None}))
            elif i % 997 == 0:
                out.append(("AlarmRaised", {**common, "alarm_code": "A-17", "severity": "warning", "text": "Oil level low"}))
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
                out.append(("ProcessValueMeasured", {**common, "parameter": "hydraulic_pressure", "value": value,
                                                     "unit": "bar"}))
        span = timedelta(seconds=10 * per_unit)
        expected["dues"] += int(span // timedelta(hours=1))
    return out, expected


def maintenance(ctx, n: int, timeout_s: float = 900.0) -> dict:
    run = uuid.uuid4().hex[:8]
    events, expected = _events(run, n)
    ctx.log(f"maintenance: producing {len(events):,} machine events over {UNITS} units")
    timed = timed_worker(ctx, "maintenance", events, (
        'SELECT (SELECT count(*) FROM "{schema}".failure_log), (SELECT count(*) FROM "{schema}".pm_dues), '
        '(SELECT count(*) FROM "{schema}".work_order_state WHERE kind = \'condition\')'),
        env={"MOM_MAINTENANCE_CONDITION_LIMITS": json.dumps(LIMITS)}, timeout_s=timeout_s)
    failures, dues, requests = timed.found
    events_timed, seconds, rate = timed.events, timed.seconds, timed.events_per_s
    ok = (int(failures), int(dues), int(requests)) == (expected["failures"], expected["dues"], expected["requests"])
    return {
        "events": events_timed, "seconds": round(seconds, 3), "events_per_s": round(rate, 1), "projection_ok": ok,
        "failures": int(failures), "dues": int(dues), "condition_requests": int(requests),
        "notes": (f"python -m services.maintenance (one worker), {UNITS} units: process values under a condition limit, "
                  f"state changes, alarms, one calendar plan each; Kafka to committed projection; "
                  f"{rate:,.0f} events/s; projection {'OK' if ok else 'WRONG'}: {int(failures)} failures "
                  f"(expected {expected['failures']}), {int(dues)} dues (expected {expected['dues']}), "
                  f"{int(requests)} condition requests (expected {expected['requests']})"),
    }


if __name__ == "__main__":
    from bench import stack
    from bench.scenarios import Context

    config, _status, _started = stack.start()
    result = maintenance(Context(config, {"events": 0}), int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    print(json.dumps(result, indent=2))
