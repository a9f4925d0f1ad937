"""Maintenance's tables and how a batch changes them.

Per batch: load what the events touch (unit states and their active alarms, runtime totals, plans of
those units, condition states, the work orders reported on), fold the events through the pure
handlers, then write each changed row once with set-based statements. Derived events go back to the
loop, which puts them in the outbox in the same transaction: a due, a work order or a lockout is
emitted exactly when the row that records it is first written.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.maintenance.events import (
    DowntimeEnded,
    DowntimeStarted,
    Event,
    MaintenanceInputRefused,
    MaintenancePlanDefined,
    MaintenanceWorkReported,
    PreventiveMaintenanceDue,
    WorkOrderOpened,
)
from services.maintenance.handlers import fold
from services.maintenance.model import (
    Alarm,
    BatchState,
    ConditionState,
    Plan,
    Rules,
    RuntimeTotals,
    UnitState,
    WorkOrder,
    apply_parked,
)

REFUSED = Counter("mom_maintenance_inputs_refused_total",
                  "Input events maintenance refused (MaintenanceInputRefused), by event type.", ["event_type"])
LATE = Counter("mom_maintenance_late_events_total",
               "Machine events older than their unit's latest event time: not applied to failures or conditions.",
               ["event_type"])
UNMATCHED_CLEARS = Counter("mom_maintenance_unmatched_alarm_clears_total",
                           "AlarmCleared events for an alarm that was not active.")
WORK_ORDERS_OPENED = Counter("mom_maintenance_work_orders_opened_total", "Work orders opened, by kind.", ["kind"])
DUES = Counter("mom_maintenance_preventive_dues_total", "Preventive maintenance thresholds crossed, by trigger kind.",
               ["trigger_kind"])


class MaintenanceProjector:
    def __init__(self, rules: Rules | None = None) -> None:
        self.rules = rules or Rules()

    async def apply(self, conn: AsyncConnection, events: Sequence[Event]) -> list[Event]:
        units = sorted({e.equipment_id for e in events if hasattr(e, "equipment_id")})  # type: ignore[attr-defined]
        plan_ids = sorted({e.plan_id for e in events if isinstance(e, MaintenancePlanDefined)})
        order_ids = sorted({e.work_order_id for e in events if isinstance(e, MaintenanceWorkReported)})
        batch = BatchState(rules=self.rules)
        await load_units(conn, batch, units)
        await load_runtime(conn, batch, units)
        await load_plans(conn, batch, units, plan_ids)
        await load_conditions(conn, batch, units)
        await load_work_orders(conn, batch, order_ids)
        await load_history(conn, batch, [e for e in events if isinstance(e, MaintenancePlanDefined)])
        derived = fold(batch, events)
        derived.extend(await apply_pending(conn, batch))
        await save(conn, batch)
        for late in batch.late:
            LATE.labels(type(late).__name__).inc()
        if batch.unmatched_clears:
            UNMATCHED_CLEARS.inc(batch.unmatched_clears)
        for event in derived:
            if isinstance(event, MaintenanceInputRefused):
                REFUSED.labels(event.refused_event_type).inc()
            elif isinstance(event, WorkOrderOpened):
                WORK_ORDERS_OPENED.labels(event.kind).inc()
            elif isinstance(event, PreventiveMaintenanceDue):
                DUES.labels(event.trigger_kind).inc()
        return derived


# -- loading -------------------------------------------------------------------------------------------


async def load_units(conn: AsyncConnection, batch: BatchState, units: list[str]) -> None:
    if not units:
        return
    for r in await conn.execute(text("""SELECT * FROM unit_state WHERE equipment_id = ANY(:ids)
                                          ORDER BY equipment_id FOR UPDATE"""), {"ids": units}):
        batch.units[r.equipment_id] = UnitState(
            r.equipment_id, r.state, r.accounted_until, r.clock, r.operating_us, r.operating_at_restore, r.stop_start,
            r.stop_reason, r.stop_alarm, r.stop_ttf_us, r.failure_id)
    for r in await conn.execute(text("""SELECT * FROM alarm_log WHERE equipment_id = ANY(:ids) AND cleared_at IS NULL
                                          ORDER BY equipment_id, raised_at, alarm_code"""), {"ids": units}):
        unit = batch.units.get(r.equipment_id)
        if unit is not None:
            unit.active_alarms[r.alarm_code] = Alarm(r.equipment_id, r.alarm_code, r.severity, r.text, r.raised_at,
                                                     r.raised_event_id)


async def load_runtime(conn: AsyncConnection, batch: BatchState, units: list[str]) -> None:
    if units:
        for r in await conn.execute(text("""SELECT * FROM unit_runtime WHERE equipment_id = ANY(:ids)
                                              ORDER BY equipment_id FOR UPDATE"""), {"ids": units}):
            batch.runtime[r.equipment_id] = RuntimeTotals(r.equipment_id, r.through, r.runtime_us, r.cycles)


async def load_plans(conn: AsyncConnection, batch: BatchState, units: list[str], plan_ids: list[str]) -> None:
    if not (units or plan_ids):
        return
    for r in await conn.execute(text("""SELECT * FROM plans WHERE equipment_id = ANY(:units) OR plan_id = ANY(:plans)
                                          ORDER BY plan_id FOR UPDATE"""), {"units": units, "plans": plan_ids}):
        batch.plans[r.plan_id] = Plan(r.plan_id, r.equipment_id, r.task, r.kind, r.interval_s, r.hours, r.cycles,
                                      r.defined_at, r.revision, r.base_runtime_us, r.base_cycles, r.dues)


async def load_conditions(conn: AsyncConnection, batch: BatchState, units: list[str]) -> None:
    if batch.rules.condition_limits and units:
        for r in await conn.execute(text("""SELECT * FROM condition_state WHERE equipment_id = ANY(:ids)
                                              ORDER BY equipment_id, parameter FOR UPDATE"""), {"ids": units}):
            batch.conditions[(r.equipment_id, r.parameter)] = ConditionState(
                r.equipment_id, r.parameter, r.excursion_since, r.direction, r.worst_value, r.work_order_id)


async def load_work_orders(conn: AsyncConnection, batch: BatchState, order_ids: list[str]) -> None:
    if order_ids:
        for r in await conn.execute(text("""SELECT * FROM work_order_state WHERE work_order_id = ANY(:ids)
                                              ORDER BY work_order_id FOR UPDATE"""), {"ids": order_ids}):
            batch.work_orders[r.work_order_id] = WorkOrder(
                r.work_order_id, r.kind, r.equipment_id, r.status, r.opened_at, r.description, r.failure_id, r.plan_id,
                r.due_index, r.alarm_code, r.reason_code, r.started_at, r.completed_at, r.technician_id, r.locked_out)


async def load_history(conn: AsyncConnection, batch: BatchState, plans: list[MaintenancePlanDefined]) -> None:
    """For plans defined in the batch: their unit's last runtime fact by the definition and every later one."""
    if not plans:
        return
    rows = await conn.execute(text("""
        SELECT DISTINCT f.equipment_id, f.period_end, f.runtime_us, f.cycles
        FROM unnest(CAST(:u AS text[]), CAST(:at AS timestamptz[])) AS p(u, at)
        JOIN LATERAL (
            (SELECT * FROM runtime_facts WHERE equipment_id = p.u AND period_end <= p.at ORDER BY period_end DESC LIMIT 1)
            UNION ALL
            (SELECT * FROM runtime_facts WHERE equipment_id = p.u AND period_end > p.at)) f ON true
        ORDER BY f.equipment_id, f.period_end"""),
        {"u": [p.equipment_id for p in plans], "at": [p.occurred_at for p in plans]})
    for r in rows:
        batch.history.setdefault(r.equipment_id, []).append(RuntimeTotals(r.equipment_id, r.period_end, r.runtime_us, r.cycles))


