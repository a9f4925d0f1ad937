"""Quality's tables and how a batch changes them.

Per batch: load what the events touch (plans of the products and plans named, order progress, charts
with their current limits, the history of charts whose limits may change, lots, capability statistics
of the periods touched), fold the events through the pure handlers, then write: new facts with COPY,
changed state rows with one set-based upsert per table. A fixed handful of statements per batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.db import copy_rows
from services.quality import capability, spc
from services.quality.events import (
    Characteristic,
    Event,
    InspectionPlanDefined,
    InspectionRecorded,
    LotDispositioned,
    LotHeld,
    OrderStarted,
    ProductionReported,
    SpcRuleViolated,
)
from services.quality.handlers import fold
from services.quality.model import (
    DEFAULT_BASELINE,
    DEFAULT_MACHINE_STUDY_VALUES,
    BatchState,
    Chart,
    Lot,
    Plan,
    Progress,
    Subgroup,
    period_starts,
)

INPUTS_REFUSED = Counter("mom_quality_inputs_refused_total",
                         "Input events quality refused (QualityInputRefused), by event type.", ["event_type"])
RULE_VIOLATIONS = Counter("mom_quality_spc_rule_violations_total",
                          "SpcRuleViolated events emitted, by chart and Nelson rule.", ["chart", "rule"])
LOTS_HELD = Counter("mom_quality_lots_held_total", "Lots put on hold (LotHeld).")
INSPECTION_VALUES = Counter("mom_quality_inspection_values_total", "Measured values charted (SPC subgroup members).")


class QualityProjector:
    def __init__(self, baseline: int = DEFAULT_BASELINE, machine_study_values: int = DEFAULT_MACHINE_STUDY_VALUES) -> None:
        self.baseline = baseline
        self.machine_study_values = machine_study_values

    async def apply(self, conn: AsyncConnection, events: Sequence[Event]) -> list[Event]:
        batch = BatchState(baseline=self.baseline, machine_study_values=self.machine_study_values)
        await load(conn, batch, events)
        derived = fold(batch, events)
        await save(conn, batch)
        for event in batch.refused:
            INPUTS_REFUSED.labels(event.refused_type).inc()
        for event in derived:
            if isinstance(event, SpcRuleViolated):
                RULE_VIOLATIONS.labels(event.chart, str(event.rule)).inc()
            elif isinstance(event, LotHeld):
                LOTS_HELD.inc()
        values = sum(len(s.values) for _, _, s in batch.subgroups)
        if values:
            INSPECTION_VALUES.inc(values)
        return derived


# -- loading -------------------------------------------------------------------------------------------


async def load(conn: AsyncConnection, batch: BatchState, events: Sequence[Event]) -> None:
    plan_ids: set[str] = set()
    defined: set[str] = set()
    products: set[str] = set()
    progress_keys: set[tuple[str, str]] = set()
    chart_keys: set[tuple[str, str]] = set()
    lot_ids: set[str] = set()
    stats_keys: set[tuple[str, str, str, datetime]] = set()
    for e in events:
        if isinstance(e, InspectionRecorded):
            plan_ids.add(e.plan_id)
            chart_keys.add((e.plan_id, e.characteristic_id))
            if e.lot_id is not None:
                lot_ids.add(e.lot_id)
            for period, start in period_starts(e.occurred_at):
                stats_keys.add((e.plan_id, e.characteristic_id, period, start))
        elif isinstance(e, ProductionReported):
            products.add(e.product_id)
            progress_keys.add((e.order_id, e.operation))
        elif isinstance(e, OrderStarted):
            products.add(e.product_id)
        elif isinstance(e, LotDispositioned):
            lot_ids.add(e.lot_id)
        elif isinstance(e, InspectionPlanDefined):
            defined.add(e.plan_id)
            products.add(e.product_id)
    plan_ids |= defined
    await load_plans(conn, batch, sorted(plan_ids), sorted(products))
    await load_progress(conn, batch, sorted(progress_keys))
    await load_charts(conn, batch, sorted(chart_keys), sorted(defined))
    await load_lots(conn, batch, sorted(lot_ids))
    await load_stats(conn, batch, sorted(stats_keys), sorted(defined))


async def load_plans(conn: AsyncConnection, batch: BatchState, plan_ids: list[str], products: list[str]) -> None:
    batch.plans.update(dict.fromkeys(plan_ids))
    for product in products:
        batch.plans_by_product.setdefault(product, set())
    if not plan_ids and not products:
        return
    rows = await conn.execute(text("""
        SELECT p.plan_id, p.product_id, p.operation, p.occurred_at, c.characteristic_id, c.name, c.kind, c.lsl, c.usl,
               c.target, c.sigma, c.unit, c.sample_size, c.every_n_parts, c.sampling
        FROM plans p LEFT JOIN characteristics c USING (plan_id)
        WHERE p.plan_id = ANY(:ids) OR p.product_id = ANY(:products)
        ORDER BY p.plan_id, c.characteristic_id"""), {"ids": plan_ids, "products": products})
    for r in rows:
        plan = batch.plans.get(r.plan_id)
        if plan is None:
            plan = batch.plans[r.plan_id] = Plan(r.plan_id, r.product_id, r.operation, r.occurred_at, {})
            batch.plans_by_product.setdefault(r.product_id, set()).add(r.plan_id)
        if r.characteristic_id is not None:
            plan.characteristics[r.characteristic_id] = Characteristic(
                characteristic_id=r.characteristic_id, name=r.name, kind=r.kind, lsl=r.lsl, usl=r.usl, target=r.target,
                sigma=r.sigma, unit=r.unit, sample_size=r.sample_size, every_n_parts=r.every_n_parts, sampling=r.sampling)


async def load_progress(conn: AsyncConnection, batch: BatchState, keys: list[tuple[str, str]]) -> None:
    batch.progress.update(dict.fromkeys(keys))
    if not keys:
        return
    rows = await conn.execute(text("""
        SELECT p.order_id, p.operation, p.parts, p.lots FROM order_progress p
        JOIN unnest(CAST(:orders AS text[]), CAST(:ops AS text[])) AS k(order_id, operation) USING (order_id, operation)
        ORDER BY 1, 2 FOR UPDATE OF p"""), {"orders": [k[0] for k in keys], "ops": [k[1] for k in keys]})
    for r in rows:
        batch.progress[(r.order_id, r.operation)] = Progress(r.order_id, r.operation, r.parts, set(r.lots))


def _limits(r) -> spc.Limits | None:
    if r.centre is None:
        return None
    return spc.Limits(version=r.version, source=r.source, subgroup_size=r.subgroup_size, centre=r.centre, sigma=r.sigma,
                      ucl=r.ucl, lcl=r.lcl, range_centre=r.range_centre, range_ucl=r.range_ucl, range_lcl=r.range_lcl,
                      within_sigma=r.within_sigma, baseline_subgroups=r.baseline_subgroups, target=r.target,
                      plan_sigma=r.plan_sigma)


async def load_charts(conn: AsyncConnection, batch: BatchState, keys: list[tuple[str, str]], plans: list[str]) -> None:
    batch.charts.update(dict.fromkeys(keys))
    if not keys and not plans:
        return
    rows = await conn.execute(text("""
        SELECT c.plan_id, c.characteristic_id, c.subgroup_size, c.points, c.version, c.versions, c.tail, c.holding,
               c.range_holding, c.last_value, l.source, l.centre, l.sigma, l.ucl, l.lcl, l.range_centre, l.range_ucl,
               l.range_lcl, l.within_sigma, l.baseline_subgroups, l.target, l.plan_sigma
        FROM charts c
        LEFT JOIN control_limits l ON l.plan_id = c.plan_id AND l.characteristic_id = c.characteristic_id
                                   AND l.version = c.version
        WHERE (c.plan_id, c.characteristic_id) IN (
                SELECT * FROM unnest(CAST(:plan_ids AS text[]), CAST(:chars AS text[])))
           OR c.plan_id = ANY(:plans)
        ORDER BY 1, 2 FOR UPDATE OF c"""), {"plan_ids": [k[0] for k in keys], "chars": [k[1] for k in keys],
                                            "plans": plans})
    needs_history: list[tuple[str, str]] = []
    redefined = set(plans)
    for r in rows:
        chart = Chart(r.plan_id, r.characteristic_id, r.subgroup_size, r.points, _limits(r), r.versions,
                      spc.Tail(tuple(r.tail), r.holding, r.range_holding), r.last_value)
        batch.charts[(r.plan_id, r.characteristic_id)] = chart
        if chart.limits is None or r.plan_id in redefined:
            chart.history = []
            needs_history.append((r.plan_id, r.characteristic_id))
    if needs_history:
        rows = await conn.execute(text("""
            SELECT g.plan_id, g.characteristic_id, g.point, g.event_id, g.occurred_at, g.sample_values, g.mean, g.range,
                   g.equipment_id, g.order_id, g.lot_id
            FROM inspection_results g
            JOIN unnest(CAST(:plan_ids AS text[]), CAST(:chars AS text[])) AS k(plan_id, characteristic_id)
                 USING (plan_id, characteristic_id)
            WHERE g.point IS NOT NULL
            ORDER BY g.plan_id, g.characteristic_id, g.point"""),
            {"plan_ids": [k[0] for k in needs_history], "chars": [k[1] for k in needs_history]})
        for r in rows:
            batch.charts[(r.plan_id, r.characteristic_id)].history.append(Subgroup(  # type: ignore[union-attr]
                r.point, r.event_id, r.occurred_at, tuple(r.sample_values), r.mean, r.range, r.equipment_id, r.order_id,
                r.lot_id))


async def load_lots(conn: AsyncConnection, batch: BatchState, lot_ids: list[str]) -> None:
    batch.lots.update(dict.fromkeys(lot_ids))
    if not lot_ids:
        return
    rows = await conn.execute(text("""SELECT * FROM lots WHERE lot_id = ANY(:ids) ORDER BY lot_id FOR UPDATE"""),
                              {"ids": lot_ids})
    for r in rows:
        batch.lots[r.lot_id] = Lot(r.lot_id, r.status, list(r.open_nonconformances), r.holds, r.reworked)


async def load_stats(conn: AsyncConnection, batch: BatchState, keys: list[tuple[str, str, str, datetime]],
                     plans: list[str]) -> None:
    batch.stats.update(dict.fromkeys(keys))
    if not keys and not plans:
        return
    rows = await conn.execute(text("""
        SELECT s.* FROM capability_stats s
        WHERE (s.plan_id, s.characteristic_id, s.period, s.period_start) IN (
                SELECT * FROM unnest(CAST(:p AS text[]), CAST(:c AS text[]), CAST(:k AS text[]),
                                     CAST(:s AS timestamptz[])))
           OR s.plan_id = ANY(:plans)
        ORDER BY 1, 2, 3, 4 FOR UPDATE OF s"""),
        {"p": [k[0] for k in keys], "c": [k[1] for k in keys], "k": [k[2] for k in keys], "s": [k[3] for k in keys],
         "plans": plans})
    for r in rows:
        batch.stats[(r.plan_id, r.characteristic_id, r.period, r.period_start)] = capability.Stats(
            r.subgroup_size, capability.Moments(r.n_values, r.mean, r.m2), r.subgroups, r.range_sum, r.ranges,
            capability.Moments(r.machine_values, r.machine_mean, r.machine_m2))


# -- writing -------------------------------------------------------------------------------------------


async def upsert(conn: AsyncConnection, table: str, columns: dict[str, str], key: Sequence[str], rows: list[tuple]) -> None:
    """Insert or update rows (tuples in `columns` order; `columns` maps each column to its SQL type)."""
    if not rows:
        return
    names = list(columns)
    # an array column travels as its text literal and is cast back in the select list
    unnest = ", ".join(f"CAST(:{c} AS {'text' if t.endswith('[]') else t}[])" for c, t in columns.items())
    select = ", ".join(f"CAST(u.{c} AS {t})" if t.endswith("[]") else f"u.{c}" for c, t in columns.items())
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in key)
    await conn.execute(
        text(f"""INSERT INTO {table} ({", ".join(names)}) SELECT {select} FROM unnest({unnest}) AS u({", ".join(names)})
                 ON CONFLICT ({", ".join(key)}) DO UPDATE SET {updates}"""),
        {c: [row[i] for row in rows] for i, c in enumerate(names)})


async def save(conn: AsyncConnection, batch: BatchState) -> None:
    await save_plans(conn, batch)
    if batch.orders:
        orders = sorted(batch.orders.items())
        await upsert(conn, "order_products", {"order_id": "text", "product_id": "text"}, ["order_id"], orders)
    progress = [batch.progress[k] for k in sorted(batch.changed_progress)]
    await upsert(conn, "order_progress", {"order_id": "text", "operation": "text", "parts": "bigint", "lots": "text[]"},
                 ["order_id", "operation"],
                 [(p.order_id, p.operation, p.parts, "{" + ",".join(_array_item(x) for x in sorted(p.lots)) + "}")
                  for p in progress if p is not None])
    await copy_rows(conn, "inspection_dues", (
        "due_id", "plan_id", "characteristic_id", "product_id", "operation", "order_id", "lot_id", "equipment_id", "reason",
        "parts_produced", "sample_size", "due_at", "recorded_at", "caused_by"),
        [(d.event_id, d.plan_id, d.characteristic_id, d.product_id, d.operation, d.order_id, d.lot_id, d.equipment_id,
          d.reason, d.parts_produced, d.sample_size, d.occurred_at, d.recorded_at, d.caused_by) for d in batch.dues])
    await copy_rows(conn, "production_facts", ("event_id", "equipment_id", "order_id", "product_id", "occurred_at",
                                               "produced", "scrap", "rework"),
                    [(p.event_id, p.equipment_id, p.order_id, p.product_id, p.occurred_at, p.produced, p.scrap, p.rework)
                     for p in batch.production])
    await copy_rows(conn, "inspection_results", (
        "event_id", "plan_id", "characteristic_id", "equipment_id", "order_id", "lot_id", "product_id", "occurred_at",
        "recorded_at", "kind", "sample_values", "mean", "range", "passed", "values_outside", "inspected", "good",
        "first_pass", "nonconformance_id", "point"),
        [(i.event.event_id, i.event.plan_id, i.event.characteristic_id, i.event.equipment_id, i.event.order_id,
          i.event.lot_id, i.product_id, i.event.occurred_at, i.event.recorded_at, i.kind,
          None if i.event.values is None else _float_array(i.event.values), i.mean, i.range, i.event.passed,
          i.values_outside, i.inspected, i.good, i.first_pass, i.nonconformance_id, i.point) for i in batch.inspections])
    await copy_rows(conn, "control_limits", (
        "plan_id", "characteristic_id", "version", "source", "subgroup_size", "centre", "sigma", "ucl", "lcl",
        "range_centre", "range_ucl", "range_lcl", "within_sigma", "baseline_subgroups", "target", "plan_sigma",
        "defined_at", "caused_by"),
        [(p, c, m.version, m.source, m.subgroup_size, m.centre, m.sigma, m.ucl, m.lcl, m.range_centre, m.range_ucl,
          m.range_lcl, m.within_sigma, m.baseline_subgroups, m.target, m.plan_sigma, at, by)
         for p, c, m, at, by in batch.limits])
    await copy_rows(conn, "spc_point_rows", ("plan_id", "characteristic_id", "point", "version", "rules_holding",
                                             "rules_fired", "range_beyond"),
                    [(r.plan_id, r.characteristic_id, r.point, r.version, r.holding, r.fired, r.range_beyond)
                     for r in batch.points])
    charts = [batch.charts[k] for k in sorted(batch.changed_charts)]
    await upsert(conn, "charts", {
        "plan_id": "text", "characteristic_id": "text", "subgroup_size": "integer", "points": "bigint",
        "version": "integer", "versions": "integer", "tail": "double precision[]", "holding": "integer", "range_holding": "boolean",
        "last_value": "double precision"}, ["plan_id", "characteristic_id"],
        [(c.plan_id, c.characteristic_id, c.subgroup_size, c.points, c.limits.version if c.limits else 0, c.versions,
          _float_array(c.tail.points), c.tail.holding, c.tail.range_holding, c.last_value)
         for c in charts if c is not None])
    await save_stats(conn, batch)
    await save_nonconformances(conn, batch)
    await copy_rows(conn, "refusals", ("event_id", "event_type", "subject_id", "reason", "occurred_at", "recorded_at"),
                    [(r.caused_by, r.refused_type, r.subject_id, r.reason, r.occurred_at, r.recorded_at)
                     for r in batch.refused])


def _float_array(values) -> str:
    """An array literal of exact doubles (repr round-trips), written as text: much cheaper than a list."""
    return "{" + ",".join(repr(float(v)) for v in values) + "}"


def _array_item(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def save_plans(conn: AsyncConnection, batch: BatchState) -> None:
    plans = [batch.plans[p] for p in sorted(batch.changed_plans)]
    plans = [p for p in plans if p is not None]
    if not plans:
        return
    await upsert(conn, "plans", {"plan_id": "text", "product_id": "text", "operation": "text", "occurred_at": "timestamptz"},
                 ["plan_id"], [(p.plan_id, p.product_id, p.operation, p.occurred_at) for p in plans])
    await conn.execute(text("DELETE FROM characteristics WHERE plan_id = ANY(:ids)"), {"ids": [p.plan_id for p in plans]})
    await copy_rows(conn, "characteristics", ("plan_id", "characteristic_id", "name", "kind", "lsl", "usl", "target", "sigma",
                                              "unit", "sample_size", "every_n_parts", "sampling"),
                    [(p.plan_id, c.characteristic_id, c.name, c.kind, c.lsl, c.usl, c.target, c.sigma, c.unit,
                      c.sample_size, c.every_n_parts, c.sampling)
                     for p in plans for c in sorted(p.characteristics.values(), key=lambda c: c.characteristic_id)])


async def save_stats(conn: AsyncConnection, batch: BatchState) -> None:
    rows = []
    for key in sorted(batch.changed_stats):
        stats = batch.stats[key]
        if stats is None:
            continue
        plan = batch.plans.get(key[0])
        c = plan.characteristics.get(key[1]) if plan is not None else None
        lsl, usl = (c.lsl, c.usl) if c is not None else (None, None)
        found = capability.indices(stats, lsl, usl)
        rows.append((*key, stats.subgroup_size, stats.values.count, stats.values.mean, stats.values.m2, stats.subgroups,
                     stats.range_sum, stats.ranges, stats.machine.count, stats.machine.mean, stats.machine.m2, lsl, usl,
                     stats.within_sigma(), stats.values.stdev(), stats.machine.stdev(),
                     found.cp, found.cpk, found.pp, found.ppk, found.cm, found.cmk))
    double = "double precision"
    await upsert(conn, "capability_stats", {
        "plan_id": "text", "characteristic_id": "text", "period": "text", "period_start": "timestamptz",
        "subgroup_size": "integer", "n_values": "bigint", "mean": double, "m2": double, "subgroups": "bigint",
        "range_sum": double, "ranges": "bigint", "machine_values": "bigint", "machine_mean": double, "machine_m2": double,
        "lsl": double, "usl": double, "sigma_within": double, "sigma_overall": double, "sigma_machine": double,
        "cp": double, "cpk": double, "pp": double, "ppk": double, "cm": double, "cmk": double},
        ["plan_id", "characteristic_id", "period", "period_start"], rows)


async def save_nonconformances(conn: AsyncConnection, batch: BatchState) -> None:
    await copy_rows(conn, "nonconformance_rows", ("nonconformance_id", "plan_id", "characteristic_id", "lot_id",
                                                  "equipment_id", "order_id", "reason", "values_outside", "opened_at",
                                                  "caused_by"),
                    [(n.nonconformance_id, n.plan_id, n.characteristic_id, n.lot_id, n.equipment_id, n.order_id, n.reason,
                      n.values_outside, n.occurred_at, n.caused_by) for n in batch.opened])
    if batch.closed:
        await conn.execute(
            text("""UPDATE nonconformance_rows n SET closed_at = c.at, disposition = c.disposition, closed_by = c.by
                    FROM unnest(CAST(:ids AS text[]), CAST(:at AS timestamptz[]), CAST(:disp AS text[]),
                                CAST(:by AS text[])) AS c(id, at, disposition, by)
                    WHERE n.nonconformance_id = c.id"""),
            {"ids": [c.nonconformance_id for c in batch.closed], "at": [c.occurred_at for c in batch.closed],
             "disp": [c.disposition for c in batch.closed], "by": [c.caused_by for c in batch.closed]})
    lots = [batch.lots[k] for k in sorted(batch.changed_lots)]
    await upsert(conn, "lots", {"lot_id": "text", "status": "text", "open_nonconformances": "text[]", "holds": "integer",
                                "reworked": "boolean"}, ["lot_id"],
                 [(lot.lot_id, lot.status, "{" + ",".join(_array_item(x) for x in lot.open_ncs) + "}", lot.holds,
                   lot.reworked) for lot in lots if lot is not None])
    await copy_rows(conn, "hold_rows", ("lot_id", "hold_no", "held_at", "nonconformance_id", "equipment_id", "order_id",
                                        "caused_by"),
                    [(h.lot_id, h.hold_no, h.at, h.nonconformance_id, h.equipment_id, h.order_id, h.caused_by)
                     for h in batch.holds_opened])
    if batch.holds_ended:
        ended = batch.holds_ended
        await conn.execute(
            text("""UPDATE hold_rows h SET ended_at = e.at, outcome = e.outcome, ended_by = e.by
                    FROM unnest(CAST(:lots AS text[]), CAST(:nos AS integer[]), CAST(:at AS timestamptz[]),
                                CAST(:outcomes AS text[]), CAST(:by AS text[])) AS e(lot_id, hold_no, at, outcome, by)
                    WHERE h.lot_id = e.lot_id AND h.hold_no = e.hold_no"""),
            {"lots": [h.lot_id for h in ended], "nos": [h.hold_no for h in ended], "at": [h.at for h in ended],
             "outcomes": [h.outcome for h in ended], "by": [h.caused_by for h in ended]})
