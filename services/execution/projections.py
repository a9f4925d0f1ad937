"""Execution's tables and how a batch changes them.

Per batch: load what the events touch (orders, statuses, unit clocks), fold them through the pure
handlers, write each changed row once, then recompute every KPI period the batch touched from the
stored facts (so a period's figures are a function of the facts, whatever order they came in), and
write closed periods' versions. A handful of set-based statements per batch, whatever its size.
"""
from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.db import Int4Array, Int8Array, TextArray, TimestamptzArray, copy_rows
from services.execution import kpi, orders
from services.execution.events import (
    EquipmentLockedOut,
    Event,
    MachineStateChanged,
    OperatorSignedIn,
    PartsProduced,
    PeriodClosed,
    PeriodRevised,
    RuntimeAccumulated,
    ScrapReported,
    TransitionRefused,
)
from services.execution.handlers import fold
from services.execution.model import (
    DEFAULT_LATENESS,
    DEFAULT_MINOR_STOP,
    SERVICE,
    BatchState,
    EquipmentStatus,
)

LATE_EVENTS = Counter("mom_execution_late_events_total",
                      "Events later than the lateness behind their unit's latest event time: kept in late_events, "
                      "not applied to KPI periods.", ["event_type"])
TRANSITIONS_REFUSED = Counter("mom_execution_transitions_refused_total",
                              "Order and operation events refused as impossible transitions (TransitionRefused).",
                              ["attempted"])

CLOSED_PERIODS = Counter("mom_execution_closed_periods_total",
                         "Periods closed (version 1), by how: 'as_computed' took the figures the batch had just computed "
                         "(nothing recorded later bears on the period), 'at_cutoff' computed them again from the stored "
                         "facts as known when the closing fact was recorded.", ["how"])

ELEMENTS = ("pot", "pdot", "pbt", "apt", "asut", "adet", "adot", "aupt", "aubt", "aoet", "apat", "apwt",
            "out_of_shift", "data_gap")
US = timedelta(microseconds=1)
# kpi.Elements in field order: the time elements, ideal_time, the quantities, covered_until. Built
# positionally on the per-unit path of every batch (keywords and dataclasses.replace cost several times more).
assert tuple(f.name for f in fields(kpi.Elements)) == (*ELEMENTS, "ideal_time", "pq", "gq", "sq", "rq",
                                                       "unrated_quantity", "covered_until")


def _elements_from_us(values: Sequence[int], covered_until: datetime | None) -> kpi.Elements:
    """Elements from the stored columns (_COLUMNS: the time elements and ideal time in microseconds, then
    the quantities)."""
    n = len(ELEMENTS) + 1
    return kpi.Elements(*[timedelta(0, 0, v) for v in values[:n]], *values[n:], covered_until)
SETTLE_UNITS = 25  # units whose whole history one settle step computes
# The event types whose units' clocks a batch loads (exact types: events are final dataclasses, and a set
# lookup costs a fraction of isinstance against a union, once per event of every batch)
_MACHINE_FACTS = frozenset({MachineStateChanged, PartsProduced, ScrapReported})
WORK_UNIT = "work_unit"


class ExecutionProjector:
    def __init__(self, lateness: timedelta = DEFAULT_LATENESS, minor_stop: timedelta = DEFAULT_MINOR_STOP) -> None:
        self.lateness = lateness
        self.minor_stop = minor_stop
        self.deferring = False

    def defer(self) -> None:
        """For a replay: fold and store the facts only, and compute every period once in `settle`. Periods
        and their versions are functions of the stored facts, so the result is the same as computing them
        batch by batch, without reading each open hour's states once per batch."""
        self.deferring = True

    async def settle(self, conn: AsyncConnection, share: tuple[int, int] = (0, 1)) -> list[Event]:
        """Every period of every unit with a clock, from its first machine fact to its clock, in groups of
        units (bounded memory); the derived PeriodClosed, PeriodRevised and RuntimeAccumulated. With
        `share` (i, n), only every n-th unit from the i-th in name order: a unit's periods depend on its
        own facts and the shared calendars and hierarchy alone, so n workers can settle at once."""
        if not self.deferring:
            return []
        self.deferring = False
        clocks = {r.equipment_id: r.known_until
                  for r in await conn.execute(text("SELECT equipment_id, known_until FROM unit_clock ORDER BY 1"))}
        index, workers = share
        units = sorted(clocks)[index::workers]
        origins = await load_origins(conn, units)
        derived: list[Event] = []
        for i in range(0, len(units), SETTLE_UNITS):
            batch = BatchState(statuses={})
            for unit in units[i:i + SETTLE_UNITS]:
                batch.touch(unit, origins.get(unit) or clocks[unit], clocks[unit])
            derived.extend(await recompute_periods(conn, batch))
        return derived

    async def apply(self, conn: AsyncConnection, events: Sequence[Event]) -> list[Event]:
        units = sorted({e.equipment_id for e in events if type(e) in _MACHINE_FACTS})
        clocks, last_states, recorded_before = await load_unit_clocks(conn, units)
        batch = BatchState(
            statuses=await load_statuses(conn, sorted({e.equipment_id for e in events if type(e) is MachineStateChanged})),
            clocks=clocks,
            book=await load_book(conn, orders.keys_to_load(events)),
            lateness=self.lateness, minor_stop=self.minor_stop,
        )
        clocks_before = dict(batch.clocks)
        derived = fold(batch, events)
        await save_book(conn, batch.book)
        await save_statuses(conn, [batch.statuses[u] for u in sorted(batch.changed)])
        await save_facts(conn, batch)
        latest = latest_states(last_states, batch.state_changes)
        recorded = recorded_until(batch)
        await save_clocks(conn, {u: c for u, c in batch.clocks.items()
                                 if c is not None and (c != clocks_before.get(u) or u in recorded)},
                          {u: s for u, s in latest.items() if s != last_states.get(u)}, recorded)
        if not self.deferring:
            derived.extend(await recompute_periods(conn, batch, clocks_before, last_states, recorded_before))
        for late in batch.late:
            LATE_EVENTS.labels(type(late.event).__name__).inc()
        for event in derived:
            if isinstance(event, TransitionRefused):
                TRANSITIONS_REFUSED.labels(event.attempted).inc()
        return derived


# -- loading -------------------------------------------------------------------------------------------


async def load_statuses(conn: AsyncConnection, equipment: list[str]) -> dict[str, EquipmentStatus | None]:
    statuses: dict[str, EquipmentStatus | None] = dict.fromkeys(equipment)
    if equipment:
        rows = await conn.execute(
            text("""SELECT equipment_id, state, reason_code, since, last_event_id FROM equipment_status
                    WHERE equipment_id = ANY(:ids) ORDER BY equipment_id FOR UPDATE"""), {"ids": TextArray(equipment)})
        for r in rows:
            statuses[r.equipment_id] = EquipmentStatus(r.equipment_id, r.state, r.reason_code, r.since, r.last_event_id)
    return statuses


@dataclass(frozen=True, slots=True)
class LastState:
    """A unit's latest stored state change by event time; `state` None when two share that instant
    (their order would then be the database's collation's, so nothing is concluded from it)."""

    at: datetime
    event_id: str | None
    state: str | None


async def load_unit_clocks(conn: AsyncConnection, units: list[str]) -> tuple[dict[str, datetime | None],
                                                                           dict[str, LastState], dict[str, datetime]]:
    """Each unit's clock, its latest state change and the latest recorded_at of its stored machine facts,
    locked for this batch."""
    clocks: dict[str, datetime | None] = dict.fromkeys(units)
    last: dict[str, LastState] = {}
    recorded: dict[str, datetime] = {}
    if units:
        rows = await conn.execute(text("""SELECT equipment_id, known_until, last_state_at, last_state_event_id, last_state,
                                                 recorded_until
                                          FROM unit_clock WHERE equipment_id = ANY(:ids) ORDER BY equipment_id FOR UPDATE"""),
                                  {"ids": TextArray(units)})
        for r in rows:
            clocks[r.equipment_id] = r.known_until
            if r.last_state_at is not None:
                last[r.equipment_id] = LastState(r.last_state_at, r.last_state_event_id, r.last_state)
            if r.recorded_until is not None:
                recorded[r.equipment_id] = r.recorded_until
    return clocks, last, recorded


def recorded_until(batch: BatchState) -> dict[str, datetime]:
    """The latest recorded_at of each unit's state changes and production reports stored by this batch."""
    latest: dict[str, datetime] = {}
    for change in batch.state_changes:
        if (known := latest.get(change.equipment_id)) is None or change.recorded_at > known:
            latest[change.equipment_id] = change.recorded_at
    for fact in batch.production:
        event = fact.event
        if (known := latest.get(event.equipment_id)) is None or event.recorded_at > known:
            latest[event.equipment_id] = event.recorded_at
    return latest