async def apply_pending(conn: AsyncConnection, batch: BatchState) -> list[Event]:
    """Reports kept earlier (or in this batch) for the orders this batch opened: applied now, then forgotten."""
    if not batch.opened:
        return []
    opened = set(batch.opened)
    reports = [r for r in batch.parked if r.work_order_id in opened]
    batch.parked = [r for r in batch.parked if r.work_order_id not in opened]
    rows = (await conn.execute(text("""DELETE FROM pending_work_reports WHERE work_order_id = ANY(:ids)
                                       RETURNING *"""), {"ids": sorted(opened)})).all()
    reports += [MaintenanceWorkReported(event_id=r.event_id, occurred_at=r.occurred_at, recorded_at=r.recorded_at,
                                        source=r.source, correlation_id=r.correlation_id, work_order_id=r.work_order_id,
                                        status=r.status, technician_id=r.technician_id) for r in rows]
    return apply_parked(batch, reports) if reports else []


# -- writing -------------------------------------------------------------------------------------------


def _upsert(table: str, key: Sequence[str], columns: dict[str, str], *, update: Sequence[str] | None = None) -> str:
    """INSERT ... SELECT FROM unnest(arrays) ON CONFLICT (key) DO UPDATE: one statement for many rows."""
    names = list(columns)
    unnest = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in columns.items())
    changed = [c for c in (update if update is not None else names) if c not in key]
    action = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in changed)) if changed else "DO NOTHING"
    return (f"INSERT INTO {table} ({', '.join(names)}) SELECT * FROM unnest({unnest}) "
            f"ON CONFLICT ({', '.join(key)}) {action}")


