"""Inventory's pure core: lots, their stock per location, consumption, genealogy and reorder points.

No I/O, no clock: time comes from the events alone. The projection loads what a batch needs into a
`Book`, folds the events through `handlers.py`, and writes what changed. Every quantity that
enters or leaves a location is a `Movement` (the ledger); stock is the sum of movements, so
on-hand as of any instant is a sum over the ledger. Bad input never raises: it is refused with a
`MaterialTransactionRefused` and changes nothing.

Project choices (each pinned by a test in tests/unit/test_inventory_model.py):
- A lot is AVAILABLE, HELD, CONSUMED (used up) or SCRAPPED. Consuming, moving or losing a lot
  that is unknown, SCRAPPED or CONSUMED is refused; consuming a HELD lot is refused; moving or
  losing a HELD lot is allowed (quarantine moves, damage in the hold area). Nothing is ever booked
  below zero: a quantity larger than the lot holds (at the location, for moves) is refused whole.
- An AVAILABLE lot whose quantity reaches zero becomes CONSUMED; production into a CONSUMED lot
  makes it AVAILABLE again. A HELD lot stays HELD at zero.
- A lot held in several locations is consumed (or lost, where no location is named) from the
  location it arrived at most recently first, then by location id.
- Operators' MaterialLoaded books the consumption of the named lot into the order's output lot
  (`LOT-` + order id, as execution names it). Without an order, the order inventory last saw
  start or produce on that unit is used; with none known the consumption has no genealogy edge.
- Execution's MaterialConsumed (backflush) names a material, not a lot: it draws from AVAILABLE
  lots of that material, first in first out (oldest creation time, then lot id), across
  locations. If they hold less than the quantity, the consumption is refused whole.
- Never both: execution backflushes an order only until operators load material for it. The
  mirror rule here: a backflushed MaterialConsumed recorded after a MaterialLoaded for its order is
  not booked (counted, not refused), so the decision does not depend on which arrived first.
- A produced lot is created (or increased) by the good quantity of a final operation's
  ProductionReported, at the work unit that produced it, in unit `pcs`. Its good and scrap counts
  are kept for the integrated goods quantity.
- Quality's LotHeld, LotReleased and LotScrapped set the status; a scrapped lot's remaining stock
  is written off (movement kind `scrapped`). A status event for a lot not yet known keeps the
  status on a placeholder lot, which its receipt or production later fills in.
- Reorder points apply to the AVAILABLE quantity of a material across locations; crossing from at
  or above the point to below it emits MaterialBelowReorderPoint once; rising back to the point
  re-arms it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from services.inventory.events import (
    Event,
    LotConsumed,
    LotCreated,
    LotHeld,
    LotReleased,
    LotScrapped,
    LotStatusChanged,
    MaterialBelowReorderPoint,
    MaterialConsumed,
    MaterialLoaded,
    MaterialLost,
    MaterialLotReceived,
    MaterialMoved,
    MaterialTransactionRefused,
    OrderStarted,
    ProductionReported,
)

SERVICE = "inventory"
EPSILON = 1e-9          # quantities closer than this are equal (floating point sums of parts)
QUANTUM_DIGITS = 9      # stored quantities are kept to this many decimals (see quantized)
PRODUCED_UNIT = "pcs"   # produced lots count parts
LOSS_KINDS = ("production", "storage_and_transport", "other")


class LotStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    HELD = "HELD"
    CONSUMED = "CONSUMED"
    SCRAPPED = "SCRAPPED"


class Kind(StrEnum):
    """What a movement is; its quantity is signed (into the location positive)."""

    RECEIVED = "received"
    PRODUCED = "produced"
    MOVED_OUT = "moved_out"
    MOVED_IN = "moved_in"
    CONSUMED = "consumed"
    LOST = "lost"
    SCRAPPED = "scrapped"


@dataclass(frozen=True, slots=True)
class Stock:
    """A lot's quantity at one location, and when material last arrived there (event time)."""

    location_id: str
    quantity: float
    arrived_at: datetime