def latest_states(last: dict[str, LastState], changes: Sequence[MachineStateChanged]) -> dict[str, LastState]:
    """`last` moved on by this batch's stored state changes: the latest by event time, or a tie."""
    latest = dict(last)
    for change in changes:
        known = latest.get(change.equipment_id)
        if known is None or change.occurred_at > known.at:
            latest[change.equipment_id] = LastState(change.occurred_at, change.event_id, change.state)
        elif change.occurred_at == known.at and change.event_id != known.event_id:
            latest[change.equipment_id] = LastState(known.at, None, None)
    return latest


async def load_clocks(conn: AsyncConnection, units: list[str]) -> dict[str, datetime | None]:
    clocks: dict[str, datetime | None] = dict.fromkeys(units)
    if units:
        rows = await conn.execute(text("""SELECT equipment_id, known_until FROM unit_clock
                                          WHERE equipment_id = ANY(:ids) ORDER BY equipment_id FOR UPDATE"""),
                                  {"ids": TextArray(units)})
        clocks.update({r.equipment_id: r.known_until for r in rows})
    return clocks


async def load_book(conn: AsyncConnection, keys: orders.KeysToLoad) -> orders.OrderBook:
    """Every operation of the named orders, every running operation on the named units, their orders
    and those orders' products (orders.keys_to_load says why this is enough)."""
    book = orders.OrderBook()
    if not (keys.order_ids or keys.equipment_ids or keys.product_ids):
        return book
    operations = await conn.execute(
        text("""SELECT * FROM operation_state
                WHERE order_id = ANY(:orders) OR (equipment_id = ANY(:units) AND status = 'RUNNING')
                ORDER BY order_id, operation, equipment_id FOR UPDATE"""),
        {"orders": sorted(keys.order_ids), "units": sorted(keys.equipment_ids)})
    for r in operations:
        book.operations[orders.OperationKey(r.order_id, r.operation, r.equipment_id)] = orders.Operation(
            r.order_id, r.operation, r.equipment_id, orders.OperationStatus(r.status), r.started_at, r.completed_at,
            r.good, r.scrap, r.rework)
    order_ids = sorted(set(keys.order_ids) | {k.order_id for k in book.operations})
    book.orders.update(dict.fromkeys(order_ids))
    rows = await conn.execute(text("SELECT * FROM order_state WHERE order_id = ANY(:ids) ORDER BY order_id FOR UPDATE"),
                              {"ids": TextArray(order_ids)})
    for r in rows:
        book.orders[r.order_id] = orders.Order(r.order_id, r.product_id, r.quantity, r.due_at, orders.OrderStatus(r.status),
                                               r.started_at, r.completed_at, r.material_loaded)
    product_ids = sorted(set(keys.product_ids) | {o.product_id for o in book.orders.values() if o is not None})
    book.products.update(dict.fromkeys(product_ids))
    rows = await conn.execute(text("SELECT * FROM products WHERE product_id = ANY(:ids)"), {"ids": TextArray(product_ids)})
    for r in rows:
        book.products[r.product_id] = orders.Product(
            r.product_id, r.ideal_cycle_time_s,
            tuple(orders.BomLine(material_id=b["material_id"], quantity_per_unit=b["quantity_per_unit"]) for b in r.bom),
            tuple(orders.RoutingStep(operation=s["operation"], equipment_id=s["equipment_id"],
                                     ideal_cycle_time_s=s["ideal_cycle_time_s"]) for s in r.routing))
    book.__post_init__()  # index the operations loaded above
    return book


# -- writing -------------------------------------------------------------------------------------------


async def save_statuses(conn: AsyncConnection, statuses: list[EquipmentStatus | None]) -> None:
    rows = [s for s in statuses if s is not None]
    if rows:
        await conn.execute(
            text("""INSERT INTO equipment_status (equipment_id, state, reason_code, since, last_event_id)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:states AS text[]), CAST(:reasons AS text[]),
                                         CAST(:since AS timestamptz[]), CAST(:events AS text[]))
                    ON CONFLICT (equipment_id) DO UPDATE SET state = excluded.state, reason_code = excluded.reason_code,
                        since = excluded.since, last_event_id = excluded.last_event_id"""),
            {"ids": TextArray([s.equipment_id for s in rows]), "states": TextArray([s.state for s in rows]),
             "reasons": TextArray([s.reason_code for s in rows]), "since": TimestamptzArray([s.since for s in rows]),
             "events": TextArray([s.last_event_id for s in rows])})


async def save_clocks(conn: AsyncConnection, clocks: dict[str, datetime], last_states: dict[str, LastState],
                      recorded: dict[str, datetime]) -> None:
    """`clocks`: every unit whose clock moved or that stored machine facts (each of those has a clock);
    `recorded`: the latest recorded_at of the facts each stored."""
    if clocks:
        units = sorted(clocks)
        await conn.execute(
            text("""INSERT INTO unit_clock (equipment_id, known_until, recorded_until)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:at AS timestamptz[]), CAST(:rec AS timestamptz[]))
                    ON CONFLICT (equipment_id) DO UPDATE SET known_until = greatest(unit_clock.known_until, excluded.known_until),
                        recorded_until = greatest(unit_clock.recorded_until, excluded.recorded_until)"""),
            {"ids": TextArray(units), "at": TimestamptzArray([clocks[u] for u in units]),
             "rec": TimestamptzArray([recorded.get(u) for u in units])})
    if last_states:  # every unit with a stored state change has a clock, so its row exists by now
        units = sorted(last_states)
        await conn.execute(
            text("""UPDATE unit_clock c SET last_state_at = v.at, last_state_event_id = v.event_id, last_state = v.state
                    FROM unnest(CAST(:ids AS text[]), CAST(:at AS timestamptz[]), CAST(:events AS text[]),
                                CAST(:states AS text[])) AS v(id, at, event_id, state)
                    WHERE c.equipment_id = v.id"""),
            {"ids": TextArray(units), "at": TimestamptzArray([last_states[u].at for u in units]),
             "events": TextArray([last_states[u].event_id for u in units]),
             "states": TextArray([last_states[u].state for u in units])})


async def save_book(conn: AsyncConnection, book: orders.OrderBook) -> None:
    products = book.changed_product_rows()
    if products:
        await conn.execute(
            text("""INSERT INTO products (product_id, ideal_cycle_time_s, bom, routing)
                    VALUES (:product_id, :ict, CAST(:bom AS jsonb), CAST(:routing AS jsonb))
                    ON CONFLICT (product_id) DO UPDATE SET ideal_cycle_time_s = excluded.ideal_cycle_time_s,
                        bom = excluded.bom, routing = excluded.routing"""),
            [{"product_id": p.product_id, "ict": p.ideal_cycle_time_s,
              "bom": json.dumps([{"material_id": b.material_id, "quantity_per_unit": b.quantity_per_unit} for b in p.bom]),
              "routing": json.dumps([{"operation": s.operation, "equipment_id": s.equipment_id,
                                      "ideal_cycle_time_s": s.ideal_cycle_time_s} for s in p.routing])}
             for p in products])
    order_rows = book.changed_order_rows()
    if order_rows:
        await conn.execute(
            text("""INSERT INTO order_state (order_id, product_id, quantity, due_at, status, started_at, completed_at,
                                             material_loaded)
                    VALUES (:order_id, :product_id, :quantity, :due_at, :status, :started_at, :completed_at, :material_loaded)
                    ON CONFLICT (order_id) DO UPDATE SET product_id = excluded.product_id, quantity = excluded.quantity,
                        due_at = excluded.due_at, status = excluded.status, started_at = excluded.started_at,
                        completed_at = excluded.completed_at, material_loaded = excluded.material_loaded"""),
            [{"order_id": o.order_id, "product_id": o.product_id, "quantity": o.quantity, "due_at": o.due_at,
              "status": str(o.status), "started_at": o.started_at, "completed_at": o.completed_at,
              "material_loaded": o.material_loaded} for o in order_rows])
    operation_rows = book.changed_operation_rows()
    if operation_rows:
        await conn.execute(
            text("""INSERT INTO operation_state (order_id, operation, equipment_id, status, started_at, completed_at,
                                                 good, scrap, rework)
                    VALUES (:order_id, :operation, :equipment_id, :status, :started_at, :completed_at, :good, :scrap, :rework)
                    ON CONFLICT (order_id, operation, equipment_id) DO UPDATE SET status = excluded.status,
                        started_at = excluded.started_at, completed_at = excluded.completed_at, good = excluded.good,
                        scrap = excluded.scrap, rework = excluded.rework"""),
            [{"order_id": o.order_id, "operation": o.operation, "equipment_id": o.equipment_id, "status": str(o.status),
              "started_at": o.started_at, "completed_at": o.completed_at, "good": o.good, "scrap": o.scrap,
              "rework": o.rework} for o in operation_rows])


