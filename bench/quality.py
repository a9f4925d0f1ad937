"""The quality workload: inspection values through one quality worker, end to end.

A seeded stream of InspectionRecorded events (subgroups of 5 values over 40 characteristics of one
plan, a few values outside the specification so nonconformances and holds happen too) is produced to
the operator topic after the plan. The issue's own target for quality is >= 20,000 inspection values/s
per worker; the check is that every value reached the projection.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from bench.scratch_run import Workload

SUBGROUP = 5
CHARACTERISTICS = 40
START = datetime(2026, 11, 2, 6, tzinfo=UTC)


def _events(run: str, n: int, expected: dict) -> Iterator[tuple[str, dict]]:
    rng = random.Random(20261102)
    plan = f"IP-BENCH-{run}"
    base = {"source": "bench", "correlation_id": None}
    characteristics = [{"characteristic_id": f"C{c:02d}-{run}", "name": f"Dimension {c}", "kind": "variable",
                        "lsl": 9.9, "usl": 10.1, "target": None, "sigma": None, "unit": "mm", "sample_size": SUBGROUP,
                        "every_n_parts": 100, "sampling": None} for c in range(CHARACTERISTICS)]
    expected["values"] = 0
    yield ("InspectionPlanDefined", {**base, "event_id": f"{run}-plan", "occurred_at": START, "recorded_at": START,
                                     "plan_id": plan, "product_id": f"P-{run}", "operation": "0010",
                                     "characteristics": characteristics})
    for i in range(n):
        at = START + timedelta(seconds=1 + i)
        values = [rng.gauss(10.0, 0.02) for _ in range(SUBGROUP)]
        expected["values"] += SUBGROUP
        yield ("InspectionRecorded", {
            **base, "event_id": f"{run}-{i}", "occurred_at": at, "recorded_at": at,
            "characteristic_id": f"C{i % CHARACTERISTICS:02d}-{run}", "plan_id": plan,
            "equipment_id": f"acme.site1.area1.line{i % 20 + 1}.unit1", "order_id": f"WO-{run}-{i // 500}",
            "lot_id": f"LOT-{run}-{i // 500}", "values": values, "passed": None})


def _check(found: tuple, expected: dict) -> tuple[bool, str]:
    values, points, held = (int(v) for v in found)
    ok = values == expected["values"]
    return ok, (f"projection {'OK' if ok else 'WRONG'}: {values:,} values charted (expected {expected['values']:,}), "
                f"{points:,} SPC points, {held} lots held")


QUALITY = Workload(
    service="quality", events=_events, check=_check,
    query=('SELECT (SELECT coalesce(sum(array_length(sample_values, 1)), 0) FROM "{schema}".inspection_results), '
           '(SELECT count(*) FROM "{schema}".spc_point_rows), (SELECT count(*) FROM "{schema}".hold_rows)'),
    describe=(f"InspectionRecorded with {SUBGROUP} values each over {CHARACTERISTICS} X-bar/R charts (baselines, "
              f"Nelson rules, capability, holds); the issue's quality target is >= 20,000 values/s"),
    per_event=("values", SUBGROUP))
