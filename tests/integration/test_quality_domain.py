"""Quality against the real broker and database: a plan, production that makes samples due, SPC charts
(a baseline I-MR chart and a plan-limited X-bar/R chart), a failed inspection that holds its lot, a
release, capability and yield; then a replay of the same log segment gives identical tables."""
from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import psycopg
import pytest

from services.common.kafka import end_offsets as kafka_end_offsets
from services.common.migrations import upgrade
from services.common.replay import seed_positions
from services.common.runtime import build_worker
from services.common.settings import Settings
from services.quality import spc
from services.quality.app import build as build_quality
from tests.integration.conftest import assert_a_replay_equals
from tests.integration.test_consumer_loop import end_offsets, query, run_until
from tests.integration.test_execution_domain import produce_all

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 6, tzinfo=UTC)


@pytest.fixture
def quality_scratch(prepared) -> Iterator[Settings]:
    """Worker settings with an empty quality schema of its own and a fresh consumer group."""
    schema = f"quality_{uuid.uuid4().hex[:10]}"
    upgrade(prepared.superuser_url, "quality", schema=schema)
    yield Settings(
        service="quality", kafka=prepared.kafka, database_url=prepared.superuser_url,
        registry_url=prepared.status["registry"]["url"] or "", batch_max_events=500,
        group_id=f"test.{schema}", db_schema=schema,
    )
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def start_quality_at_end(prepared, settings: Settings) -> dict[tuple[str, int], int]:
    """Seed the positions at the current end of quality's input topics: the test sees only what it produces."""
    topics = build_quality(settings, prepared.catalogue).input_topics
    ends = kafka_end_offsets(settings.kafka, topics)
    seed_positions(prepared.superuser_url, settings.db_schema, ends)
    return ends


def scenario(run: str) -> tuple[list[dict], dict]:
    unit, plan, product, order = f"acme{run}.berlin.line1.press07", f"IP-{run}", f"P-{run}", f"WO-{run}"
    lot = f"LOT-{order}"
    n = iter(range(1_000_000))

    def ev(event_type: str, minutes: float, **body) -> dict:
        at = T0 + timedelta(minutes=minutes)
        return {"type": event_type, "event_id": f"{run}-{next(n)}", "occurred_at": at,
                "recorded_at": T0 + timedelta(hours=12, microseconds=next(n)), **body}

    characteristics = [
        {"characteristic_id": f"DIA-{run}", "name": "Hole diameter", "kind": "variable", "lsl": 9.9, "usl": 10.1,
         "target": None, "sigma": None, "unit": "mm", "sample_size": 1, "every_n_parts": 100, "sampling": None},
        {"characteristic_id": f"LEN-{run}", "name": "Length", "kind": "variable", "lsl": 49.8, "usl": 50.2,
         "target": 50.0, "sigma": 0.03, "unit": "mm", "sample_size": 5, "every_n_parts": 250, "sampling": None},
        {"characteristic_id": f"BURR-{run}", "name": "Burr free", "kind": "attribute", "lsl": None, "usl": None,
         "target": None, "sigma": None, "unit": None, "sample_size": 5, "every_n_parts": 1000, "sampling": "order_start"},
    ]
    diameters = [10.0 + 0.01 * math.sin(i * 1.7) + 0.002 * (i % 3) for i in range(30)]
    lengths = [[50.0 + 0.02 * math.cos(i + j) for j in range(5)] for i in range(12)]
    events = [
        ev("InspectionPlanDefined", 0, plan_id=plan, product_id=product, operation="0010",
           characteristics=characteristics),
        ev("OrderStarted", 1, order_id=order, product_id=product, quantity=1000.0, due_at=None, operation="0010",
           equipment_id=unit),
    ]
    events += [ev("ProductionReported", 2 + i, order_id=order, operation="0010", equipment_id=unit, product_id=product,
                  lot_id=lot, good=48, scrap=2, final_operation=True) for i in range(12)]   # 600 parts
    events += [ev("ScrapReported", 15, equipment_id=unit, order_id=order, quantity=6, reason_code="BURR", rework=True)]
    events += [ev("InspectionRecorded", 20 + i, characteristic_id=f"DIA-{run}", plan_id=plan, equipment_id=unit,
                  order_id=order, lot_id=lot, values=[v], passed=None) for i, v in enumerate(diameters)]
    events += [ev("InspectionRecorded", 20 + i, characteristic_id=f"LEN-{run}", plan_id=plan, equipment_id=unit,
                  order_id=order, lot_id=lot, values=v, passed=None) for i, v in enumerate(lengths)]
    events += [ev("InspectionRecorded", 55, characteristic_id=f"BURR-{run}", plan_id=plan, equipment_id=unit,
                  order_id=order, lot_id=lot, values=None, passed=False)]
    events += [ev("InspectionRecorded", 56, characteristic_id=f"DIA-{run}", plan_id=plan, equipment_id=unit,
                  order_id=order, lot_id=lot, values=[10.0, 10.0], passed=None)]  # refused: the chart has single values
    events += [ev("LotDispositioned", 60, lot_id=lot, disposition="RELEASE", nonconformance_id=None)]
    return events, {"unit": unit, "plan": plan, "lot": lot, "order": order, "product": product,
                    "diameters": diameters, "lengths": lengths, "run": run}


def caught_up(prepared, settings, spec):
    targets = {t: end_offsets(prepared, t) for t in spec.input_topics}

    def check() -> bool:
        rows = dict(query(prepared, settings.db_schema, "SELECT topic, sum(next_offset) FROM positions GROUP BY topic"))
        return all(rows.get(t, 0) >= target for t, target in targets.items())
    return check