async def save_facts(conn: AsyncConnection, batch: BatchState) -> None:
    # Facts are new by construction (the loop dropped duplicate event ids), so they are copied in.
    await copy_rows(conn, "state_changes", ("equipment_id", "occurred_at", "event_id", "state", "reason_code", "recorded_at"),
                    [(e.equipment_id, e.occurred_at, e.event_id, e.state, e.reason_code, e.recorded_at)
                     for e in batch.state_changes])
    await copy_rows(conn, "production", ("event_id", "equipment_id", "occurred_at", "good", "reject", "ideal_us",
                                         "order_id", "recorded_at"),
                    [(f.event.event_id, f.event.equipment_id, f.event.occurred_at, f.event.good, f.event.reject,
                      f.ideal_us, f.event.order_id, f.event.recorded_at) for f in batch.production])
    if batch.scrap:
        await conn.execute(
            text("""INSERT INTO scrap (event_id, equipment_id, occurred_at, quantity, rework, order_id, reason_code, recorded_at)
                    VALUES (:event_id, :equipment_id, :occurred_at, :quantity, :rework, :order_id, :reason_code, :recorded_at)
                    ON CONFLICT DO NOTHING"""),
            [{"event_id": e.event_id, "equipment_id": e.equipment_id, "occurred_at": e.occurred_at,
              "quantity": e.quantity, "rework": e.rework, "order_id": e.order_id, "reason_code": e.reason_code,
              "recorded_at": e.recorded_at} for e in batch.scrap])
    if batch.late:
        await conn.execute(
            text("""INSERT INTO late_events (event_id, event_type, equipment_id, occurred_at, recorded_at, known_until)
                    VALUES (:event_id, :event_type, :equipment_id, :occurred_at, :recorded_at, :known_until)
                    ON CONFLICT DO NOTHING"""),
            [{"event_id": f.event.event_id, "event_type": type(f.event).__name__, "equipment_id": f.equipment_id,
              "occurred_at": f.event.occurred_at, "recorded_at": f.event.recorded_at, "known_until": f.known_until}
             for f in batch.late])
    for event in batch.equipment:  # rare: one statement each keeps "latest by event time wins" simple
        await conn.execute(
            text("""INSERT INTO equipment (equipment_id, name, parent_id, level, time_zone, capacity_per_hour, occurred_at)
                    VALUES (:equipment_id, :name, :parent_id, :level, :time_zone, :capacity, :occurred_at)
                    ON CONFLICT (equipment_id) DO UPDATE SET name = excluded.name, parent_id = excluded.parent_id,
                        level = excluded.level, time_zone = excluded.time_zone,
                        capacity_per_hour = excluded.capacity_per_hour, occurred_at = excluded.occurred_at
                    WHERE equipment.occurred_at <= excluded.occurred_at"""),
            {"equipment_id": event.equipment_id, "name": event.name, "parent_id": event.parent_id, "level": event.level,
             "time_zone": event.time_zone, "capacity": event.capacity_per_hour, "occurred_at": event.occurred_at})
    for event in batch.shifts:
        await conn.execute(
            text("""INSERT INTO shifts (shift_id, equipment_id, starts_at, ends_at, breaks, occurred_at, recorded_at)
                    VALUES (:shift_id, :equipment_id, :starts_at, :ends_at, CAST(:breaks AS jsonb), :occurred_at, :recorded_at)
                    ON CONFLICT (shift_id) DO UPDATE SET equipment_id = excluded.equipment_id,
                        starts_at = excluded.starts_at, ends_at = excluded.ends_at, breaks = excluded.breaks,
                        occurred_at = excluded.occurred_at, recorded_at = excluded.recorded_at
                    WHERE shifts.occurred_at <= excluded.occurred_at"""),
            {"shift_id": event.shift_id, "equipment_id": event.equipment_id, "starts_at": event.starts_at,
             "ends_at": event.ends_at, "breaks": json.dumps([[s.isoformat(), e.isoformat()] for s, e in event.breaks]),
             "occurred_at": event.occurred_at, "recorded_at": event.recorded_at})
    for event in batch.lockouts:
        column = "locked" if isinstance(event, EquipmentLockedOut) else "released"
        await conn.execute(
            text(f"""INSERT INTO lockouts (equipment_id, work_order_id, {column}_at, {column}_recorded_at,
                                           {column}_event_id, recorded_at)
                     VALUES (:equipment_id, :work_order_id, :at, :recorded_at, :event_id, :recorded_at)
                     ON CONFLICT (equipment_id, work_order_id) DO UPDATE SET {column}_at = excluded.{column}_at,
                         {column}_recorded_at = excluded.{column}_recorded_at, {column}_event_id = excluded.{column}_event_id,
                         recorded_at = greatest(lockouts.recorded_at, excluded.recorded_at)"""),
            {"equipment_id": event.equipment_id, "work_order_id": event.work_order_id, "at": event.occurred_at,
             "recorded_at": event.recorded_at, "event_id": event.event_id})
    for event in batch.attendance:
        if isinstance(event, OperatorSignedIn):
            await conn.execute(
                text("""INSERT INTO attendance (operator_id, equipment_id, signed_in_at, recorded_at)
                        VALUES (:operator_id, :equipment_id, :at, :recorded_at) ON CONFLICT DO NOTHING"""),
                {"operator_id": event.operator_id, "equipment_id": event.equipment_id, "at": event.occurred_at,
                 "recorded_at": event.recorded_at})
        else:  # closes the operator's latest sign-in at the unit before the sign-out
            await conn.execute(
                text("""UPDATE attendance SET signed_out_at = :at
                        WHERE (operator_id, equipment_id, signed_in_at) = (
                            SELECT operator_id, equipment_id, max(signed_in_at) FROM attendance
                            WHERE operator_id = :operator_id AND equipment_id = :equipment_id AND signed_in_at <= :at
                            GROUP BY 1, 2)"""),
                {"operator_id": event.operator_id, "equipment_id": event.equipment_id, "at": event.occurred_at})
    if batch.reasons:
        await conn.execute(
            text("""INSERT INTO reason_assignments (equipment_id, since, occurred_at, event_id, reason_code)
                    VALUES (:equipment_id, :since, :occurred_at, :event_id, :reason_code) ON CONFLICT DO NOTHING"""),
            [{"equipment_id": e.equipment_id, "since": e.since, "occurred_at": e.occurred_at, "event_id": e.event_id,
              "reason_code": e.reason_code} for e in batch.reasons])


# -- KPI periods ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchy:
    parents: dict[str, str | None]
    zones: dict[str, str | None]
    levels: dict[str, str]

    def ancestry(self, unit: str) -> list[str]:
        chain, seen = [unit], {unit}
        while (parent := self.parents.get(chain[-1])) and parent not in seen:
            chain.append(parent)
            seen.add(parent)
        return chain

    def zone(self, unit: str) -> str | None:
        return next((self.zones[e] for e in self.ancestry(unit) if self.zones.get(e)), None)

    def units_under(self, equipment_id: str) -> list[str]:
        units = [e for e, level in self.levels.items() if level == WORK_UNIT and equipment_id in self.ancestry(e)]
        return units or [equipment_id]


async def load_hierarchy(conn: AsyncConnection) -> Hierarchy:
    rows = (await conn.execute(text("SELECT equipment_id, parent_id, time_zone, level FROM equipment"))).all()
    return Hierarchy({r.equipment_id: r.parent_id for r in rows}, {r.equipment_id: r.time_zone for r in rows},
                     {r.equipment_id: r.level for r in rows})


@dataclass(frozen=True)
class Request:
    """One period of one unit to compute, as known now (cutoff None) or as known at a recorded_at."""

    unit: str
    period: kpi.Period
    known_until: datetime
    cutoff: datetime | None = None
    since: datetime | None = None  # time elements from here only: the stored row holds those before


def _time_window(request: Request) -> kpi.Period:
    return request.period if request.since is None else replace(request.period, start=request.since)


