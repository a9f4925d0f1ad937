"""Inventory's tables and how a batch changes them.

Per batch: load what the events name (lots, the FIFO candidates of backflushed materials, their
materials, orders and units), fold the events through the pure handlers, then write each changed
row once and append the new ledger lines, genealogy edges and refusals. A fixed handful of
set-based statements per batch, whatever its size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory import model
from services.inventory.events import Event, MaterialBelowReorderPoint, MaterialTransactionRefused
from services.inventory.handlers import fold

EARLIEST = datetime.min.replace(tzinfo=UTC)  # a unit_order row written before it recorded when

REFUSED = Counter("mom_inventory_transactions_refused_total",
                  "Material transactions refused (MaterialTransactionRefused): held, scrapped, used-up or unknown "
                  "lots, quantities larger than the stock, duplicate receipts.", ["attempted"])
BACKFLUSH_SKIPPED = Counter("mom_inventory_backflushes_skipped_total",
                            "Backflushed MaterialConsumed not booked because operators loaded material for the order "
                            "before it was recorded (never both).")
BELOW_REORDER = Counter("mom_inventory_below_reorder_point_total",
                        "Materials whose available quantity crossed below their reorder point.", ["material_id"])


class InventoryProjector:
    def __init__(self, reorder_points: Mapping[str, float] | None = None) -> None:
        self.reorder_points = MappingProxyType(dict(reorder_points or {}))

    async def apply(self, conn: AsyncConnection, events: Sequence[Event]) -> list[Event]:
        book = await load_book(conn, model.keys_to_load(events), self.reorder_points)
        derived = fold(book, events)
        await save_book(conn, book)
        await save_refusals(conn, [e for e in derived if isinstance(e, MaterialTransactionRefused)])
        for event in derived:
            if isinstance(event, MaterialTransactionRefused):
                REFUSED.labels(event.attempted).inc()
            elif isinstance(event, MaterialBelowReorderPoint):
                BELOW_REORDER.labels(event.material_id).inc()
        if book.skipped_backflushes:
            BACKFLUSH_SKIPPED.inc(book.skipped_backflushes)
        return derived


# -- loading -------------------------------------------------------------------------------------------


async def load_book(conn: AsyncConnection, keys: model.KeysToLoad, reorder_points: Mapping[str, float]) -> model.Book:
    book = model.Book(reorder_points=reorder_points)
    book.lots.update(dict.fromkeys(sorted(keys.lot_ids)))
    if keys.lot_ids or keys.backflushed_materials:
        rows = (await conn.execute(
            text("""SELECT * FROM lot_state
                    WHERE lot_id = ANY(:ids)
                       OR (material_id = ANY(:materials) AND status = 'AVAILABLE' AND quantity > 0)
                    ORDER BY lot_id FOR UPDATE"""),
            {"ids": sorted(keys.lot_ids), "materials": sorted(keys.backflushed_materials)})).all()
        stock: dict[str, list[model.Stock]] = {}
        if rows:
            for s in await conn.execute(
                    text("""SELECT lot_id, location_id, quantity, arrived_at FROM stock WHERE lot_id = ANY(:ids)
                            ORDER BY lot_id, location_id FOR UPDATE"""), {"ids": [r.lot_id for r in rows]}):
                stock.setdefault(s.lot_id, []).append(model.Stock(s.location_id, s.quantity, s.arrived_at))
        for r in rows:
            book.lots[r.lot_id] = model.Lot(
                r.lot_id, r.material_id, r.unit, model.LotStatus(r.status), r.created_at, r.origin, r.order_id,
                tuple(stock.get(r.lot_id, ())), r.produced_good, r.produced_scrap, r.nonconformance_id, r.hold_reason)
    materials = set(keys.material_ids) | {lot.material_id for lot in book.lots.values()
                                          if lot is not None and lot.material_id is not None}
    if materials:
        book.materials.update(dict.fromkeys(sorted(materials)))
        for r in await conn.execute(
                text("""SELECT * FROM material_state WHERE material_id = ANY(:ids) ORDER BY material_id FOR UPDATE"""),
                {"ids": sorted(materials)}):
            book.materials[r.material_id] = model.Material(r.material_id, r.unit, r.available_quantity, r.below_reorder)
    if keys.order_ids:
        book.loaded_orders.update(dict.fromkeys(sorted(keys.order_ids)))
        for r in await conn.execute(text("SELECT order_id, loaded_at FROM order_loading WHERE order_id = ANY(:ids)"),
                                    {"ids": sorted(keys.order_ids)}):
            book.loaded_orders[r.order_id] = r.loaded_at
    if keys.equipment_ids:
        book.unit_orders.update(dict.fromkeys(sorted(keys.equipment_ids)))
        for r in await conn.execute(text("""SELECT equipment_id, order_id, since, set_by FROM unit_order
                                             WHERE equipment_id = ANY(:ids)"""), {"ids": sorted(keys.equipment_ids)}):
            book.unit_orders[r.equipment_id] = model.UnitOrder(r.order_id, r.since or EARLIEST, r.set_by or "")
    return book


# -- writing -------------------------------------------------------------------------------------------


async def copy_rows(conn: AsyncConnection, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """Many new rows through COPY on the transaction's own connection: far cheaper than parameters."""
    if not rows:
        return
    raw = await conn.get_raw_connection()
    async with raw.driver_connection.cursor() as cursor:
        async with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)