@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: str
    material_id: str | None            # None: a placeholder known only from a status event
    unit: str | None
    status: LotStatus
    created_at: datetime | None
    origin: str | None = None          # received | produced
    order_id: str | None = None        # produced lots: the order that produced them
    stock: tuple[Stock, ...] = ()      # sorted by location id, no zero entries
    produced_good: int = 0
    produced_scrap: int = 0
    nonconformance_id: str | None = None
    hold_reason: str | None = None

    @property
    def quantity(self) -> float:
        return sum((s.quantity for s in self.stock), 0.0)

    @property
    def known(self) -> bool:
        return self.material_id is not None

    def at(self, location_id: str) -> float:
        return next((s.quantity for s in self.stock if s.location_id == location_id), 0.0)

    def draw_order(self) -> list[Stock]:
        """The order locations give up material: latest arrival first, then by location id."""
        return sorted(self.stock, key=lambda s: (-s.arrived_at.timestamp(), s.location_id))


@dataclass(frozen=True, slots=True)
class Material:
    material_id: str
    unit: str | None = None
    available: float = 0.0             # quantity of AVAILABLE lots, all locations
    below_reorder: bool = False


@dataclass(frozen=True, slots=True)
class Movement:
    """One line of the ledger: a signed quantity of a lot into (or out of) a location."""

    event_id: str
    seq: int
    lot_id: str
    material_id: str
    location_id: str
    kind: Kind
    quantity: float
    occurred_at: datetime
    recorded_at: datetime
    loss_kind: str | None = None
    order_id: str | None = None
    equipment_id: str | None = None
    produced_lot_id: str | None = None


def output_lot_id(order_id: str) -> str:
    """The output lot execution names for an order (schemas/execution/MaterialConsumed.avsc)."""
    return f"LOT-{order_id}"


def quantized(quantity: float) -> float:
    """A running quantity rounded to a billionth of its unit. Float sums of the same parts in another
    order differ in their last bits (335.0000000000007 against 335.0000000000012), and a live worker
    and a replay may apply a lot's movements in other orders when the events of several partitions
    arrive out of acceptance order; rounding makes both the same number."""
    return round(quantity, QUANTUM_DIGITS) + 0.0  # + 0.0: no negative zero


def contribution(lot: Lot | None) -> float:
    """What a lot adds to its material's available quantity."""
    return lot.quantity if lot is not None and lot.known and lot.status == LotStatus.AVAILABLE else 0.0


def with_stock(lot: Lot, location_id: str, delta: float, at: datetime) -> Lot:
    """The lot with `delta` added at a location; an entry that reaches zero disappears."""
    entries = {s.location_id: s for s in lot.stock}
    current = entries.get(location_id)
    quantity = quantized((current.quantity if current else 0.0) + delta)
    if abs(quantity) <= EPSILON:
        entries.pop(location_id, None)
    else:
        arrived = at if delta > 0 or current is None else current.arrived_at
        if delta > 0 and current is not None:
            arrived = max(current.arrived_at, at)
        entries[location_id] = Stock(location_id, quantity, arrived)
    return replace(lot, stock=tuple(entries[k] for k in sorted(entries)))


def after_use(lot: Lot) -> Lot:
    """An AVAILABLE lot that is used up is CONSUMED."""
    if lot.status == LotStatus.AVAILABLE and lot.quantity <= EPSILON:
        return replace(lot, status=LotStatus.CONSUMED)
    return lot


@dataclass(frozen=True, slots=True)
class UnitOrder:
    """The order a work unit ran last: from its latest OrderStarted or ProductionReported by event time."""
    order_id: str
    since: datetime
    set_by: str  # the event id, which orders two facts of one instant