async def recompute_periods(conn: AsyncConnection, batch: BatchState,
                            clocks_before: dict[str, datetime | None] | None = None,
                            last_states: dict[str, LastState] | None = None,
                            recorded_before: dict[str, datetime] | None = None) -> list[Event]:
    touched = dict(batch.touched)
    hierarchy = await load_hierarchy(conn) if (touched or batch.shifts or batch.equipment) else None
    if hierarchy is None:
        return []
    for shift in batch.shifts:
        for unit in hierarchy.units_under(shift.equipment_id):
            batch.touch(unit, shift.starts_at, shift.ends_at)
    rebuild = {u for e in batch.equipment for u in hierarchy.units_under(e.equipment_id)}
    touched = dict(batch.touched)
    for unit in sorted(rebuild):
        span = (await conn.execute(text("""SELECT min(occurred_at), max(occurred_at) FROM (
                    SELECT occurred_at FROM state_changes WHERE equipment_id = :u
                    UNION ALL SELECT occurred_at FROM production WHERE equipment_id = :u) f"""), {"u": unit})).one()
        if span[0] is not None:
            await conn.execute(text("DELETE FROM period_elements WHERE equipment_id = :u"), {"u": unit})
            await conn.execute(text("DELETE FROM period_versions WHERE equipment_id = :u"), {"u": unit})
            touched[unit] = (span[0], span[1])
    if not touched:
        return []
    # A unit whose clock the batch loaded (and locked) has it in batch.clocks, moved on by the fold as
    # save_clocks stored it; only the others (touched by operator events, calendars, rebuilds) are read.
    clocks = {u: batch.clocks[u] for u in touched if u in batch.clocks}
    clocks.update(await load_clocks(conn, sorted(u for u in touched if u not in clocks)))
    units = [u for u in sorted(touched) if clocks.get(u) is not None]
    before = {u: (clocks_before or {}).get(u, clocks[u]) for u in units}
    # Only a unit whose clock starts now, or a fact from before its clock, can reach a period that ends
    # before its first machine fact; for the others every touched period ends after it (no query).
    origins = await load_origins(conn, [u for u in units if before[u] is None or touched[u][0] < before[u]])
    shifts = await load_shifts(conn, hierarchy, units, touched)
    requests: list[Request] = []
    days: list[Request] = []
    for unit in units:
        low, high = touched[unit]
        known = clocks[unit]
        lived = (origins.get(unit) or low, known)
        end = max(high, known) + US
        zone = hierarchy.zone(unit)
        requests.extend(Request(unit, p, known) for p in kpi.hour_windows(low, end, zone) if _lived_in(p, lived))
        requests.extend(Request(unit, p, known) for p in kpi.shift_periods(shifts[unit])
                        if p.start < end and p.end > low and _lived_in(p, lived))
        days.extend(Request(unit, p, known) for p in kpi.day_windows(low, end, zone) if _lived_in(p, lived))
    requests, priors = await _extend_where_possible(conn, requests, before, touched)
    known = _known_in_memory(batch, requests, priors, before, touched, last_states, rebuild) if clocks_before else None
    current = [(request, e if prior is None else prior.extended_by(e)) for (request, e), prior
               in zip(await compute(conn, requests, shifts, known), priors, strict=True)]
    current = [(replace(request, since=None), e) for request, e in current]
    await save_periods(conn, current)
    current += await roll_up_days(conn, days)
    closing = _Closing(before, recorded_before, rebuild) if clocks_before is not None and recorded_before is not None else None
    return await close_and_revise(conn, current, shifts, batch, closing)


@dataclass(frozen=True)
class _Prior:
    """A stored open period's time elements up to the unit's clock before this batch, and its counts
    (of every fact stored in it so far, as `count` takes them)."""

    elements: list[timedelta]  # in the order of ELEMENTS
    counts: tuple[int, int, int, int, int, int]  # pq, gq, sq, rq, unrated, ideal_us

    def extended_by(self, later: kpi.Elements) -> kpi.Elements:
        """These time elements plus `later`'s (measured from where these stop); counts are `later`'s,
        which SQL took over the whole period."""
        return kpi.Elements(*[mine + getattr(later, name) for mine, name in zip(self.elements, ELEMENTS, strict=True)],
                            later.ideal_time, later.pq, later.gq, later.sq, later.rq, later.unrated_quantity,
                            later.covered_until)


async def _extend_where_possible(conn: AsyncConnection, requests: list[Request], before: dict[str, datetime | None],
                                 touched: dict[str, tuple[datetime, datetime]]) -> tuple[list[Request], list[_Prior | None]]:
    """Time elements are measures over the timeline, so a period's are the sum over any split of it. A
    period stored as covered up to the unit's clock before this batch, in a batch whose facts all lie at
    or after that clock (nothing late), keeps its stored time elements and adds those from the clock
    on: each batch reads the states it brought, not the whole hour or shift again. Anything else (a
    late fact, a new calendar, a first computation) recomputes the period from its facts."""
    candidates = [i for i, r in enumerate(requests)
                  if (since := before.get(r.unit)) is not None and r.cutoff is None
                  and r.period.start < since < r.period.end and touched[r.unit][0] >= since]
    priors: list[_Prior | None] = [None] * len(requests)
    if not candidates:
        return requests, priors
    columns = ", ".join([*(f"e.{name}_us" for name in ELEMENTS), "e.pq", "e.gq", "e.sq", "e.rq", "e.unrated", "e.ideal_us"])
    rows = (await conn.execute(text(f"""
        SELECT w.i, {columns} FROM unnest(CAST(:i AS integer[]), CAST(:u AS text[]), CAST(:k AS text[]),
                                         CAST(:s AS timestamptz[]), CAST(:c AS timestamptz[])) AS w(i, u, k, s, c)
        JOIN period_elements e ON e.equipment_id = w.u AND e.period = w.k AND e.period_start = w.s
             AND e.covered_until = w.c"""), {
        "i": Int4Array(candidates), "u": TextArray([requests[i].unit for i in candidates]),
        "k": TextArray([requests[i].period.kind for i in candidates]),
        "s": TimestamptzArray([requests[i].period.start for i in candidates]),
        "c": TimestamptzArray([before[requests[i].unit] for i in candidates])})).all()
    extended = list(requests)
    n = len(ELEMENTS) + 1
    for row in rows:  # (i, the time elements in microseconds, pq, gq, sq, rq, unrated, ideal_us)
        i = row[0]
        priors[i] = _Prior([timedelta(0, 0, v) for v in row[1:n]], tuple(row[n:]))
        request = requests[i]
        extended[i] = Request(request.unit, request.period, request.known_until, request.cutoff, before[request.unit])
    return extended, priors


def _lived_in(period: kpi.Period, lived: tuple[datetime, datetime]) -> bool:
    """A unit's periods run from the one holding its first machine fact to the one holding its clock,
    whatever else touched them: a sign-in before the first machine fact makes no earlier period, so the
    periods do not depend on which batch the sign-in came in."""
    first, known = lived
    return period.end > first and period.start <= known


@dataclass(frozen=True)
class _Known:
    """What a batch knows without reading stored facts: some units' state changes (rows as compute's
    query gives them) and some periods' counts (by index into the requests)."""

    states: dict[str, list[tuple]]
    counts: dict[int, tuple[int, int, int, int, int, int]]


def _known_in_memory(batch: BatchState, requests: list[Request], priors: list[_Prior | None],
                     before: dict[str, datetime | None], touched: dict[str, tuple[datetime, datetime]],
                     last_states: dict[str, LastState] | None, rebuild: set[str]) -> _Known:
    """A batch whose facts of a unit all lie at or after the unit's clock needs no stored state change
    of it but the latest (kept beside the clock): the stored ones all lie at or before the clock. So the
    states of each such unit whose requests all start at or after its clock (extended periods start
    at the clock, new ones later) are that latest one and the batch's own, provided no two of them
    share an instant (the order of those would be the database's collation's). And an extended
    period's counts are its stored counts plus those of the batch's facts in it, the same sums `count`
    takes over the period."""
    last_states = last_states or {}
    starts: dict[str, list[datetime]] = defaultdict(list)
    for request in requests:
        starts[request.unit].append(_time_window(request).start)
    changes: dict[str, list[MachineStateChanged]] = defaultdict(list)
    for change in batch.state_changes:
        changes[change.equipment_id].append(change)
    states: dict[str, list[tuple]] = {}
    for unit, unit_starts in starts.items():
        clock = before.get(unit)
        if clock is None or unit in rebuild or touched[unit][0] < clock or min(unit_starts) < clock:
            continue
        last = last_states.get(unit)
        if last is not None and last.state is None:
            continue
        own = sorted(changes.get(unit, ()), key=lambda c: c.occurred_at)
        instants = [c.occurred_at for c in own] + ([last.at] if last is not None else [])
        if len(set(instants)) < len(instants):
            continue
        rows = [(last.at, last.state, None, last.at)] if last is not None else []
        states[unit] = rows + [(c.occurred_at, c.state, c.reason_code, c.recorded_at) for c in own]
    counts: dict[int, tuple[int, int, int, int, int, int]] = {}
    extended = [i for i, prior in enumerate(priors) if prior is not None]
    if extended:
        production: dict[str, list] = defaultdict(list)
        for fact in batch.production:
            production[fact.event.equipment_id].append(fact)
        scrap: dict[str, list[ScrapReported]] = defaultdict(list)
        for report in batch.scrap:
            scrap[report.equipment_id].append(report)
        for i in extended:
            request, prior = requests[i], priors[i]
            start, end = request.period.start, request.period.end
            good = reject = unrated = ideal = scrapped = reworked = 0
            for fact in production.get(request.unit, ()):
                if start <= fact.event.occurred_at < end:
                    good += fact.event.good
                    reject += fact.event.reject
                    if fact.ideal_us is None:
                        unrated += fact.event.good + fact.event.reject
                    else:
                        ideal += fact.ideal_us
            for report in scrap.get(request.unit, ()):
                if start <= report.occurred_at < end:
                    if report.rework:
                        reworked += report.quantity
                    else:
                        scrapped += report.quantity
            pq, gq, sq, rq, prior_unrated, prior_ideal = prior.counts  # type: ignore[union-attr]
            counts[i] = (pq + good + reject, gq + good - scrapped - reworked, sq + reject + scrapped, rq + reworked,
                         prior_unrated + unrated, prior_ideal + ideal)
    return _Known(states, counts)


