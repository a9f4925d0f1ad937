"""The `quality` scenario: inspection values per second through one quality worker, end to end.

A seeded stream of InspectionRecorded events (subgroups of 5 values over 40 characteristics of one
plan, a few values outside the specification so nonconformances and holds happen too) is produced to
the operator topic after the plan. A `python -m services.quality` worker process then reads it into a
scratch schema seeded at the topics' end offsets (so only this run's events count) and is timed from
its first committed position to the last, as the execution scenario is. Reported: events/s and values/s
(the issue's target: >= 20,000 inspection values/s per worker), the ratio to raw_consume, and a check
that every value reached the projection.
"""
from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from bench.scratch_run import timed_worker

SUBGROUP = 5
CHARACTERISTICS = 40
START = datetime(2026, 11, 2, 6, tzinfo=UTC)


def _events(run: str, n: int) -> list[tuple[str, dict]]:
    rng = random.Random(20261102)
    plan = f"IP-BENCH-{run}"
    base = {"source": "bench", "correlation_id": None}
    characteristics = [{"characteristic_id": f"C{c:02d}-{run}", "name": f"Dimension {c}", "kind": "variable",
                        "lsl": 9.9, "usl": 10.1, "target": None, "sigma": None, "unit": "mm", "sample_size": SUBGROUP,
                        "every_n_parts": 100, "sampling": None} for c in range(CHARACTERISTICS)]
    out = [("InspectionPlanDefined", {**base, "event_id": f"{run}-plan", "occurred_at": START, "recorded_at": START,
                                      "plan_id": plan, "product_id": f"P-{run}", "operation": "0010",
                                      "characteristics": characteristics})]
    for i in range(n):
        at = START + timedelta(seconds=1 + i)
        values = [rng.gauss(10.0, 0.02) for _ in range(SUBGROUP)]
        lot = f"LOT-{run}-{i // 500}"
        out.append(("InspectionRecorded", {
            **base, "event_id": f"{run}-{i}", "occurred_at": at, "recorded_at": at,
            "characteristic_id": f"C{i % CHARACTERISTICS:02d}-{run}", "plan_id": plan,
            "equipment_id": f"acme.site1.area1.line{i % 20 + 1}.unit1", "order_id": f"WO-{run}-{i // 500}",
            "lot_id": lot, "values": values, "passed": None}))
    return out


def quality(ctx, n: int, timeout_s: float = 900.0) -> dict:
    run = uuid.uuid4().hex[:8]
    ctx.log(f"quality: producing {n:,} inspections of {SUBGROUP} values")
    timed = timed_worker(ctx, "quality", _events(run, n), (
        'SELECT (SELECT coalesce(sum(array_length(sample_values, 1)), 0) FROM "{schema}".inspection_results), '
        '(SELECT count(*) FROM "{schema}".spc_point_rows), (SELECT count(*) FROM "{schema}".hold_rows)'),
        timeout_s=timeout_s)
    values, points, held = timed.found
    events, seconds, rate = timed.events, timed.seconds, timed.events_per_s
    ok = int(values) == n * SUBGROUP
    return {
        "events": events, "seconds": round(seconds, 3), "events_per_s": round(rate, 1),
        "values_per_s": round(rate * SUBGROUP, 1), "projection_ok": ok, "spc_point_rows": int(points),
        "lots_held": int(held),
        "notes": (f"python -m services.quality (one worker), InspectionRecorded with {SUBGROUP} values each over "
                  f"{CHARACTERISTICS} X-bar/R charts (baselines, Nelson rules, capability, holds), Kafka to committed "
                  f"projection; {rate * SUBGROUP:,.0f} values/s; target >= 20,000 values/s: "
                  f"{'met' if rate * SUBGROUP >= 20_000 else 'NOT met'}; projection {'OK' if ok else 'WRONG'}: "
                  f"{int(values):,} values charted (expected {n * SUBGROUP:,})"),
    }