# -- the batch container ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Book:
    """What one batch folds into.

    Before folding, the projection loads (see `keys_to_load`): every lot the batch names (None when
    unknown), every AVAILABLE lot with stock of each material a MaterialConsumed names, the material
    of each of those lots and each material the batch names (None when unknown), the orders that
    MaterialLoaded and MaterialConsumed name, and the current order of each unit named. After the
    fold, `changed_*` say which rows to write, `movements` are the new ledger lines and `derived`
    the derived events in the order they were decided."""

    lots: dict[str, Lot | None] = field(default_factory=dict)
    materials: dict[str, Material | None] = field(default_factory=dict)
    loaded_orders: dict[str, datetime | None] = field(default_factory=dict)  # earliest recorded_at of a loading
    unit_orders: dict[str, UnitOrder | None] = field(default_factory=dict)   # the order a unit last ran
    reorder_points: Mapping[str, float] = field(default_factory=dict)
    changed_lots: set[str] = field(default_factory=set)
    changed_materials: set[str] = field(default_factory=set)
    changed_orders: set[str] = field(default_factory=set)
    changed_units: set[str] = field(default_factory=set)
    movements: list[Movement] = field(default_factory=list)
    derived: list[Event] = field(default_factory=list)
    skipped_backflushes: int = 0

    def lot(self, lot_id: str) -> Lot | None:
        return self.lots.get(lot_id)

    def material(self, material_id: str) -> Material:
        return self.materials.get(material_id) or Material(material_id)

    def put_lot(self, lot: Lot, cause: Event) -> None:
        """Store a lot and keep its material's available quantity (and reorder state) in step."""
        before = self.lots.get(lot.lot_id)
        if before == lot:
            return
        self.lots[lot.lot_id] = lot
        self.changed_lots.add(lot.lot_id)
        delta = contribution(lot) - contribution(before)
        if lot.material_id is not None and (delta or self.materials.get(lot.material_id) is None):
            material = self.material(lot.material_id)
            self.put_material(replace(material, available=quantized(material.available + delta),
                                      unit=material.unit or lot.unit), cause)

    def put_material(self, material: Material, cause: Event) -> None:
        point = self.reorder_points.get(material.material_id)
        if abs(material.available) <= EPSILON:
            material = replace(material, available=0.0)
        if point is not None:
            below = material.available < point - EPSILON
            if below and not material.below_reorder:
                self.derived.append(MaterialBelowReorderPoint(
                    **envelope(cause, f"below-reorder-point:{material.material_id}"),
                    material_id=material.material_id, available_quantity=material.available, reorder_point=point,
                    unit=material.unit, caused_by=cause.event_id))
            material = replace(material, below_reorder=below)
        if material != self.materials.get(material.material_id):
            self.materials[material.material_id] = material
            self.changed_materials.add(material.material_id)

    def available_lots(self, material_id: str) -> list[Lot]:
        """AVAILABLE lots of a material with stock, first in first out."""
        lots = [lot for lot in self.lots.values() if lot is not None and lot.material_id == material_id
                and lot.status == LotStatus.AVAILABLE and lot.quantity > EPSILON]
        return sorted(lots, key=lambda lot: (lot.created_at, lot.lot_id))

    def emit(self, *events: Event) -> list[Event]:
        self.derived.extend(events)
        return list(events)

    def changed_lot_rows(self) -> list[Lot]:
        return [lot for k in sorted(self.changed_lots) if (lot := self.lots[k]) is not None]

    def changed_material_rows(self) -> list[Material]:
        return [m for k in sorted(self.changed_materials) if (m := self.materials[k]) is not None]


# -- envelopes, refusals and status changes ----------------------------------------------------------------


def envelope(cause: Event, kind: str) -> dict:
    return {"event_id": f"{cause.event_id}:{kind}", "occurred_at": cause.occurred_at,
            "recorded_at": cause.recorded_at, "source": SERVICE,
            "correlation_id": cause.correlation_id or cause.event_id}