async def load_origins(conn: AsyncConnection, units: list[str]) -> dict[str, datetime]:
    """Each unit's first machine fact (state change or production report); units with a clock have one."""
    if not units:
        return {}
    rows = await conn.execute(text("""
        SELECT u, least((SELECT min(occurred_at) FROM state_changes WHERE equipment_id = u),
                        (SELECT min(occurred_at) FROM production WHERE equipment_id = u)) AS origin
        FROM unnest(CAST(:u AS text[])) AS u"""), {"u": TextArray(units)})
    return {r.u: r.origin for r in rows}


async def load_shifts(conn: AsyncConnection, hierarchy: Hierarchy, units: list[str],
                      touched: dict[str, tuple[datetime, datetime]]) -> dict[str, list[kpi.Shift]]:
    owners = sorted({e for u in units for e in hierarchy.ancestry(u)})
    low = min((touched[u][0] for u in units), default=None)
    shifts: dict[str, list[kpi.Shift]] = {u: [] for u in units}
    if not units or low is None:
        return shifts
    rows = (await conn.execute(
        text("""SELECT shift_id, equipment_id, starts_at, ends_at, breaks FROM shifts
                WHERE equipment_id = ANY(:owners) AND ends_at > :low - interval '2 days' ORDER BY shift_id"""),
        {"owners": owners, "low": low})).all()
    for unit in units:
        depth = {e: i for i, e in enumerate(hierarchy.ancestry(unit))}  # the unit itself first, then upwards
        candidates = sorted((r for r in rows if r.equipment_id in depth), key=lambda r: (depth[r.equipment_id], r.shift_id))
        shifts[unit] = kpi.calendar(
            kpi.Shift(r.shift_id, r.starts_at, r.ends_at,
                      tuple((datetime.fromisoformat(s), datetime.fromisoformat(e)) for s, e in r.breaks))
            for r in candidates)
    return shifts


async def compute(conn: AsyncConnection, requests: list[Request], shifts: dict[str, list[kpi.Shift]],
                  known: _Known | None = None) -> list[tuple[Request, kpi.Elements]]:
    """Elements of each requested period from the stored facts: time by kpi.compute, counts by SQL;
    what `known` holds (a unit's states, a period's counts) comes from memory instead."""
    if not requests:
        return []
    known = known or _Known({}, {})
    units = sorted({r.unit for r in requests})
    low = {u: min(_time_window(r).start for r in requests if r.unit == u) for u in units}
    high = {u: max(r.period.end for r in requests if r.unit == u) for u in units}
    args = {"u": TextArray(units), "lo": TimestamptzArray([low[u] for u in units]),
            "hi": TimestamptzArray([high[u] for u in units])}
    states: dict[str, list[tuple]] = defaultdict(list, known.states)
    unknown = [u for u in units if u not in known.states]
    for r in [] if not unknown else await conn.execute(text("""
            SELECT s.equipment_id, s.occurred_at, s.state, s.reason_code, s.recorded_at FROM
            unnest(CAST(:u AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[])) AS w(u, lo, hi)
            JOIN LATERAL (
                (SELECT * FROM state_changes WHERE equipment_id = w.u AND occurred_at < w.lo
                 ORDER BY occurred_at DESC, event_id DESC LIMIT 8)
                UNION ALL
                (SELECT * FROM state_changes WHERE equipment_id = w.u AND occurred_at >= w.lo AND occurred_at < w.hi)
            ) s ON true ORDER BY s.equipment_id, s.occurred_at, s.event_id"""), {
                "u": TextArray(unknown), "lo": TimestamptzArray([low[u] for u in unknown]),
                "hi": TimestamptzArray([high[u] for u in unknown])}):
        states[r.equipment_id].append((r.occurred_at, r.state, r.reason_code, r.recorded_at))
    # Windows that overlap the unit's requested range; open ones (no end yet) always do.
    # Each with when its lock and its release were recorded: as known at a cutoff, a lock recorded later is
    # no lockout yet, and a release recorded later leaves it open.
    lockouts: dict[str, list[tuple]] = defaultdict(list)
    for r in await conn.execute(text("""
            SELECT l.equipment_id, l.locked_at, l.released_at, l.locked_recorded_at AS locked_rec,
                   l.released_recorded_at AS released_rec
            FROM unnest(CAST(:u AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[])) AS w(u, lo, hi)
            JOIN lockouts l ON l.equipment_id = w.u AND l.locked_at IS NOT NULL AND l.locked_at < w.hi
                 AND (l.released_at IS NULL OR l.released_at > w.lo)"""), args):
        lockouts[r.equipment_id].append((r.locked_at, r.released_at, r.locked_rec, r.released_rec))
    windows: dict[str, list[kpi.OrderWindow]] = defaultdict(list)
    for r in await conn.execute(text("""
            SELECT o.order_id, o.equipment_id, o.started_at, o.completed_at
            FROM unnest(CAST(:u AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[])) AS w(u, lo, hi)
            JOIN operation_state o ON o.equipment_id = w.u AND o.started_at < w.hi
                 AND (o.completed_at IS NULL OR o.completed_at > w.lo)
            ORDER BY 1, 2, 3"""), args):
        windows[r.equipment_id].append(kpi.OrderWindow(r.order_id, r.started_at, r.completed_at))
    attendance: dict[str, list[kpi.Attendance]] = defaultdict(list)
    for r in await conn.execute(text("""
            SELECT a.operator_id, a.equipment_id, a.signed_in_at, a.signed_out_at
            FROM unnest(CAST(:u AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[])) AS w(u, lo, hi)
            JOIN attendance a ON a.equipment_id = w.u AND a.signed_in_at < w.hi
                 AND (a.signed_out_at IS NULL OR a.signed_out_at > w.lo)
            ORDER BY 1, 3"""), args):
        attendance[r.equipment_id].append(kpi.Attendance(r.operator_id, r.signed_in_at, r.signed_out_at))
    to_count = [i for i in range(len(requests)) if i not in known.counts]
    counted = dict(zip(to_count, await count(conn, [requests[i] for i in to_count]), strict=True)) if to_count else {}
    counts = [known.counts[i] if i in known.counts else counted[i] for i in range(len(requests))]
    timelines = {u: _Timeline(rows) for u, rows in states.items() if u in low}
    results = []
    for i, request in enumerate(requests):
        cutoff = request.cutoff
        timeline = timelines.get(request.unit)
        unit_states = timeline.window(_time_window(request).start, request.period.end, cutoff) if timeline else []
        unit_lockouts = [kpi.Lockout(start, end if cutoff is None or (released_rec is not None and released_rec <= cutoff)
                                     else None)
                         for start, end, locked_rec, released_rec in lockouts[request.unit]
                         if cutoff is None or locked_rec <= cutoff]
        elements = kpi.compute(_time_window(request), request.known_until, states=unit_states, shifts=shifts.get(request.unit, ()),
                               lockouts=unit_lockouts, orders=windows[request.unit], attendance=attendance[request.unit])
        pq, gq, sq, rq, unrated, ideal_us = counts[i]
        results.append((request, kpi.Elements(*[getattr(elements, name) for name in ELEMENTS], timedelta(0, 0, ideal_us),
                                              pq, gq, sq, rq, unrated, elements.covered_until)))
    return results