def _columns(rows: list[tuple], names: Sequence[str]) -> dict[str, list]:
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


UNIT_COLUMNS = {"equipment_id": "text", "state": "text", "accounted_until": "timestamptz", "clock": "timestamptz",
                "operating_us": "bigint", "operating_at_restore": "bigint", "stop_start": "timestamptz",
                "stop_reason": "text", "stop_alarm": "text", "stop_ttf_us": "bigint", "failure_id": "text"}
FAILURE_COLUMNS = {"failure_id": "text", "equipment_id": "text", "started_at": "timestamptz",
                   "restored_at": "timestamptz", "reason_code": "text", "alarm_code": "text", "ttf_us": "bigint",
                   "ttr_us": "bigint", "work_order_id": "text", "confirmed_at": "timestamptz"}
ORDER_COLUMNS = {"work_order_id": "text", "kind": "text", "equipment_id": "text", "status": "text",
                 "opened_at": "timestamptz", "description": "text", "failure_id": "text", "plan_id": "text",
                 "due_index": "integer", "alarm_code": "text", "reason_code": "text", "started_at": "timestamptz",
                 "completed_at": "timestamptz", "technician_id": "text", "locked_out": "boolean"}
PLAN_COLUMNS = {"plan_id": "text", "equipment_id": "text", "task": "text", "kind": "text",
                "interval_s": "double precision", "hours": "double precision", "cycles": "bigint",
                "defined_at": "timestamptz", "revision": "integer", "base_runtime_us": "bigint", "base_cycles": "bigint",
                "dues": "integer"}
DUE_COLUMNS = {"plan_id": "text", "revision": "integer", "due_index": "integer", "equipment_id": "text",
               "trigger_kind": "text", "due_at": "timestamptz", "due_runtime_h": "double precision",
               "due_cycles": "bigint", "crossed_at": "timestamptz", "work_order_id": "text"}
CONDITION_COLUMNS = {"equipment_id": "text", "parameter": "text", "excursion_since": "timestamptz",
                     "direction": "text", "worst_value": "double precision", "work_order_id": "text"}
DOWNTIME_COLUMNS = {"equipment_id": "text", "started_at": "timestamptz", "state": "text", "reason_at_start": "text",
                    "reason_at_end": "text", "classification": "text", "ended_at": "timestamptz"}