def refuse(book: Book, cause: Event, reason: str, *, lot: Lot | None = None, lot_id: str | None = None,
           material_id: str | None = None, quantity: float = 0.0, order_id: str | None = None,
           equipment_id: str | None = None) -> list[Event]:
    lot_id = lot.lot_id if lot is not None else lot_id
    material_id = material_id or (lot.material_id if lot is not None else None)
    return book.emit(MaterialTransactionRefused(
        **envelope(cause, "refused"), subject_id=lot_id or material_id or cause.event_id,
        attempted=type(cause).__name__, lot_id=lot_id, material_id=material_id, quantity=quantity,
        lot_status=str(lot.status) if lot is not None else None, order_id=order_id, equipment_id=equipment_id,
        reason=reason, caused_by=cause.event_id))


def status_changed(book: Book, cause: Event, before: Lot | None, after: Lot) -> None:
    was = before.status if before is not None else None
    if was != after.status:
        book.emit(LotStatusChanged(
            **envelope(cause, f"lot-status:{after.lot_id}"), lot_id=after.lot_id, material_id=after.material_id,
            from_status=None if was is None else str(was), to_status=str(after.status),
            nonconformance_id=after.nonconformance_id if after.status == LotStatus.HELD else None,
            reason=type(cause).__name__, caused_by=cause.event_id))


def unusable(lot: Lot | None, lot_id: str, what: str, *, held_ok: bool) -> str | None:
    """Why a lot cannot be used for `what`; None when it can."""
    if lot is None or not lot.known:
        return f"lot {lot_id} was never received or produced, so {what} is refused"
    if lot.status == LotStatus.HELD and not held_ok:
        return f"lot {lot_id} is HELD by quality, so {what} is refused until it is released"
    if lot.status in (LotStatus.SCRAPPED, LotStatus.CONSUMED):
        return f"lot {lot_id} is {lot.status}, so {what} is refused"
    return None


def draw(book: Book, cause: Event, lot: Lot, quantity: float, kind: Kind, seq: int, *,
         location_id: str | None = None, **details: str | None) -> tuple[Lot, list[tuple[str, float]], int]:
    """Take `quantity` out of a lot (from one location, or by the draw order); the caller checked there
    is enough. Returns the new lot, the (location, quantity) slices taken and the next sequence number."""
    slices: list[tuple[str, float]] = []
    remaining = quantity
    sources = [s for s in lot.stock if s.location_id == location_id] if location_id else lot.draw_order()
    for source in sources:
        if remaining <= EPSILON:
            break
        take = min(source.quantity, remaining)
        if remaining - take <= EPSILON:
            take = remaining
        slices.append((source.location_id, take))
        remaining -= take
    for location, take in slices:
        lot = with_stock(lot, location, -take, cause.occurred_at)
        book.movements.append(Movement(cause.event_id, seq, lot.lot_id, lot.material_id or "", location, kind, -take,
                                       cause.occurred_at, cause.recorded_at, **details))
        seq += 1
    return lot, slices, seq


# -- handlers: one per consumed event type (registered in handlers.py) ------------------------------------


def on_lot_received(book: Book, event: MaterialLotReceived) -> list[Event]:
    before = book.lot(event.lot_id)
    if before is not None and before.known:
        return refuse(book, event, f"lot {event.lot_id} was already received or produced; lot ids are unique",
                      lot=before, quantity=event.quantity)
    lot = before or Lot(event.lot_id, None, None, LotStatus.AVAILABLE, None)
    lot = replace(lot, material_id=event.material_id, unit=event.unit, created_at=event.occurred_at, origin="received")
    lot = with_stock(lot, event.location_id, event.quantity, event.occurred_at)
    book.movements.append(Movement(event.event_id, 0, lot.lot_id, event.material_id, event.location_id, Kind.RECEIVED,
                                   event.quantity, event.occurred_at, event.recorded_at))
    book.put_lot(lot, event)
    return book.emit(LotCreated(**envelope(event, "lot-created"), lot_id=lot.lot_id, material_id=event.material_id,
                                quantity=event.quantity, unit=event.unit, location_id=event.location_id,
                                origin="received"))