class _Timeline:
    """A unit's state changes as read (rows of occurred_at, state, reason, recorded_at), ordered by event
    time with the order of equal instants kept, and the part of them one window needs: every change at
    the last instant at or before its start (of those, the last one wins) and those inside it. kpi.compute
    over that part gives what it gives over all of them. Each period of a long history (a replay's
    settle reads a unit's whole history at once) then costs its own changes, not all of the unit's."""

    __slots__ = ("_changes", "_at", "_recorded")

    def __init__(self, rows: Sequence[tuple]) -> None:
        ordered = sorted(rows, key=lambda row: row[0])  # stable: equal instants keep their order
        self._changes = [kpi.StateChange(at, state, reason) for at, state, reason, _ in ordered]
        self._at = [row[0] for row in ordered]
        self._recorded = [row[3] for row in ordered]

    def window(self, start: datetime, end: datetime, cutoff: datetime | None = None) -> list[kpi.StateChange]:
        """The changes kpi.compute needs for [start, end), as known at `cutoff` (recorded by then) if given."""
        at, recorded = self._at, self._recorded
        inside = bisect_right(at, start)  # changes before this index lie at or before the start
        stop = bisect_left(at, end, inside)
        last = inside - 1
        if cutoff is not None:
            while last >= 0 and recorded[last] > cutoff:  # the latest change before the start known by then
                last -= 1
        first = bisect_left(at, at[last], 0, last + 1) if last >= 0 else 0
        if cutoff is None:
            return self._changes[first:stop]
        return [c for c, rec in zip(self._changes[first:stop], recorded[first:stop], strict=True) if rec <= cutoff]


async def count(conn: AsyncConnection, requests: list[Request]) -> list[tuple[int, int, int, int, int, int]]:
    """Quantities of each requested period: every report whose event time falls in it (and, for a
    version, that was recorded by its cutoff)."""
    rows = await conn.execute(text("""
        SELECT w.i,
               coalesce(p.good + p.reject, 0)::bigint AS pq,
               (coalesce(p.good, 0) - coalesce(s.scrap + s.rework, 0))::bigint AS gq,
               (coalesce(p.reject, 0) + coalesce(s.scrap, 0))::bigint AS sq, coalesce(s.rework, 0)::bigint AS rq,
               coalesce(p.unrated, 0)::bigint AS unrated, coalesce(p.ideal_us, 0)::bigint AS ideal_us
        FROM unnest(CAST(:i AS integer[]), CAST(:u AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[]),
                    CAST(:cut AS timestamptz[])) AS w(i, u, lo, hi, cut)
        LEFT JOIN LATERAL (
            SELECT sum(good) AS good, sum(reject) AS reject, sum(ideal_us) AS ideal_us,
                   sum(good + reject) FILTER (WHERE ideal_us IS NULL) AS unrated
            FROM production WHERE equipment_id = w.u AND occurred_at >= w.lo AND occurred_at < w.hi
              AND (w.cut IS NULL OR recorded_at <= w.cut)) p ON true
        LEFT JOIN LATERAL (
            SELECT coalesce(sum(quantity) FILTER (WHERE NOT rework), 0) AS scrap,
                   coalesce(sum(quantity) FILTER (WHERE rework), 0) AS rework
            FROM scrap WHERE equipment_id = w.u AND occurred_at >= w.lo AND occurred_at < w.hi
              AND (w.cut IS NULL OR recorded_at <= w.cut)) s ON true
        ORDER BY w.i"""), {
        "i": Int4Array(range(len(requests))), "u": TextArray([r.unit for r in requests]),
        "lo": TimestamptzArray([r.period.start for r in requests]), "hi": TimestamptzArray([r.period.end for r in requests]),
        "cut": TimestamptzArray([r.cutoff for r in requests])})
    return [(r.pq, r.gq, r.sq, r.rq, r.unrated, r.ideal_us) for r in rows]


async def roll_up_days(conn: AsyncConnection, days: list[Request]) -> list[tuple[Request, kpi.Elements]]:
    """A day's elements are the sum of its hours' (hours partition the local day, DST days included),
    so a day is never recomputed from its raw facts."""
    if not days:
        return []
    sums = ", ".join(f"coalesce(sum(h.{c}), 0)::bigint AS {c}" for c in _COLUMNS)
    rows = (await conn.execute(text(f"""
        SELECT w.i, {sums}, max(h.covered_until) AS covered_until
        FROM unnest(CAST(:i AS integer[]), CAST(:u AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[]))
             AS w(i, u, lo, hi)
        LEFT JOIN period_elements h ON h.equipment_id = w.u AND h.period = 'hour'
             AND h.period_start >= w.lo AND h.period_start < w.hi
        GROUP BY w.i ORDER BY w.i"""), {
        "i": Int4Array(range(len(days))), "u": TextArray([d.unit for d in days]),
        "lo": TimestamptzArray([d.period.start for d in days]), "hi": TimestamptzArray([d.period.end for d in days])})).all()
    results = [(request, _elements_from_us(row[1:-1], row[-1] or request.period.start))  # (i, *_COLUMNS, covered_until)
               for request, row in zip(days, rows, strict=True)]
    await save_periods(conn, results)
    return results


def _row(request: Request, e: kpi.Elements) -> dict:
    period = request.period
    row = {"equipment_id": request.unit, "period": period.kind, "period_start": period.start, "period_end": period.end,
           "label": period.label, "shift_id": period.label if period.kind == "shift" else None}
    for name, column in _ELEMENT_COLUMNS:
        row[column] = getattr(e, name) // US
    row.update(ideal_us=e.ideal_time // US, pq=e.pq, gq=e.gq, sq=e.sq, rq=e.rq, unrated=e.unrated_quantity,
               covered_until=e.covered_until)
    return row


_ELEMENT_COLUMNS = tuple((name, f"{name}_us") for name in ELEMENTS)
_COLUMNS = [column for _, column in _ELEMENT_COLUMNS] + ["ideal_us", "pq", "gq", "sq", "rq", "unrated"]
_ARRAYS = {"text": TextArray, "timestamptz": TimestamptzArray, "integer": Int4Array, "bigint": Int8Array}


async def save_periods(conn: AsyncConnection, results: list[tuple[Request, kpi.Elements]]) -> None:
    if not results:
        return
    rows = [_row(r, e) for r, e in results]
    columns = ["equipment_id", "period", "period_start", "period_end", "shift_id", "label", *_COLUMNS, "covered_until"]
    types = {"equipment_id": "text", "period": "text", "period_start": "timestamptz", "period_end": "timestamptz",
             "shift_id": "text", "label": "text", "covered_until": "timestamptz"}
    unnest = ", ".join(f"CAST(:{c} AS {types.get(c, 'bigint')}[])" for c in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[3:])
    await conn.execute(
        text(f"""INSERT INTO period_elements ({", ".join(columns)}, version)
                 SELECT *, 0 FROM unnest({unnest})
                 ON CONFLICT (equipment_id, period, period_start) DO UPDATE SET {updates}"""),
        {c: _ARRAYS[types.get(c, "bigint")]([row[c] for row in rows]) for c in columns})


@dataclass(frozen=True)
class _Closing:
    """What a live batch knows of each unit before it: the clock, the latest recorded_at of the stored
    machine facts, and the units it rebuilds (see _closed_as_computed)."""

    clocks: dict[str, datetime | None]
    recorded: dict[str, datetime]
    rebuild: set[str]


def _closed_as_computed(batch: BatchState, closed: list[Request], closing: _Closing,
                        facts_at: dict[str, list[tuple[datetime, datetime, str]]]) -> dict[int, tuple[datetime, str]]:
    """The hours closing in this batch whose version 1 is the figures just computed: by index into
    `closed`, the recorded_at and event id of the first fact past the hour's end (the version's cause).

    Version 1 is the hour as known when that fact was recorded (compute with that cutoff). An hour
    whose end lay past the unit's clock before this batch (or whose unit had no clock) has no version
    yet, and the fact that closes it is in this batch (every stored fact lay at or before that clock). When no state change before
    the hour's end and no production report in it was recorded after that fact (those stored before
    this batch by the unit's recorded_until, this batch's own here), the cutoff leaves out nothing the
    figures just computed took in, and no fact makes a later version. Scrap reports and lockouts are
    asked of the database by the caller. Shifts and days take the general path."""
    found: dict[int, tuple[datetime, str]] = {}
    for i, request in enumerate(closed):
        unit, end = request.unit, request.period.end
        clock = closing.clocks.get(unit)
        recorded = closing.recorded.get(unit)
        if request.period.kind != "hour" or unit in closing.rebuild:
            continue
        if clock is not None and (clock >= end or recorded is None):  # no clock yet: no machine fact stored yet
            continue
        facts = facts_at.get(unit, ())
        after = [(rec, event_id) for at, rec, event_id in facts if at >= end]
        if not after:
            continue
        closed_at, closed_by = min(after)
        if (recorded is None or recorded <= closed_at) and all(rec <= closed_at for at, rec, _ in facts if at < end):
            found[i] = (closed_at, closed_by)
    return found