async def save_book(conn: AsyncConnection, book: model.Book) -> None:
    lots = book.changed_lot_rows()
    if lots:
        await conn.execute(
            text("""INSERT INTO lot_state (lot_id, material_id, unit, status, created_at, origin, order_id, quantity,
                                           produced_good, produced_scrap, nonconformance_id, hold_reason)
                    SELECT * FROM unnest(CAST(:lot_id AS text[]), CAST(:material_id AS text[]), CAST(:unit AS text[]),
                        CAST(:status AS text[]), CAST(:created_at AS timestamptz[]), CAST(:origin AS text[]),
                        CAST(:order_id AS text[]), CAST(:quantity AS double precision[]),
                        CAST(:good AS bigint[]), CAST(:scrap AS bigint[]), CAST(:nc AS text[]), CAST(:reason AS text[]))
                    ON CONFLICT (lot_id) DO UPDATE SET material_id = excluded.material_id, unit = excluded.unit,
                        status = excluded.status, created_at = excluded.created_at, origin = excluded.origin,
                        order_id = excluded.order_id, quantity = excluded.quantity,
                        produced_good = excluded.produced_good, produced_scrap = excluded.produced_scrap,
                        nonconformance_id = excluded.nonconformance_id, hold_reason = excluded.hold_reason"""),
            {"lot_id": [lot.lot_id for lot in lots], "material_id": [lot.material_id for lot in lots],
             "unit": [lot.unit for lot in lots], "status": [str(lot.status) for lot in lots],
             "created_at": [lot.created_at for lot in lots], "origin": [lot.origin for lot in lots],
             "order_id": [lot.order_id for lot in lots], "quantity": [lot.quantity for lot in lots],
             "good": [lot.produced_good for lot in lots], "scrap": [lot.produced_scrap for lot in lots],
             "nc": [lot.nonconformance_id for lot in lots], "reason": [lot.hold_reason for lot in lots]})
        ids = [lot.lot_id for lot in lots]
        await conn.execute(text("DELETE FROM stock WHERE lot_id = ANY(:ids)"), {"ids": ids})
        await copy_rows(conn, "stock", ("lot_id", "location_id", "quantity", "arrived_at"),
                        [(lot.lot_id, s.location_id, s.quantity, s.arrived_at) for lot in lots for s in lot.stock])
    materials = book.changed_material_rows()
    if materials:
        await conn.execute(
            text("""INSERT INTO material_state (material_id, unit, available_quantity, below_reorder)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:units AS text[]),
                                         CAST(:available AS double precision[]), CAST(:below AS boolean[]))
                    ON CONFLICT (material_id) DO UPDATE SET unit = excluded.unit,
                        available_quantity = excluded.available_quantity, below_reorder = excluded.below_reorder"""),
            {"ids": [m.material_id for m in materials], "units": [m.unit for m in materials],
             "available": [m.available for m in materials], "below": [m.below_reorder for m in materials]})
    orders = sorted(o for o in book.changed_orders if book.loaded_orders.get(o) is not None)
    if orders:
        await conn.execute(
            text("""INSERT INTO order_loading (order_id, loaded_at)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:at AS timestamptz[]))
                    ON CONFLICT (order_id) DO UPDATE SET loaded_at = least(order_loading.loaded_at, excluded.loaded_at)"""),
            {"ids": orders, "at": [book.loaded_orders[o] for o in orders]})
    units = sorted(u for u in book.changed_units if book.unit_orders.get(u) is not None)
    if units:
        latest = [book.unit_orders[u] for u in units]
        await conn.execute(
            text("""INSERT INTO unit_order (equipment_id, order_id, since, set_by)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:orders AS text[]), CAST(:since AS timestamptz[]),
                                         CAST(:by AS text[]))
                    ON CONFLICT (equipment_id) DO UPDATE
                    SET order_id = excluded.order_id, since = excluded.since, set_by = excluded.set_by
                    WHERE unit_order.since IS NULL
                       OR (unit_order.since, unit_order.set_by) < (excluded.since, excluded.set_by)"""),
            {"ids": units, "orders": [o.order_id for o in latest], "since": [o.since for o in latest],
             "by": [o.set_by for o in latest]})
    # Ledger lines and edges are new by construction (the loop dropped duplicate event ids).
    await copy_rows(conn, "movement_ledger",
                    ("event_id", "seq", "lot_id", "material_id", "location_id", "kind", "quantity", "occurred_at",
                     "recorded_at", "loss_kind", "order_id", "equipment_id", "produced_lot_id"),
                    [(m.event_id, m.seq, m.lot_id, m.material_id, m.location_id, str(m.kind), m.quantity, m.occurred_at,
                      m.recorded_at, m.loss_kind, m.order_id, m.equipment_id, m.produced_lot_id) for m in book.movements])
    await copy_rows(conn, "genealogy_edges",
                    ("parent_lot_id", "child_lot_id", "occurred_at", "quantity", "event_id", "seq"),
                    [(m.lot_id, m.produced_lot_id, m.occurred_at, -m.quantity, m.event_id, m.seq)
                     for m in book.movements if m.kind == model.Kind.CONSUMED and m.produced_lot_id is not None])


async def save_refusals(conn: AsyncConnection, refusals: list[MaterialTransactionRefused]) -> None:
    await copy_rows(conn, "refusal_log",
                    ("event_id", "caused_by", "attempted", "lot_id", "material_id", "quantity", "lot_status", "order_id",
                     "equipment_id", "reason", "occurred_at", "recorded_at"),
                    [(r.event_id, r.caused_by, r.attempted, r.lot_id, r.material_id, r.quantity, r.lot_status, r.order_id,
                      r.equipment_id, r.reason, r.occurred_at, r.recorded_at) for r in refusals])