def on_material_moved(book: Book, event: MaterialMoved) -> list[Event]:
    lot = book.lot(event.lot_id)
    why = unusable(lot, event.lot_id, "the move", held_ok=True)
    if why is None and event.from_location == event.to_location:
        why = f"lot {event.lot_id} cannot be moved from {event.from_location} to itself"
    if why is None and lot is not None and lot.at(event.from_location) < event.quantity - EPSILON:
        why = (f"lot {event.lot_id} holds {lot.at(event.from_location):g} at {event.from_location}, "
               f"less than the {event.quantity:g} moved")
    if why is not None:
        return refuse(book, event, why, lot=lot, lot_id=event.lot_id, quantity=event.quantity)
    assert lot is not None and lot.material_id is not None
    moved, _, _ = draw(book, event, lot, event.quantity, Kind.MOVED_OUT, 0, location_id=event.from_location)
    moved = with_stock(moved, event.to_location, event.quantity, event.occurred_at)
    book.movements.append(Movement(event.event_id, 1, lot.lot_id, lot.material_id, event.to_location, Kind.MOVED_IN,
                                   event.quantity, event.occurred_at, event.recorded_at))
    book.put_lot(moved, event)
    return []


def consume(book: Book, event: Event, lot: Lot, quantity: float, seq: int, *, order_id: str | None,
            equipment_id: str | None, produced_lot_id: str | None, backflushed: bool) -> int:
    """Book a consumption the caller checked is possible; returns the next movement sequence number."""
    used, slices, seq = draw(book, event, lot, quantity, Kind.CONSUMED, seq, order_id=order_id,
                             equipment_id=equipment_id, produced_lot_id=produced_lot_id)
    used = after_use(used)
    remaining = used.quantity
    book.put_lot(used, event)
    for location, take in slices:
        book.emit(LotConsumed(**envelope(event, f"lot-consumed:{lot.lot_id}@{location}"), lot_id=lot.lot_id,
                              material_id=lot.material_id or "", location_id=location, quantity=take,
                              remaining_quantity=remaining, order_id=order_id, equipment_id=equipment_id,
                              produced_lot_id=produced_lot_id, backflushed=backflushed, caused_by=event.event_id))
    status_changed(book, event, lot, used)
    return seq


def on_material_loaded(book: Book, event: MaterialLoaded) -> list[Event]:
    running = book.unit_orders.get(event.equipment_id)
    order_id = event.order_id or (running.order_id if running else None)
    if order_id is not None:
        loaded_at = book.loaded_orders.get(order_id)
        if loaded_at is None or event.recorded_at < loaded_at:
            book.loaded_orders[order_id] = event.recorded_at
            book.changed_orders.add(order_id)
    lot = book.lot(event.lot_id)
    why = unusable(lot, event.lot_id, "its consumption", held_ok=False)
    if why is None and lot is not None and lot.quantity < event.quantity - EPSILON:
        why = f"lot {event.lot_id} holds {lot.quantity:g}, less than the {event.quantity:g} loaded"
    start = len(book.derived)
    if why is not None:
        refuse(book, event, why, lot=lot, lot_id=event.lot_id, quantity=event.quantity, order_id=order_id,
               equipment_id=event.equipment_id)
        return book.derived[start:]
    assert lot is not None
    consume(book, event, lot, event.quantity, 0, order_id=order_id, equipment_id=event.equipment_id,
            produced_lot_id=output_lot_id(order_id) if order_id else None, backflushed=False)
    return book.derived[start:]