async def _recorded_later(conn: AsyncConnection, closed: list[Request], found: dict[int, tuple[datetime, str]]) -> set[int]:
    """Of `found`, the hours with a scrap report in them, or a lockout of their unit, recorded after
    the fact that closed them."""
    if not found:
        return set()
    keys = sorted(found)
    rows = await conn.execute(text("""
        SELECT w.i FROM unnest(CAST(:i AS integer[]), CAST(:u AS text[]), CAST(:lo AS timestamptz[]),
                               CAST(:hi AS timestamptz[]), CAST(:c AS timestamptz[])) AS w(i, u, lo, hi, c)
        WHERE EXISTS (SELECT 1 FROM scrap WHERE equipment_id = w.u AND occurred_at >= w.lo AND occurred_at < w.hi
                                               AND recorded_at > w.c)
           OR EXISTS (SELECT 1 FROM lockouts WHERE equipment_id = w.u AND recorded_at > w.c)"""), {
        "i": Int4Array(keys), "u": TextArray([closed[i].unit for i in keys]),
        "lo": TimestamptzArray([closed[i].period.start for i in keys]),
        "hi": TimestamptzArray([closed[i].period.end for i in keys]),
        "c": TimestamptzArray([found[i][0] for i in keys])})
    return {r.i for r in rows}


def _machine_facts(batch: BatchState) -> dict[str, list[tuple[datetime, datetime, str]]]:
    """This batch's stored state changes and production reports per unit: (occurred_at, recorded_at, event id)."""
    facts: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for change in batch.state_changes:
        facts[change.equipment_id].append((change.occurred_at, change.recorded_at, change.event_id))
    for fact in batch.production:
        event = fact.event
        facts[event.equipment_id].append((event.occurred_at, event.recorded_at, event.event_id))
    return facts


async def close_and_revise(conn: AsyncConnection, current: list[tuple[Request, kpi.Elements]],
                           shifts: dict[str, list[kpi.Shift]], batch: BatchState,
                           closing: _Closing | None = None) -> list[Event]:
    """Versions of closed periods, as a function of the facts: version 1 is the period as known when the
    first fact past its end was recorded; each later recorded_at of a fact inside it is one more version.
    With `closing` (a live batch), an hour that closes now and that nothing recorded later bears on takes
    version 1 from its figures just computed (_closed_as_computed); the others are computed at each
    version's cutoff."""
    closed_current = [(r, e) for r, e in current if r.period.end <= r.known_until]
    if not closed_current:
        return []
    closed = [r for r, _ in closed_current]
    as_computed = _closed_as_computed(batch, closed, closing, _machine_facts(batch)) if closing is not None else {}
    for i in await _recorded_later(conn, closed, as_computed):
        del as_computed[i]
    general = [i for i in range(len(closed)) if i not in as_computed]
    closed_general = [closed[i] for i in general]
    closings, current_general = {}, None
    if closing is None:  # a settle: see _versions_at_cutoffs for `current`
        closings = await _closings(conn, closed_general)
        current_general = [closed_current[i][1] for i in general]
    versions = await _versions_at_cutoffs(conn, closed_general, shifts, closings, current_general)
    by_index = dict(zip(general, versions, strict=True))
    CLOSED_PERIODS.labels("as_computed").inc(len(as_computed))
    CLOSED_PERIODS.labels("at_cutoff").inc(sum(1 for computed in versions for number, *_, new in computed
                                               if number == 1 and new))  # not a closed period computed again
    for i, (known_at, caused_by) in as_computed.items():
        request = replace(closed[i], known_until=closed[i].period.end, cutoff=known_at)  # as the general path names it
        by_index[i] = [(1, request, closed_current[i][1], known_at, caused_by, True)]
    derived: list[Event] = []
    version_rows = []
    closed_hours = []
    for i in range(len(closed)):
        for number, request, elements, known_at, caused_by, new in by_index.get(i, ()):
            row = _row(request, elements)
            version_rows.append({**row, "version": number, "known_at": known_at, "caused_by": caused_by})
            if new:
                derived.append(_period_event(request, elements, number, known_at, caused_by))
                if number == 1 and request.period.kind == "hour":
                    closed_hours.append((request, elements, known_at, caused_by))
    if version_rows:
        await _save_versions(conn, version_rows)
    derived.extend(await _runtime(conn, closed_hours))
    return derived


async def _closings(conn: AsyncConnection, closed: list[Request]) -> dict[int, tuple[datetime, str]]:
    """Each closed period's closing fact, by index into `closed`: the recorded_at and event id of the first
    recorded of its unit's machine facts (state changes, production reports) at or after its end. For
    a settle, which closes every period of a unit's history at once: one sort of the unit's facts in
    reverse event time, with each period's end placed among them, and a running least (recorded_at,
    event id) gives every period's closing fact (a minimum over a suffix), where a search per period
    would read the rest of the history each time. The running least is taken of a text key that sorts
    as (recorded_at, event id) does, in code point order (COLLATE "C"). A period with no fact at or
    after its end has none (the same as the search finds)."""
    if not closed:
        return {}
    rows = await conn.execute(text("""
        WITH w AS (SELECT * FROM unnest(CAST(:i AS integer[]), CAST(:u AS text[]), CAST(:hi AS timestamptz[])) AS w(i, u, hi)),
        first AS (SELECT u, min(hi) AS lo FROM w GROUP BY u),
        marks AS (
            SELECT first.u, f.occurred_at AS at, 0 AS mark, NULL::integer AS i, f.recorded_at,
                   to_char(f.recorded_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS') || f.event_id COLLATE "C" AS k
            FROM first JOIN LATERAL (
                SELECT occurred_at, recorded_at, event_id FROM state_changes WHERE equipment_id = first.u AND occurred_at >= first.lo
                UNION ALL
                SELECT occurred_at, recorded_at, event_id FROM production WHERE equipment_id = first.u AND occurred_at >= first.lo
            ) f ON true
            UNION ALL
            SELECT u, hi, 1, i, NULL, NULL FROM w),
        running AS (
            SELECT i, mark, min(recorded_at) OVER suffix AS closed_at, min(k) OVER suffix AS k FROM marks
            WINDOW suffix AS (PARTITION BY u ORDER BY at DESC, mark ROWS UNBOUNDED PRECEDING))
        SELECT i, closed_at, substr(k, 21) AS closed_by FROM running WHERE mark = 1 AND closed_at IS NOT NULL"""), {
        "i": Int4Array(range(len(closed))), "u": TextArray([r.unit for r in closed]),
        "hi": TimestamptzArray([r.period.end for r in closed])})
    return {r.i: (r.closed_at, r.closed_by) for r in rows}