async def save(conn: AsyncConnection, batch: BatchState) -> None:
    units = [batch.units[u] for u in sorted(batch.changed_units)]
    if units:
        rows = [(u.equipment_id, u.state, u.accounted_until, u.clock, u.operating_us, u.operating_at_restore,
                 u.stop_start, u.stop_reason, u.stop_alarm, u.stop_ttf_us, u.failure_id) for u in units]
        await conn.execute(text(_upsert("unit_state", ["equipment_id"], UNIT_COLUMNS)), _columns(rows, list(UNIT_COLUMNS)))
    await save_alarms(conn, batch.new_alarms, batch.cleared_alarms)
    if batch.failures:
        failures = [batch.failures[f] for f in sorted(batch.failures)]
        rows = [(f.failure_id, f.equipment_id, f.started_at, f.restored_at, f.reason_code, f.alarm_code, f.ttf_us,
                 f.ttr_us, f.work_order_id, f.confirmed_at) for f in failures]
        # a failure confirmed in an earlier batch only gains its restoration here
        await conn.execute(text(_upsert("failure_log", ["failure_id"], FAILURE_COLUMNS, update=["restored_at", "ttr_us"])),
                           _columns(rows, list(FAILURE_COLUMNS)))
    orders = [batch.work_orders[o] for o in sorted(batch.changed_work_orders)]
    if orders:
        rows = [(o.work_order_id, o.kind, o.equipment_id, o.status, o.opened_at, o.description, o.failure_id, o.plan_id,
                 o.due_index, o.alarm_code, o.reason_code, o.started_at, o.completed_at, o.technician_id, o.locked_out)
                for o in orders if o is not None]
        await conn.execute(text(_upsert("work_order_state", ["work_order_id"], ORDER_COLUMNS)),
                           _columns(rows, list(ORDER_COLUMNS)))
    plans = [batch.plans[p] for p in sorted(batch.changed_plans)]
    if plans:
        rows = [(p.plan_id, p.equipment_id, p.task, p.kind, p.interval_s, p.hours, p.cycles, p.defined_at, p.revision,
                 p.base_runtime_us, p.base_cycles, p.dues) for p in plans if p is not None]
        await conn.execute(text(_upsert("plans", ["plan_id"], PLAN_COLUMNS)), _columns(rows, list(PLAN_COLUMNS)))
    if batch.dues:
        rows = [(d.plan.plan_id, d.plan.revision, d.index, d.plan.equipment_id, d.plan.kind, d.due_at, d.due_runtime_h,
                 d.due_cycles, d.crossed_at, d.work_order_id) for d in batch.dues]
        await conn.execute(text(_upsert("pm_dues", ["plan_id", "revision", "due_index"], DUE_COLUMNS, update=[])),
                           _columns(rows, list(DUE_COLUMNS)))
    runtime = [batch.runtime[u] for u in sorted(batch.changed_runtime)]
    if runtime:
        await conn.execute(
            text("""INSERT INTO unit_runtime (equipment_id, through, runtime_us, cycles)
                    SELECT * FROM unnest(CAST(:u AS text[]), CAST(:t AS timestamptz[]), CAST(:r AS bigint[]),
                                         CAST(:c AS bigint[]))
                    ON CONFLICT (equipment_id) DO UPDATE SET through = excluded.through,
                        runtime_us = excluded.runtime_us, cycles = excluded.cycles"""),
            {"u": [r.equipment_id for r in runtime if r], "t": [r.through for r in runtime if r],
             "r": [r.runtime_us for r in runtime if r], "c": [r.cycles for r in runtime if r]})
    if batch.operating:
        keys = sorted(batch.operating)
        await conn.execute(
            text("""INSERT INTO operating_time (equipment_id, day, operating_us)
                    SELECT * FROM unnest(CAST(:u AS text[]), CAST(:d AS date[]), CAST(:us AS bigint[]))
                    ON CONFLICT (equipment_id, day) DO UPDATE
                        SET operating_us = operating_time.operating_us + excluded.operating_us"""),
            {"u": [k[0] for k in keys], "d": [k[1] for k in keys], "us": [batch.operating[k] for k in keys]})
    conditions = [batch.conditions[k] for k in sorted(batch.changed_conditions)]
    if conditions:
        rows = [(c.equipment_id, c.parameter, c.excursion_since, c.direction, c.worst_value, c.work_order_id)
                for c in conditions]
        await conn.execute(text(_upsert("condition_state", ["equipment_id", "parameter"], CONDITION_COLUMNS)),
                           _columns(rows, list(CONDITION_COLUMNS)))
    await save_downtime(conn, batch.downtime)
    if batch.new_runtime_facts:
        facts = batch.new_runtime_facts
        await conn.execute(
            text("""INSERT INTO runtime_facts (equipment_id, period_end, runtime_us, cycles)
                    SELECT * FROM unnest(CAST(:u AS text[]), CAST(:t AS timestamptz[]), CAST(:r AS bigint[]),
                                         CAST(:c AS bigint[]))
                    ON CONFLICT DO NOTHING"""),
            {"u": [f.equipment_id for f in facts], "t": [f.through for f in facts], "r": [f.runtime_us for f in facts],
             "c": [f.cycles for f in facts]})
    if batch.parked:
        reports = batch.parked
        await conn.execute(
            text("""INSERT INTO pending_work_reports (event_id, work_order_id, status, technician_id, occurred_at,
                                                      recorded_at, source, correlation_id)
                    SELECT * FROM unnest(CAST(:e AS text[]), CAST(:w AS text[]), CAST(:s AS text[]), CAST(:t AS text[]),
                                         CAST(:o AS timestamptz[]), CAST(:r AS timestamptz[]), CAST(:src AS text[]),
                                         CAST(:c AS text[]))
                    ON CONFLICT DO NOTHING"""),
            {"e": [r.event_id for r in reports], "w": [r.work_order_id for r in reports],
             "s": [r.status for r in reports], "t": [r.technician_id for r in reports],
             "o": [r.occurred_at for r in reports], "r": [r.recorded_at for r in reports],
             "src": [r.source for r in reports], "c": [r.correlation_id for r in reports]})