def on_material_consumed(book: Book, event: MaterialConsumed) -> list[Event]:
    loaded_at = book.loaded_orders.get(event.order_id)
    if event.backflushed and loaded_at is not None and loaded_at < event.recorded_at:
        book.skipped_backflushes += 1  # operators book this order's consumption (never both)
        return []
    candidates = book.available_lots(event.material_id)
    available = sum(lot.quantity for lot in candidates)
    start = len(book.derived)
    if available < event.quantity - EPSILON:
        refuse(book, event, f"material {event.material_id} has {available:g} in AVAILABLE lots, less than the "
                            f"{event.quantity:g} consumed", material_id=event.material_id, quantity=event.quantity,
               order_id=event.order_id, equipment_id=event.equipment_id)
        return book.derived[start:]
    remaining, seq = event.quantity, 0
    for lot in candidates:
        if remaining <= EPSILON:
            break
        take = min(lot.quantity, remaining)
        if remaining - take <= EPSILON:
            take = remaining
        seq = consume(book, event, lot, take, seq, order_id=event.order_id, equipment_id=event.equipment_id,
                      produced_lot_id=event.produced_lot_id, backflushed=event.backflushed)
        remaining -= take
    return book.derived[start:]


def on_material_lost(book: Book, event: MaterialLost) -> list[Event]:
    lot = book.lot(event.lot_id)
    why = unusable(lot, event.lot_id, "the loss", held_ok=True)
    if why is None and event.kind not in LOSS_KINDS:
        why = f"loss kind {event.kind!r} is not one of {', '.join(LOSS_KINDS)}"
    if why is None and lot is not None:
        held = lot.at(event.location_id) if event.location_id else lot.quantity
        where = f" at {event.location_id}" if event.location_id else ""
        if held < event.quantity - EPSILON:
            why = f"lot {event.lot_id} holds {held:g}{where}, less than the {event.quantity:g} lost"
    if why is not None:
        return refuse(book, event, why, lot=lot, lot_id=event.lot_id, quantity=event.quantity,
                      equipment_id=event.equipment_id)
    assert lot is not None
    lost, _, _ = draw(book, event, lot, event.quantity, Kind.LOST, 0, location_id=event.location_id,
                      loss_kind=event.kind, equipment_id=event.equipment_id)
    lost = after_use(lost)
    book.put_lot(lost, event)
    start = len(book.derived)
    status_changed(book, event, lot, lost)
    return book.derived[start:]


def on_order_started(book: Book, event: OrderStarted) -> list[Event]:
    set_unit_order(book, event.equipment_id, event)
    return []


def set_unit_order(book: Book, equipment_id: str, event: OrderStarted | ProductionReported) -> None:
    """The unit's order is that of its latest fact by event time (then event id), whichever partition
    brought it first: the same in a live run and in a replay."""
    current = book.unit_orders.get(equipment_id)
    latest = UnitOrder(event.order_id, event.occurred_at, event.event_id)
    if current is None or (latest.since, latest.set_by) > (current.since, current.set_by):
        book.unit_orders[equipment_id] = latest
        book.changed_units.add(equipment_id)


def on_production_reported(book: Book, event: ProductionReported) -> list[Event]:
    set_unit_order(book, event.equipment_id, event)
    if not event.final_operation:
        return []
    before = book.lot(event.lot_id)
    start = len(book.derived)
    if before is None or not before.known:
        if event.good <= 0:
            return []
        lot = before or Lot(event.lot_id, None, None, LotStatus.AVAILABLE, None)
        lot = replace(lot, material_id=event.product_id, unit=PRODUCED_UNIT, created_at=event.occurred_at,
                      origin="produced", order_id=event.order_id)
        book.emit(LotCreated(**envelope(event, "lot-created"), lot_id=lot.lot_id, material_id=event.product_id,
                             quantity=float(event.good), unit=PRODUCED_UNIT, location_id=event.equipment_id,
                             origin="produced", order_id=event.order_id))
    else:
        lot = before
    lot = replace(lot, produced_good=lot.produced_good + event.good, produced_scrap=lot.produced_scrap + event.scrap)
    if event.good > 0:
        lot = with_stock(lot, event.equipment_id, float(event.good), event.occurred_at)
        book.movements.append(Movement(event.event_id, 0, lot.lot_id, lot.material_id or event.product_id,
                                       event.equipment_id, Kind.PRODUCED, float(event.good), event.occurred_at,
                                       event.recorded_at, order_id=event.order_id, equipment_id=event.equipment_id))
        if lot.status == LotStatus.CONSUMED:
            lot = replace(lot, status=LotStatus.AVAILABLE)
    book.put_lot(lot, event)
    status_changed(book, event, before if before is not None and before.known else lot, lot)
    return book.derived[start:]


