"""The inventory workload for `python -m bench`, and genealogy trace speed: `python -m bench.inventory [--url URL]`.

The workload: raw material lots received once (plan topic), then execution's ProductionReported and
backflushed MaterialConsumed in turn (execution topic): each report creates or grows its order's
output lot, each consumption draws one unit of a raw material first in, first out and adds a
genealogy edge. The check: the produced quantity, one negative movement per consumption, no refusals.

The trace speed:

Builds a genealogy of `levels x per_level` lots in a scratch inventory schema (default 10 x 1,000 =
10,000 lots, ten levels deep, every lot made from `fan_in` lots of the level below, about 27,000
edges with two consumptions each at different times), then times `inventory.trace` backward from a
top-level lot and forward from a raw lot, now and as of a past time. The rows go straight into the
projection's tables with COPY: this measures the query, not the projector. Without --url it uses
the local stack's database (`mom up --infra`).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg

from bench.scratch_run import Workload

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MATERIALS = 20
UNITS = 20


def _events(run: str, n: int, expected: dict) -> Iterator[tuple[str, dict]]:
    rng = random.Random(20261102)
    base = {"source": "bench", "correlation_id": None}
    start = datetime(2026, 11, 2, 6, tzinfo=UTC)
    for m in range(MATERIALS):
        yield ("MaterialLotReceived", {**base, "event_id": f"{run}-rcv-{m}", "occurred_at": start, "recorded_at": start,
                                       "lot_id": f"LOT-RAW-{run}-{m:02d}", "material_id": f"MAT-RAW-{m:02d}-{run}",
                                       "quantity": float(n), "unit": "kg", "location_id": "WH-RAW"})
    expected.update(good=0, consumed=0)
    for i in range(n):
        at = start + timedelta(seconds=1 + i)
        order = f"WO-{run}-{i // 1000}"
        common = {**base, "event_id": f"{run}-{i}", "occurred_at": at, "recorded_at": at, "order_id": order,
                  "operation": "0010", "equipment_id": f"acme.site1.area1.line{i % UNITS + 1}.unit1"}
        if i % 2 == 0:
            good = rng.randint(1, 10)
            expected["good"] += good
            yield ("ProductionReported", {**common, "product_id": f"P-{run}-{i // 1000 % 3}", "lot_id": f"LOT-{order}",
                                          "good": good, "scrap": 0, "final_operation": True})
        else:
            expected["consumed"] += 1
            yield ("MaterialConsumed", {**common, "material_id": f"MAT-RAW-{i % MATERIALS:02d}-{run}", "quantity": 1.0,
                                        "produced_lot_id": f"LOT-{order}", "backflushed": True})


def _check(found: tuple, expected: dict) -> tuple[bool, str]:
    good, consumed, refused = (int(v) for v in found)
    ok = (good, consumed, refused) == (expected["good"], expected["consumed"], 0)
    return ok, (f"projection {'OK' if ok else 'WRONG'}: {good:,} produced (expected {expected['good']:,}), "
                f"{consumed:,} consumptions booked (expected {expected['consumed']:,}), {refused} refused (expected 0)")


INVENTORY = Workload(
    service="inventory", events=_events, check=_check,
    query=('SELECT (SELECT coalesce(sum(produced_good), 0) FROM "{schema}".lot_state), '
           '(SELECT count(*) FROM "{schema}".movement_ledger WHERE quantity < 0), '
           '(SELECT count(*) FROM "{schema}".refusal_log)'),
    describe=(f"{MATERIALS} raw lots received, then ProductionReported and backflushed MaterialConsumed in turn "
              f"over {UNITS} units (output lots, FIFO draws, genealogy edges, LotConsumed derived)"))


def lot_name(level: int, i: int) -> str:
    return f"LOT-L{level:02d}-{i:05d}"


def build_genealogy(url: str, schema: str, *, levels: int = 10, per_level: int = 1000, fan_in: int = 3,
                    seed: int = 22400) -> dict:
    """Level 0 is finished goods, level `levels - 1` raw material; level k is made from level k + 1
    (so ten levels are nine generations of edges). Level k's consumptions happen on day `levels - k`,
    each split into two consumptions a day apart, so `as of` cuts the graph by level."""
    rng = random.Random(seed)
    lots, edges = [], []
    for level in range(levels):
        for i in range(per_level):
            lots.append((lot_name(level, i), f"MAT-L{level:02d}", "pcs", "AVAILABLE", T0, "produced", None, 1.0, 1, 0,
                         None, None))
    n = 0
    for level in range(levels - 1):
        when = T0 + timedelta(days=2 * (levels - level))
        for i in range(per_level):
            for parent in rng.sample(range(per_level), fan_in):
                for half in (0, 1):
                    edges.append((lot_name(level + 1, parent), lot_name(level, i), when + timedelta(days=half),
                                  0.5, f"bench-{n}", half))
                n += 1
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cursor:
            with cursor.copy(f'COPY "{schema}".lot_state (lot_id, material_id, unit, status, created_at, origin, '
                             "order_id, quantity, produced_good, produced_scrap, nonconformance_id, hold_reason) "
                             "FROM STDIN") as copy:
                for row in lots:
                    copy.write_row(row)
            with cursor.copy(f'COPY "{schema}".genealogy_edges (parent_lot_id, child_lot_id, occurred_at, quantity, '
                             "event_id, seq) FROM STDIN") as copy:
                for row in edges:
                    copy.write_row(row)
        conn.execute(f'ANALYZE "{schema}".genealogy_edges')
        conn.execute(f'ANALYZE "{schema}".lot_state')
    return {"lots": len(lots), "edges": len(edges), "levels": levels}


def time_trace(url: str, schema: str, lot: str, *, forward: bool, as_of: datetime | None = None,
               repeat: int = 5) -> dict:
    """Median and worst wall time of `trace` over `repeat` runs (after one warm-up), and its row count."""
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        sql = f'SELECT count(*), max(depth) FROM "{schema}".trace(%s, %s, %s)'
        rows, depth = conn.execute(sql, (lot, forward, as_of)).fetchone()
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(sql, (lot, forward, as_of)).fetchone()
            times.append(time.perf_counter() - started)
    return {"lot": lot, "forward": forward, "as_of": as_of.isoformat() if as_of else None, "edges": rows,
            "depth": depth, "median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}


def run(url: str, schema: str, levels: int = 10, per_level: int = 1000) -> dict:
    built = build_genealogy(url, schema, levels=levels, per_level=per_level)
    top, raw = lot_name(0, 0), lot_name(levels - 1, 0)
    return {**built, "traces": [
        time_trace(url, schema, top, forward=False),
        time_trace(url, schema, raw, forward=True),
        time_trace(url, schema, top, forward=False, as_of=T0 + timedelta(days=20)),
        time_trace(url, schema, raw, forward=True, as_of=T0 + timedelta(days=12)),
    ]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inventory", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL URL of a role that may create schemas (default: the local stack)")
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--per-level", type=int, default=1000)
    args = parser.parse_args()
    url = args.url
    if not url:
        from services.common import localstack
        url = localstack.status(localstack.StackConfig.from_env())["database"]["url"]
    from services.common.migrations import upgrade
    schema = f"inventory_bench_{uuid.uuid4().hex[:8]}"
    upgrade(url, "inventory", schema=schema)
    try:
        print(json.dumps(run(url, schema, args.levels, args.per_level), indent=2))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