async def test_sampling_spc_holds_capability_and_yield_then_an_identical_replay(prepared, quality_scratch):
    start = start_quality_at_end(prepared, quality_scratch)
    events, ids = scenario(uuid.uuid4().hex[:8])
    produce_all(prepared, events)
    live = replace(quality_scratch, batch_max_events=9)  # many small batches: state crosses batch boundaries
    worker = build_worker(live, lambda c: build_quality(live, c))
    await run_until(worker, caught_up(prepared, live, worker.spec), timeout_s=90)
    schema, run = live.db_schema, ids["run"]

    # Sampling: 600 parts make 6 diameter samples and 2 length samples due; a first article at order start
    dues = query(prepared, schema, """SELECT characteristic_id, reason, count(*), count(inspected_by)
        FROM inspections_due WHERE order_id = %s GROUP BY 1, 2 ORDER BY 1""", ids["order"])
    assert dues == [(f"BURR-{run}", "order_start", 1, 1), (f"DIA-{run}", "every_n_parts", 6, 6),
                    (f"LEN-{run}", "every_n_parts", 2, 2)]

    # The I-MR chart: 25 points collected, then version 1 from the baseline over all 30 points
    versions = query(prepared, schema, """SELECT limits_version, count(*), bool_and(current_version = (limits_version = 1))
        FROM spc_points WHERE characteristic_id = %s GROUP BY 1 ORDER BY 1""", f"DIA-{run}")
    assert versions == [(0, 25, True), (1, 30, True)]
    (centre, ucl, lcl, range_ucl), = query(prepared, schema, """SELECT centre, ucl, lcl, range_ucl FROM control_limit_versions
        WHERE characteristic_id = %s AND version = 1""", f"DIA-{run}")
    base = [Fraction(v) for v in ids["diameters"][:25]]
    mean = sum(base) / 25
    mr_bar = sum(abs(b - a) for a, b in zip(base, base[1:], strict=False)) / 24
    for got, expected in ((centre, mean), (ucl, mean + 3 * mr_bar / Fraction("1.128")),
                          (lcl, mean - 3 * mr_bar / Fraction("1.128")), (range_ucl, Fraction("3.267") * mr_bar)):
        assert abs(Fraction(got) - expected) <= abs(expected) * Fraction(1, 10**9)

    # The X-bar/R chart has the plan's limits from its first point; its points carry value, centre, limits, rules
    rows = query(prepared, schema, """SELECT point, value, centre, ucl, lcl, rules FROM spc_points
        WHERE characteristic_id = %s ORDER BY point""", f"LEN-{run}")
    assert len(rows) == 12 and all(r[2] == 50.0 and abs(r[3] - (50.0 + 3 * 0.03 / math.sqrt(5))) < 1e-12 for r in rows)
    assert rows[0][1] == pytest.approx(statistics.fmean(ids["lengths"][0]), rel=1e-12)

    # Capability of the day against an exact computation
    (cp, cpk, pp, ppk, cm, cmk), = query(prepared, schema, """SELECT cp, cpk, pp, ppk, cm, cmk FROM capability
        WHERE characteristic_id = %s AND period = 'day'""", f"LEN-{run}")
    values = [v for s in ids["lengths"] for v in s]
    within = statistics.fmean([max(s) - min(s) for s in ids["lengths"]]) / spc.D2[5]
    overall, m = statistics.stdev(values), statistics.fmean(values)
    assert math.isclose(cp, 0.4 / (6 * within), rel_tol=1e-9)
    assert math.isclose(cpk, min(50.2 - m, m - 49.8) / (3 * within), rel_tol=1e-9)
    assert math.isclose(pp, 0.4 / (6 * overall), rel_tol=1e-9)
    assert math.isclose(ppk, min(50.2 - m, m - 49.8) / (3 * overall), rel_tol=1e-9)
    assert math.isclose(cm, 0.4 / (6 * statistics.stdev(values[:50])), rel_tol=1e-9) and cmk is not None

    # The failed attribute opened a nonconformance and held the lot; the release closed it and ended the hold
    holds = query(prepared, schema, "SELECT hold_no, active, outcome, lot_status FROM holds WHERE lot_id = %s", ids["lot"])
    assert holds == [(1, False, "RELEASE", "RELEASED")]
    ncs = query(prepared, schema, "SELECT status, disposition FROM nonconformances WHERE lot_id = %s", ids["lot"])
    assert ncs == [("CLOSED", "RELEASE")]
    refused = query(prepared, schema, "SELECT event_type, reason FROM refused_inputs WHERE subject_id = %s", f"DIA-{run}")
    assert len(refused) == 1 and "subgroups of 1" in refused[0][1]

    # Yield: 30 + 60 values all in spec, 5 attribute parts failed; 600 produced, 24 scrapped, 6 reworked
    fpy = query(prepared, schema, """SELECT ip, gp, pq, sq, rq, first_pass_yield, scrap_ratio, rework_ratio FROM fpy
        WHERE equipment_id = %s AND period = 'day'""", ids["unit"])
    assert [r[:5] for r in fpy] == [(95, 90, 600, 24, 6)]
    assert [Fraction(x) for x in fpy[0][5:]] == [Fraction(90, 95), Fraction(24, 600), Fraction(6, 600)] or all(
        abs(Fraction(x) - e) <= e * Fraction(1, 10**9)
        for x, e in zip(fpy[0][5:], (Fraction(90, 95), Fraction(24, 600), Fraction(6, 600)), strict=True))

    # A replay of the same segment in large batches, with a second process (quality defers nothing), gives identical tables
    await assert_a_replay_equals(prepared, quality_scratch, build_quality, schema, start, workers=2)