def _placeholder(lot_id: str, status: LotStatus) -> Lot:
    return Lot(lot_id, None, None, status, None)


def on_lot_held(book: Book, event: LotHeld) -> list[Event]:
    before = book.lot(event.lot_id)
    if before is not None and before.status == LotStatus.SCRAPPED:
        return []
    lot = replace(before or _placeholder(event.lot_id, LotStatus.HELD), status=LotStatus.HELD,
                  nonconformance_id=event.nonconformance_id, hold_reason=event.reason)
    book.put_lot(lot, event)
    start = len(book.derived)
    status_changed(book, event, before, lot)
    return book.derived[start:]


def on_lot_released(book: Book, event: LotReleased) -> list[Event]:
    before = book.lot(event.lot_id)
    if before is None or before.status != LotStatus.HELD:
        return []  # nothing held: nothing to release
    lot = replace(before, status=LotStatus.AVAILABLE, hold_reason=None)
    lot = after_use(lot) if lot.known else lot
    book.put_lot(lot, event)
    start = len(book.derived)
    status_changed(book, event, before, lot)
    return book.derived[start:]


def on_lot_scrapped(book: Book, event: LotScrapped) -> list[Event]:
    before = book.lot(event.lot_id)
    if before is not None and before.status == LotStatus.SCRAPPED:
        return []
    lot = before or _placeholder(event.lot_id, LotStatus.SCRAPPED)
    if lot.known and lot.stock:
        lot, _, _ = draw(book, event, lot, lot.quantity, Kind.SCRAPPED, 0)
    lot = replace(lot, status=LotStatus.SCRAPPED)
    book.put_lot(lot, event)
    start = len(book.derived)
    status_changed(book, event, before, lot)
    return book.derived[start:]


Handler = Callable[[Book, Event], list[Event]]


@dataclass(frozen=True, slots=True)
class KeysToLoad:
    """What a projection loads into a Book before folding a batch (see Book)."""

    lot_ids: frozenset[str]
    material_ids: frozenset[str]          # named materials (their rows)
    backflushed_materials: frozenset[str]  # materials whose AVAILABLE lots are FIFO candidates
    order_ids: frozenset[str]
    equipment_ids: frozenset[str]


def keys_to_load(events: Iterable[Event]) -> KeysToLoad:
    """Lots, materials, orders and units a batch names. Add the materials of loaded lots before
    loading materials."""
    lots: set[str] = set()
    materials: set[str] = set()
    backflushed: set[str] = set()
    orders: set[str] = set()
    units: set[str] = set()
    for event in events:
        lot_id = getattr(event, "lot_id", None)
        if lot_id is not None:
            lots.add(lot_id)
        if isinstance(event, MaterialLotReceived):
            materials.add(event.material_id)
        elif isinstance(event, ProductionReported):
            materials.add(event.product_id)
            units.add(event.equipment_id)
        elif isinstance(event, MaterialConsumed):
            materials.add(event.material_id)
            backflushed.add(event.material_id)
            orders.add(event.order_id)
        elif isinstance(event, MaterialLoaded):
            units.add(event.equipment_id)
            if event.order_id is not None:
                orders.add(event.order_id)
        elif isinstance(event, OrderStarted):
            units.add(event.equipment_id)
    return KeysToLoad(frozenset(lots), frozenset(materials), frozenset(backflushed), frozenset(orders),
                      frozenset(units))