async def _versions_at_cutoffs(conn: AsyncConnection, closed: list[Request], shifts: dict[str, list[kpi.Shift]],
                               closings: dict[int, tuple[datetime, str]] | None = None,
                               current: list[kpi.Elements] | None = None,
                               ) -> list[list[tuple[int, Request, kpi.Elements, datetime, str, bool]]]:
    """Each closed period's versions from the stored facts, each as known at its cutoff: (number, request,
    elements, known at, caused by, whether it is new). A period's closing fact comes from `closings`
    (by index into `closed`) when given there, else from a search of the facts after its end; both
    order event ids by code point (COLLATE "C"), as Python does.

    With `current` (a settle: each period's figures just computed from every stored fact), an hour
    whose cutoff leaves out nothing those figures took in takes them as its version 1, as a live batch
    does (_closed_as_computed): no fact in it was recorded after the closing fact (so it has one
    version), none of the state changes at the last instant at or before its start was (the state it
    starts in, kpi.compute's only use of earlier changes), and no lockout of its unit was."""
    if not closed:
        return []
    closings = closings or {}
    rows = (await conn.execute(text("""
        SELECT w.i, c.closed_at, c.closed_by, f.recorded_at, f.event_id, v.versions, b.late
        FROM unnest(CAST(:i AS integer[]), CAST(:u AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[]),
                    CAST(:kind AS text[]), CAST(:c AS timestamptz[]), CAST(:cb AS text[])) AS w(i, u, lo, hi, kind, c, cb)
        JOIN LATERAL (
            SELECT w.c AS closed_at, w.cb AS closed_by WHERE w.c IS NOT NULL
            UNION ALL
            (SELECT recorded_at, event_id FROM (
                SELECT recorded_at, event_id FROM state_changes WHERE equipment_id = w.u AND occurred_at >= w.hi
                UNION ALL SELECT recorded_at, event_id FROM production WHERE equipment_id = w.u AND occurred_at >= w.hi) x
             WHERE w.c IS NULL ORDER BY recorded_at, event_id COLLATE "C" LIMIT 1)) c ON true
        LEFT JOIN LATERAL (
            SELECT recorded_at, min(event_id) AS event_id FROM (
                SELECT recorded_at, event_id FROM state_changes WHERE equipment_id = w.u AND occurred_at >= w.lo AND occurred_at < w.hi
                UNION ALL SELECT recorded_at, event_id FROM production WHERE equipment_id = w.u AND occurred_at >= w.lo AND occurred_at < w.hi
                UNION ALL SELECT recorded_at, event_id FROM scrap WHERE equipment_id = w.u AND occurred_at >= w.lo AND occurred_at < w.hi
                -- a lock, once recorded, covers the period if the lockout as then known overlaps it (open
                -- while its release is not recorded); a release, once recorded, uncovers what lies past it
                UNION ALL SELECT locked_recorded_at, coalesce(locked_event_id, 'lockout:' || work_order_id) FROM lockouts
                    WHERE equipment_id = w.u AND locked_at < w.hi
                      AND (released_at IS NULL OR released_recorded_at > locked_recorded_at OR released_at > w.lo)
                UNION ALL SELECT released_recorded_at, coalesce(released_event_id, 'release:' || work_order_id) FROM lockouts
                    WHERE equipment_id = w.u AND locked_at < w.hi AND released_at < w.hi
                      AND locked_recorded_at <= released_recorded_at
            ) y WHERE recorded_at > c.closed_at GROUP BY recorded_at) f ON true
        LEFT JOIN LATERAL (
            SELECT count(*) AS versions FROM period_versions
            WHERE equipment_id = w.u AND period = w.kind AND period_start = w.lo) v ON true
        LEFT JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM state_changes s WHERE s.equipment_id = w.u AND s.recorded_at > c.closed_at
                           AND s.occurred_at = (SELECT max(occurred_at) FROM state_changes
                                                WHERE equipment_id = w.u AND occurred_at <= w.lo))
                OR EXISTS (SELECT 1 FROM lockouts l WHERE l.equipment_id = w.u AND l.recorded_at > c.closed_at) AS late
            WHERE :current) b ON true
        ORDER BY w.i, f.recorded_at"""), {
        "i": Int4Array(range(len(closed))), "u": TextArray([r.unit for r in closed]),
        "lo": TimestamptzArray([r.period.start for r in closed]), "hi": TimestamptzArray([r.period.end for r in closed]),
        "kind": TextArray([r.period.kind for r in closed]),
        "c": TimestamptzArray([closings[i][0] if i in closings else None for i in range(len(closed))]),
        "cb": TextArray([closings[i][1] if i in closings else None for i in range(len(closed))]),
        "current": current is not None})).all()
    wanted: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    existing: dict[int, int] = {}
    late: set[int] = set()
    for r in rows:
        if r.i not in wanted:
            wanted[r.i].append((r.closed_at, r.closed_by))
        existing[r.i] = r.versions
        if r.late is not False:  # true, or not asked (NULL)
            late.add(r.i)
        if r.recorded_at is not None:
            wanted[r.i].append((r.recorded_at, r.event_id))
    out: list[list[tuple[int, Request, kpi.Elements, datetime, str, bool]]] = [[] for _ in closed]
    requests, keys = [], []
    for i, versions in wanted.items():
        base = closed[i]
        if current is not None and base.period.kind == "hour" and len(versions) == 1 and i not in late:
            (known_at, caused_by), = versions
            request = Request(base.unit, base.period, base.period.end, cutoff=known_at)  # as computing it names it
            out[i].append((1, request, current[i], known_at, caused_by, 1 > existing[i]))
            continue
        for number, (known_at, caused_by) in enumerate(versions, start=1):
            requests.append(Request(base.unit, base.period, base.period.end, cutoff=known_at))
            keys.append((i, number, known_at, caused_by, number > existing[i]))
    computed = await compute(conn, requests, shifts)
    for (request, elements), (i, number, known_at, caused_by, new) in zip(computed, keys, strict=True):
        out[i].append((number, request, elements, known_at, caused_by, new))
    return out


async def _save_versions(conn: AsyncConnection, rows: list[dict]) -> None:
    columns = ["equipment_id", "period", "period_start", "version", "known_at", "caused_by", "period_end", "shift_id",
               *_COLUMNS, "covered_until"]
    types = {"equipment_id": "text", "period": "text", "period_start": "timestamptz", "version": "integer",
             "known_at": "timestamptz", "caused_by": "text", "period_end": "timestamptz", "shift_id": "text",
             "covered_until": "timestamptz"}
    unnest = ", ".join(f"CAST(:{c} AS {types.get(c, 'bigint')}[])" for c in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[4:])
    await conn.execute(
        text(f"""INSERT INTO period_versions ({", ".join(columns)}) SELECT * FROM unnest({unnest})
                 ON CONFLICT (equipment_id, period, period_start, version) DO UPDATE SET {updates}"""),
        {c: _ARRAYS[types.get(c, "bigint")]([row[c] for row in rows]) for c in columns})
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = (row["equipment_id"], row["period"], row["period_start"])
        if key not in latest or row["version"] > latest[key]["version"]:
            latest[key] = row
    keys = sorted(latest)
    await conn.execute(
        text("""UPDATE period_elements e SET version = v.version
                FROM unnest(CAST(:u AS text[]), CAST(:k AS text[]), CAST(:s AS timestamptz[]), CAST(:v AS integer[]))
                     AS v(u, k, s, version)
                WHERE e.equipment_id = v.u AND e.period = v.k AND e.period_start = v.s"""),
        {"u": TextArray([k[0] for k in keys]), "k": TextArray([k[1] for k in keys]),
         "s": TimestamptzArray([k[2] for k in keys]), "v": Int4Array([latest[k]["version"] for k in keys])})


def _period_event(request: Request, e: kpi.Elements, version: int, known_at: datetime, caused_by: str) -> Event:
    body = {
        "equipment_id": request.unit, "period": request.period.kind, "period_start": request.period.start,
        "period_end": request.period.end, "shift_id": request.period.label if request.period.kind == "shift" else None,
        "version": version, **{f"{n}_s": getattr(e, n).total_seconds() for n in ELEMENTS},
        "ideal_s": e.ideal_time.total_seconds(), "pq": e.pq, "gq": e.gq, "sq": e.sq, "rq": e.rq,
        "covered_until": e.covered_until,
    }
    envelope = {"occurred_at": request.period.end, "recorded_at": known_at, "source": SERVICE,
                "correlation_id": caused_by}
    key = f"{request.unit}:{request.period.kind}:{request.period.start.isoformat()}"
    if version == 1:
        return PeriodClosed(event_id=f"{key}:closed", **envelope, **body)
    return PeriodRevised(event_id=f"{key}:v{version}", caused_by=caused_by, **envelope, **body)


async def _runtime(conn: AsyncConnection, closed_hours: list) -> list[RuntimeAccumulated]:
    """Running totals of RUNNING time and cycles per unit, advanced by each hour that closes, in time order."""
    if not closed_hours:
        return []
    closed_hours.sort(key=lambda c: (c[0].unit, c[0].period.start))
    units = sorted({c[0].unit for c in closed_hours})
    totals = {r.equipment_id: [r.total_runtime_us, r.total_cycles] for r in await conn.execute(
        text("SELECT equipment_id, total_runtime_us, total_cycles FROM unit_clock WHERE equipment_id = ANY(:u)"),
        {"u": TextArray(units)})}
    events = []
    for request, e, known_at, caused_by in closed_hours:
        total = totals.setdefault(request.unit, [0, 0])
        total[0] += e.apt // US
        total[1] += e.pq
        events.append(RuntimeAccumulated(
            event_id=f"{request.unit}:runtime:{request.period.start.isoformat()}", occurred_at=request.period.end,
            recorded_at=known_at, source=SERVICE, correlation_id=caused_by, equipment_id=request.unit,
            period_start=request.period.start, period_end=request.period.end, runtime_s=e.apt.total_seconds(),
            cycles=e.pq, total_runtime_s=total[0] / 1e6, total_cycles=total[1]))
    await conn.execute(
        text("""UPDATE unit_clock c SET total_runtime_us = t.rt, total_cycles = t.cy
                FROM unnest(CAST(:u AS text[]), CAST(:rt AS bigint[]), CAST(:cy AS bigint[])) AS t(u, rt, cy)
                WHERE c.equipment_id = t.u"""),
        {"u": TextArray(units), "rt": Int8Array([totals[u][0] for u in units]),
         "cy": Int8Array([totals[u][1] for u in units])})
    return events
