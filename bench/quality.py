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

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from services.common import kafka as mom_kafka
from services.common import localstack
from services.common.kafka import end_offsets
from services.common.migrations import upgrade
from services.common.replay import seed_positions
from services.common.settings import REPO_ROOT

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


def _produce(ctx, events: list[tuple[str, dict]]) -> None:
    producer = mom_kafka.producer(ctx.kafka)
    for event_type, record in events:
        producer.produce(ctx.catalogue.topic_for(event_type).name,
                         key=ctx.catalogue.key_for(event_type, record).encode(),
                         value=ctx.codec.encode(event_type, record))
        producer.poll(0)
    assert producer.flush(60) == 0


def quality(ctx, n: int, timeout_s: float = 900.0) -> dict:
    from services.quality.app import build
    from services.quality.settings import from_env

    run = uuid.uuid4().hex[:8]
    schema = f"quality_bench_{run}"
    admin = ctx.config.db_url()
    upgrade(admin, "quality", schema=schema)
    topics = build(from_env(), ctx.catalogue).input_topics
    start = end_offsets(ctx.kafka, topics)
    seed_positions(admin, schema, start)
    ctx.log(f"quality: producing {n:,} inspections of {SUBGROUP} values")
    _produce(ctx, _events(run, n))
    target = sum(end_offsets(ctx.kafka, topics).values()) - sum(start.values())
    env = {**os.environ, **localstack.service_env(ctx.config, "quality"), "MOM_DATABASE_URL": admin,
           "MOM_DB_SCHEMA": schema, "MOM_GROUP_ID": f"bench-quality-{run}", "MOM_LOG_LEVEL": "WARNING",
           "MOM_HTTP_PORT": "0"}
    log_path = ctx.config.logs_dir / "bench-quality.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.quality"], env=env, cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    first_t = first_n = done_t = None
    began = time.perf_counter()
    try:
        with ctx.superuser() as conn:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the quality worker exited with {proc.returncode}; see {log_path}")
                done = int(conn.execute(f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".positions')
                           .fetchone()[0]) - sum(start.values())
                if done > 0 and first_t is None:
                    first_t, first_n = time.perf_counter(), done
                if done >= target:
                    done_t = time.perf_counter()
                    break
                if time.perf_counter() - began > timeout_s:
                    raise RuntimeError(f"quality: only {done:,} of {target:,} events after {timeout_s:.0f} s")
                time.sleep(0.2)
            values, points, held = conn.execute(
                f'SELECT (SELECT coalesce(sum(array_length(sample_values, 1)), 0) FROM "{schema}".inspection_results), '
                f'(SELECT count(*) FROM "{schema}".spc_point_rows), (SELECT count(*) FROM "{schema}".hold_rows)').fetchone()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with ctx.superuser() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    events = target - first_n
    seconds = done_t - first_t
    rate = events / seconds
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