async def save_alarms(conn: AsyncConnection, raised: list[Alarm], cleared: list[Alarm]) -> None:
    # An alarm raised and cleared in one batch is written once, already cleared.
    cleared_at = {(a.equipment_id, a.alarm_code, a.raised_at): a.cleared_at for a in cleared}
    if raised:
        await conn.execute(
            text("""INSERT INTO alarm_log (equipment_id, alarm_code, raised_at, severity, text, raised_event_id, cleared_at)
                    SELECT * FROM unnest(CAST(:u AS text[]), CAST(:c AS text[]), CAST(:r AS timestamptz[]),
                                         CAST(:s AS text[]), CAST(:t AS text[]), CAST(:e AS text[]),
                                         CAST(:x AS timestamptz[]))
                    ON CONFLICT DO NOTHING"""),
            {"u": [a.equipment_id for a in raised], "c": [a.alarm_code for a in raised],
             "r": [a.raised_at for a in raised], "s": [a.severity for a in raised], "t": [a.text for a in raised],
             "e": [a.raised_event_id for a in raised],
             "x": [cleared_at.get((a.equipment_id, a.alarm_code, a.raised_at)) for a in raised]})
    if cleared:
        await conn.execute(
            text("""UPDATE alarm_log a SET cleared_at = c.x
                    FROM unnest(CAST(:u AS text[]), CAST(:c AS text[]), CAST(:r AS timestamptz[]), CAST(:x AS timestamptz[]))
                         AS c(u, code, r, x)
                    WHERE a.equipment_id = c.u AND a.alarm_code = c.code AND a.raised_at = c.r"""),
            {"u": [a.equipment_id for a in cleared], "c": [a.alarm_code for a in cleared],
             "r": [a.raised_at for a in cleared], "x": [a.cleared_at for a in cleared]})


async def save_downtime(conn: AsyncConnection, facts: list[DowntimeStarted | DowntimeEnded]) -> None:
    """Execution's stops, keyed by unit and start: the start and the end fill their own columns, so the
    row is the same whichever arrives first."""
    if not facts:
        return
    merged: dict[tuple[str, datetime], dict] = {}
    for e in facts:
        start = e.started_at if isinstance(e, DowntimeEnded) else e.occurred_at
        row = merged.setdefault((e.equipment_id, start), {"state": e.state, "reason_at_start": None, "reason_at_end": None,
                                                          "classification": None, "ended_at": None})
        row["state"] = e.state
        if isinstance(e, DowntimeEnded):
            row.update(reason_at_end=e.reason_code, classification=e.classification, ended_at=e.occurred_at)
        else:
            row["reason_at_start"] = e.reason_code
            row["classification"] = row["classification"] or e.classification
    keys = sorted(merged)
    await conn.execute(
        text("""INSERT INTO downtime_facts (equipment_id, started_at, state, reason_at_start, reason_at_end,
                                            classification, ended_at)
                SELECT * FROM unnest(CAST(:u AS text[]), CAST(:s AS timestamptz[]), CAST(:st AS text[]),
                                     CAST(:rs AS text[]), CAST(:re AS text[]), CAST(:c AS text[]),
                                     CAST(:e AS timestamptz[]))
                ON CONFLICT (equipment_id, started_at) DO UPDATE SET
                    reason_at_start = coalesce(excluded.reason_at_start, downtime_facts.reason_at_start),
                    reason_at_end = coalesce(excluded.reason_at_end, downtime_facts.reason_at_end),
                    classification = CASE WHEN excluded.ended_at IS NOT NULL THEN excluded.classification
                                          ELSE coalesce(downtime_facts.classification, excluded.classification) END,
                    ended_at = coalesce(excluded.ended_at, downtime_facts.ended_at)"""),
        {"u": [k[0] for k in keys], "s": [k[1] for k in keys], "st": [merged[k]["state"] for k in keys],
         "rs": [merged[k]["reason_at_start"] for k in keys], "re": [merged[k]["reason_at_end"] for k in keys],
         "c": [merged[k]["classification"] for k in keys], "e": [merged[k]["ended_at"] for k in keys]})
