"""Execution's pure order core: production orders, their operations and WIP, and what follows from them.

No I/O, no clock: time comes from the events alone. Per consumed event type there is a `decide_*`
(the derived events) and an `evolve_*` (the new state values), both pure functions of plain values;
an `on_*` handler applies them to an `OrderBook`, the batch container a projection loads rows into
and reads changed rows out of. Impossible transitions never raise: they are refused with a
`TransitionRefused` derived event and change nothing.

Project choices (each one pinned by a test in tests/unit/test_execution_orders.py):
- An order completes when its product's final routing operation completes on the last work unit
  still running it; a product without routing (or an unknown product) completes the order when
  no operation of the order is still running. Every operation of an unrouted product is final.
- Operators' `ScrapReported` moves parts from good to scrap (or rework) and emits nothing: the
  operator event is itself on the log for anyone who needs it, and `ProductionReported` carries
  machine counts, never negative corrections. Because a scrap report can be processed before the
  machine count of the same parts (they travel on different topics), an operation's `good` may be
  negative for a while; counts are pure sums, so the result does not depend on that order.
  `scrap`, `rework` and `good + scrap + rework` are never negative.
- Backflush: good parts of a final operation consume `quantity_per_unit × good` of every BOM
  material (lines of one material summed), unless operators loaded material for the order
  (`MaterialLoaded`): from then on the order's consumption is theirs, never both.
- Refused, each with a `TransitionRefused`: any operation event, count, scrap or loading for an
  order never released; starting an operation of a completed order, a running operation again, or
  a completed operation on the same unit again; completing an operation not running; a count
  naming an order with not exactly one operation running on that unit; scrap naming an order
  with no operation on that unit (or several running); a release of an order already started.
  A count or scrap report without an order goes to the unit's only running operation; with none
  or several it is not attributed (`OrderBook.unattributed`), and a report of zero parts is no fact.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from services.execution.events import (
    BomLine,
    Event,
    MaterialConsumed,
    MaterialLoaded,
    OperationCompleted,
    OperationStarted,
    OrderCompleted,
    OrderStarted,
    PartsProduced,
    ProductDefined,
    ProductionOrderReleased,
    ProductionReported,
    RoutingStep,
    ScrapReported,
    TransitionRefused,
)

SERVICE = "execution"


class OrderStatus(StrEnum):
    RELEASED = "RELEASED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"


class OperationStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"


class OperationKey(NamedTuple):
    order_id: str
    operation: str
    equipment_id: str

    def __str__(self) -> str:
        return f"{self.order_id}/{self.operation}/{self.equipment_id}"


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    ideal_cycle_time_s: float
    bom: tuple[BomLine, ...] = ()
    routing: tuple[RoutingStep, ...] = ()

    @property
    def final_operation(self) -> str | None:
        """The last step of the routing; None for a product without routing."""
        return self.routing[-1].operation if self.routing else None


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    product_id: str
    quantity: float
    due_at: datetime | None = None
    status: OrderStatus = OrderStatus.RELEASED
    started_at: datetime | None = None
    completed_at: datetime | None = None
    material_loaded: bool = False

    @property
    def output_lot_id(self) -> str:
        return output_lot_id(self.order_id)


@dataclass(frozen=True, slots=True)
class Operation:
    order_id: str
    operation: str
    equipment_id: str
    status: OperationStatus
    started_at: datetime
    completed_at: datetime | None = None
    good: int = 0
    scrap: int = 0
    rework: int = 0

    @property
    def key(self) -> OperationKey:
        return OperationKey(self.order_id, self.operation, self.equipment_id)


@dataclass(frozen=True, slots=True)
class WipRow:
    """Work in process of one operation, as the `execution.wip` view shows it."""

    order_id: str
    operation: str
    equipment_id: str
    in_process: bool
    good: int
    scrap: int
    rework: int
    remaining: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an event cannot be applied; becomes a `TransitionRefused`."""

    entity: str  # "order" | "operation"
    entity_id: str
    order_id: str
    current_status: str | None
    reason: str


def output_lot_id(order_id: str) -> str:
    return f"LOT-{order_id}"


def remaining(order: Order, operation: Operation) -> float:
    return max(order.quantity - operation.good, 0)


def wip_row(order: Order, operation: Operation) -> WipRow:
    return WipRow(order_id=operation.order_id, operation=operation.operation, equipment_id=operation.equipment_id,
                  in_process=operation.status == OperationStatus.RUNNING, good=operation.good,
                  scrap=operation.scrap, rework=operation.rework, remaining=remaining(order, operation))


def is_final(product: Product | None, operation: str) -> bool:
    """Final routing step; every operation of an unrouted (or unknown) product is final."""
    final = product.final_operation if product is not None else None
    return final is None or final == operation


# Envelopes and refusals of derived events.

def _envelope(event: Event, kind: str, about: str | None = None) -> dict:
    """The derived event's envelope. Its id names the cause, or `about` (an order) for what happens once
    per order whichever of its operations' events, from different units' partitions, is processed first."""
    return {"event_id": f"{about or event.event_id}:{kind}", "occurred_at": event.occurred_at,
            "recorded_at": event.recorded_at, "source": SERVICE,
            "correlation_id": event.correlation_id or event.event_id}


def refused(event: Event, refusal: Refusal, equipment_id: str | None) -> TransitionRefused:
    return TransitionRefused(**_envelope(event, "transition-refused"), entity=refusal.entity,
                             entity_id=refusal.entity_id, order_id=refusal.order_id, equipment_id=equipment_id,
                             attempted=type(event).__name__,
                             current_status=None if refusal.current_status is None else str(refusal.current_status),
                             reason=refusal.reason, caused_by=event.event_id)


def _never_released(order_id: str, what: str) -> Refusal:
    return Refusal("order", order_id, order_id, None, f"order {order_id} was never released, so {what}")


# ProductDefined: a redefinition replaces the product; orders in progress follow the new definition.

def evolve_product(product: Product | None, event: ProductDefined) -> Product:
    return Product(event.product_id, event.ideal_cycle_time_s, event.bom, event.routing)


# ProductionOrderReleased: a release before the start replaces the order (an ERP correction);
# an order that has started cannot be released again.

def check_order_released(order: Order | None, event: ProductionOrderReleased) -> Refusal | None:
    if order is not None and order.status != OrderStatus.RELEASED:
        return Refusal("order", order.order_id, order.order_id, order.status,
                       f"order {order.order_id} is {order.status}, and only an order not yet started "
                       "can be released again")
    return None


def decide_order_released(order: Order | None, event: ProductionOrderReleased) -> list[Event]:
    refusal = check_order_released(order, event)
    return [refused(event, refusal, None)] if refusal else []


def evolve_order_released(order: Order | None, event: ProductionOrderReleased) -> Order | None:
    if check_order_released(order, event):
        return order
    return Order(event.order_id, event.product_id, event.quantity, event.due_at,
                 material_loaded=order.material_loaded if order is not None else False)


# OperationStarted: the order must be released and not completed; the operation on that unit must
# not be running or completed. The first start of an order starts the order.

def check_operation_started(order: Order | None, operation: Operation | None,
                            event: OperationStarted) -> Refusal | None:
    key = OperationKey(event.order_id, event.operation, event.equipment_id)
    if order is None:
        return _never_released(event.order_id, "none of its operations can start")
    if order.status == OrderStatus.COMPLETED:
        return Refusal("order", order.order_id, order.order_id, order.status,
                       f"order {order.order_id} is completed, so no operation of it can start")
    if operation is not None and operation.status == OperationStatus.RUNNING:
        return Refusal("operation", str(key), key.order_id, operation.status,
                       f"operation {key.operation} of order {key.order_id} is already running on "
                       f"{key.equipment_id}, so it cannot start again")
    if operation is not None:
        return Refusal("operation", str(key), key.order_id, operation.status,
                       f"operation {key.operation} of order {key.order_id} was completed on "
                       f"{key.equipment_id}, and a completed operation cannot be restarted")
    return None


def decide_operation_started(order: Order | None, operation: Operation | None,
                             event: OperationStarted) -> list[Event]:
    refusal = check_operation_started(order, operation, event)
    if refusal:
        return [refused(event, refusal, event.equipment_id)]
    assert order is not None
    if order.status != OrderStatus.RELEASED:
        return []
    return [OrderStarted(**_envelope(event, "order-started", about=order.order_id), order_id=order.order_id,
                         product_id=order.product_id, quantity=order.quantity, due_at=order.due_at,
                         operation=event.operation, equipment_id=event.equipment_id)]


def evolve_operation_started(order: Order | None, operation: Operation | None,
                             event: OperationStarted) -> tuple[Order | None, Operation | None]:
    if check_operation_started(order, operation, event):
        return order, operation
    assert order is not None
    started_at = event.occurred_at if order.started_at is None else min(order.started_at, event.occurred_at)
    return (replace(order, status=OrderStatus.STARTED, started_at=started_at),
            Operation(event.order_id, event.operation, event.equipment_id, OperationStatus.RUNNING,
                      event.occurred_at))


# OperationCompleted: the operation on that unit must be running. Completing the final routing
# step (on the last unit running it) completes the order.

def check_operation_completed(order: Order | None, operation: Operation | None,
                              event: OperationCompleted) -> Refusal | None:
    key = OperationKey(event.order_id, event.operation, event.equipment_id)
    if order is None:
        return _never_released(event.order_id, "none of its operations can complete")
    if operation is None:
        return Refusal("operation", str(key), key.order_id, None,
                       f"operation {key.operation} of order {key.order_id} was never started on "
                       f"{key.equipment_id}, so it cannot be completed")
    if operation.status != OperationStatus.RUNNING:
        return Refusal("operation", str(key), key.order_id, operation.status,
                       f"operation {key.operation} of order {key.order_id} on {key.equipment_id} is "
                       "already completed, and only a running operation can be completed")
    return None


def _completes_order(order: Order, product: Product | None, completed: Operation,
                     others: Iterable[Operation]) -> bool:
    """`others`: the order's other operations (the completed one excluded)."""
    if order.status == OrderStatus.COMPLETED or not is_final(product, completed.operation):
        return False
    routed = product is not None and product.final_operation is not None
    still_running = [o for o in others if o.status == OperationStatus.RUNNING
                     and (not routed or o.operation == completed.operation)]
    return not still_running


def decide_operation_completed(order: Order | None, operation: Operation | None, product: Product | None,
                               others: Sequence[Operation], event: OperationCompleted) -> list[Event]:
    refusal = check_operation_completed(order, operation, event)
    if refusal:
        return [refused(event, refusal, event.equipment_id)]
    assert order is not None and operation is not None
    if not _completes_order(order, product, operation, others):
        return []
    final_runs = [operation, *(o for o in others if o.operation == operation.operation)]
    started_at = order.started_at or operation.started_at
    return [OrderCompleted(**_envelope(event, "order-completed", about=order.order_id), order_id=order.order_id,
                           product_id=order.product_id, quantity=order.quantity, operation=operation.operation,
                           equipment_id=operation.equipment_id,
                           good=max(sum(o.good for o in final_runs), 0),
                           scrap=sum(o.scrap for o in final_runs), rework=sum(o.rework for o in final_runs),
                           started_at=started_at,
                           duration_s=max((event.occurred_at - started_at).total_seconds(), 0.0))]


def evolve_operation_completed(order: Order | None, operation: Operation | None, product: Product | None,
                               others: Sequence[Operation],
                               event: OperationCompleted) -> tuple[Order | None, Operation | None]:
    if check_operation_completed(order, operation, event):
        return order, operation
    assert order is not None and operation is not None
    completed = replace(operation, status=OperationStatus.COMPLETED, completed_at=event.occurred_at)
    if _completes_order(order, product, operation, others):
        order = replace(order, status=OrderStatus.COMPLETED, completed_at=event.occurred_at)
    return order, completed


# PartsProduced: attributed to the order's running operation on that unit (order_id set) or to the
# only running operation on that unit; machine rejects are scrap.

class Attribution(NamedTuple):
    """Where a report about a work unit goes: an operation, a refusal, or nowhere (`key` and `refusal` None)."""

    key: OperationKey | None
    refusal: Refusal | None = None


UNATTRIBUTED = Attribution(None)


def attribute_to_running(order_id: str | None, equipment_id: str, orders: dict[str, Order | None],
                         running_on_unit: Iterable[Operation], attempted: str) -> Attribution:
    """With an order: its one running operation on the unit, else refused. Without: the unit's one
    running operation, else unattributed (none or several)."""
    running = sorted(o.key for o in running_on_unit)
    if order_id is None:
        return Attribution(running[0]) if len(running) == 1 else UNATTRIBUTED
    order = orders.get(order_id)
    if order is None:
        return Attribution(None, _never_released(order_id, f"{attempted} cannot be attributed to it"))
    mine = [key for key in running if key.order_id == order_id]
    if len(mine) == 1:
        return Attribution(mine[0])
    how_many = "no operation" if not mine else f"{len(mine)} operations"
    return Attribution(None, Refusal("order", order_id, order_id, order.status,
                                     f"{how_many} of order {order_id} running on {equipment_id}, so "
                                     f"{attempted} cannot be attributed to one operation"))


def decide_parts_produced(order: Order, operation: Operation, product: Product | None,
                          event: PartsProduced) -> list[Event]:
    final = is_final(product, operation.operation)
    derived: list[Event] = [ProductionReported(
        **_envelope(event, "production-reported"), order_id=order.order_id, operation=operation.operation,
        equipment_id=operation.equipment_id, product_id=order.product_id, lot_id=order.output_lot_id,
        good=event.good, scrap=event.reject, final_operation=final)]
    if final and event.good > 0 and not order.material_loaded and product is not None:
        for material_id, per_unit in _bom_by_material(product.bom):
            derived.append(MaterialConsumed(
                **_envelope(event, f"material-consumed:{material_id}"), order_id=order.order_id,
                operation=operation.operation, equipment_id=operation.equipment_id, material_id=material_id,
                quantity=per_unit * event.good, produced_lot_id=order.output_lot_id, backflushed=True))
    return derived


def _bom_by_material(bom: Iterable[BomLine]) -> list[tuple[str, float]]:
    """BOM lines of one material summed, in order of first appearance (one consumption event each)."""
    per_material: dict[str, float] = {}
    for line in bom:
        per_material[line.material_id] = per_material.get(line.material_id, 0.0) + line.quantity_per_unit
    return list(per_material.items())


def evolve_parts_produced(operation: Operation, event: PartsProduced) -> Operation:
    return replace(operation, good=operation.good + event.good, scrap=operation.scrap + event.reject)


# ScrapReported: moves parts the machine counted good to scrap (or rework), on the order's operation
# at that unit, running or completed. Emits nothing (see the module docstring).

def attribute_scrap(event: ScrapReported, orders: dict[str, Order | None],
                    on_unit: Iterable[Operation]) -> Attribution:
    """With an order: its one running operation on the unit, else its latest completed one there,
    else refused. Without an order: the unit's one running operation, else unattributed."""
    if event.order_id is None:
        running_on_unit = [o for o in on_unit if o.status == OperationStatus.RUNNING]
        return attribute_to_running(None, event.equipment_id, orders, running_on_unit, "ScrapReported")
    order = orders.get(event.order_id)
    if order is None:
        return Attribution(None, _never_released(event.order_id, "no scrap can be booked on it"))
    mine = [o for o in on_unit if o.order_id == event.order_id]
    running = [o for o in mine if o.status == OperationStatus.RUNNING]
    if len(running) == 1:
        return Attribution(running[0].key)
    if not running and mine:
        return Attribution(max(mine, key=lambda o: (o.completed_at, o.operation)).key)
    how_many = "no operation of it ran" if not mine else f"{len(running)} operations of it are running"
    return Attribution(None, Refusal("order", order.order_id, order.order_id, order.status,
                                     f"{how_many} on {event.equipment_id} for order {order.order_id}, so "
                                     "the scrap cannot be booked on one operation"))


def evolve_scrap_reported(operation: Operation, event: ScrapReported) -> Operation:
    if event.rework:
        return replace(operation, good=operation.good - event.quantity, rework=operation.rework + event.quantity)
    return replace(operation, good=operation.good - event.quantity, scrap=operation.scrap + event.quantity)


# MaterialLoaded: the order's consumption is booked by operators (inventory books it from the
# operator event), so execution stops backflushing it.

def evolve_material_loaded(order: Order, event: MaterialLoaded) -> Order:
    return order if order.material_loaded else replace(order, material_loaded=True)


# The batch container.

@dataclass(slots=True)
class OrderBook:
    """What one batch folds into.

    Before folding, the projection loads (see `keys_to_load`): every operation of each order the
    batch names, every RUNNING operation on each work unit it names, the order of every loaded
    operation and each named order (None when unknown), and the product of every loaded order and
    of each ProductDefined (None when unknown). After the fold, `changed_*_rows()` are the rows to
    write once each, and `derived` holds the derived events in the order they were decided (the
    same events the handlers return; use one or the other)."""

    orders: dict[str, Order | None] = field(default_factory=dict)
    operations: dict[OperationKey, Operation] = field(default_factory=dict)
    products: dict[str, Product | None] = field(default_factory=dict)
    changed_orders: set[str] = field(default_factory=set)
    changed_operations: set[OperationKey] = field(default_factory=set)
    changed_products: set[str] = field(default_factory=set)
    derived: list[Event] = field(default_factory=list)
    unattributed: int = 0  # part counts and scrap reports no single operation could be found for
    _by_order: dict[str, set[OperationKey]] = field(default_factory=dict, init=False, repr=False)
    _by_unit: dict[str, set[OperationKey]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for key, operation in list(self.operations.items()):
            if key != operation.key:
                raise ValueError(f"operation loaded under key {key} is {operation.key}")
            self._index(key)

    def _index(self, key: OperationKey) -> None:
        self._by_order.setdefault(key.order_id, set()).add(key)
        self._by_unit.setdefault(key.equipment_id, set()).add(key)

    def order(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def loaded_order(self, order_id: str) -> Order:
        """The order of a loaded operation: it exists, since an operation starts only for a known order."""
        order = self.orders.get(order_id)
        if order is None:
            raise LookupError(f"order {order_id} of a loaded operation was not loaded into the OrderBook")
        return order

    def product(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    def operations_of(self, order_id: str) -> list[Operation]:
        return [self.operations[k] for k in sorted(self._by_order.get(order_id, ()))]

    def operations_on(self, equipment_id: str) -> list[Operation]:
        return [self.operations[k] for k in sorted(self._by_unit.get(equipment_id, ()))]

    def has_operations_on(self, equipment_id: str) -> bool:
        return bool(self._by_unit.get(equipment_id))

    def running_on(self, equipment_id: str) -> list[Operation]:
        return [o for o in self.operations_on(equipment_id) if o.status == OperationStatus.RUNNING]

    def put_order(self, order: Order | None) -> None:
        if order is not None and order != self.orders.get(order.order_id):
            self.orders[order.order_id] = order
            self.changed_orders.add(order.order_id)

    def put_operation(self, operation: Operation | None) -> None:
        if operation is not None and operation != self.operations.get(operation.key):
            self.operations[operation.key] = operation
            self._index(operation.key)
            self.changed_operations.add(operation.key)

    def put_product(self, product: Product) -> None:
        if product != self.products.get(product.product_id):
            self.products[product.product_id] = product
            self.changed_products.add(product.product_id)

    def changed_order_rows(self) -> list[Order]:
        return [o for k in sorted(self.changed_orders) if (o := self.orders[k]) is not None]

    def changed_operation_rows(self) -> list[Operation]:
        return [self.operations[k] for k in sorted(self.changed_operations)]

    def changed_product_rows(self) -> list[Product]:
        return [p for k in sorted(self.changed_products) if (p := self.products[k]) is not None]

    def wip_rows(self) -> list[WipRow]:
        """WIP of the changed operations (their orders are loaded by construction)."""
        rows = []
        for operation in self.changed_operation_rows():
            order = self.orders.get(operation.order_id)
            if order is not None:
                rows.append(wip_row(order, operation))
        return rows

    def emit(self, derived: list[Event]) -> list[Event]:
        self.derived.extend(derived)
        return derived


# Handlers: apply decide and evolve to the book. Each returns the derived events it decided.

def on_product_defined(book: OrderBook, event: ProductDefined) -> list[Event]:
    book.put_product(evolve_product(book.product(event.product_id), event))
    return []


def on_order_released(book: OrderBook, event: ProductionOrderReleased) -> list[Event]:
    order = book.order(event.order_id)
    derived = decide_order_released(order, event)
    book.put_order(evolve_order_released(order, event))
    return book.emit(derived)


def on_operation_started(book: OrderBook, event: OperationStarted) -> list[Event]:
    order = book.order(event.order_id)
    operation = book.operations.get(OperationKey(event.order_id, event.operation, event.equipment_id))
    derived = decide_operation_started(order, operation, event)
    new_order, new_operation = evolve_operation_started(order, operation, event)
    book.put_order(new_order)
    book.put_operation(new_operation)
    return book.emit(derived)


def on_operation_completed(book: OrderBook, event: OperationCompleted) -> list[Event]:
    key = OperationKey(event.order_id, event.operation, event.equipment_id)
    order = book.order(event.order_id)
    operation = book.operations.get(key)
    product = book.product(order.product_id) if order is not None else None
    others = [o for o in book.operations_of(event.order_id) if o.key != key]
    derived = decide_operation_completed(order, operation, product, others, event)
    new_order, new_operation = evolve_operation_completed(order, operation, product, others, event)
    book.put_order(new_order)
    book.put_operation(new_operation)
    return book.emit(derived)


def on_parts_produced(book: OrderBook, event: PartsProduced) -> list[Event]:
    """A zero report is no fact about any order: nothing is attributed, refused or counted."""
    if event.good == 0 and event.reject == 0:
        return []
    if event.order_id is None and not book.has_operations_on(event.equipment_id):
        book.unattributed += 1
        return []
    attribution = attribute_to_running(event.order_id, event.equipment_id, book.orders,
                                       book.running_on(event.equipment_id), "PartsProduced")
    if attribution.refusal is not None:
        return book.emit([refused(event, attribution.refusal, event.equipment_id)])
    if attribution.key is None:
        book.unattributed += 1
        return []
    operation = book.operations[attribution.key]
    order = book.loaded_order(operation.order_id)
    derived = decide_parts_produced(order, operation, book.product(order.product_id), event)
    book.put_operation(evolve_parts_produced(operation, event))
    return book.emit(derived)


def on_scrap_reported(book: OrderBook, event: ScrapReported) -> list[Event]:
    attribution = attribute_scrap(event, book.orders, book.operations_on(event.equipment_id))
    if attribution.refusal is not None:
        return book.emit([refused(event, attribution.refusal, event.equipment_id)])
    if attribution.key is None:
        book.unattributed += 1
        return []
    book.put_operation(evolve_scrap_reported(book.operations[attribution.key], event))
    return []


def on_material_loaded(book: OrderBook, event: MaterialLoaded) -> list[Event]:
    """Loading for an order that runs elsewhere, or not yet, is normal; only an unknown order is refused."""
    if event.order_id is not None:
        order = book.order(event.order_id)
        if order is None:
            refusal = _never_released(event.order_id, "no material can be loaded for it")
            return book.emit([refused(event, refusal, event.equipment_id)])
    else:
        attribution = attribute_to_running(None, event.equipment_id, book.orders,
                                           book.running_on(event.equipment_id), "MaterialLoaded")
        if attribution.key is None:
            book.unattributed += 1
            return []
        order = book.loaded_order(attribution.key.order_id)
    book.put_order(evolve_material_loaded(order, event))
    return []


OrderHandler = Callable[[OrderBook, Event], list[Event]]

ORDER_HANDLERS: dict[type, OrderHandler] = {
    ProductDefined: on_product_defined,
    ProductionOrderReleased: on_order_released,
    OperationStarted: on_operation_started,
    OperationCompleted: on_operation_completed,
    PartsProduced: on_parts_produced,
    ScrapReported: on_scrap_reported,
    MaterialLoaded: on_material_loaded,
}


def fold_orders(book: OrderBook, events: Iterable[Event]) -> list[Event]:
    """Fold events in log order; event types the order core does not handle are skipped."""
    derived: list[Event] = []
    for event in events:
        handler = ORDER_HANDLERS.get(type(event))
        if handler is not None:
            derived.extend(handler(book, event))
    return derived


@dataclass(frozen=True, slots=True)
class KeysToLoad:
    """What a projection loads into an OrderBook before folding a batch (see OrderBook)."""

    order_ids: frozenset[str]
    equipment_ids: frozenset[str]
    product_ids: frozenset[str]


def keys_to_load(events: Iterable[Event]) -> KeysToLoad:
    """Orders named by the batch, units whose operations it may touch, products it defines.
    Add the product_id of every loaded order to `product_ids` before loading products."""
    orders: set[str] = set()
    units: set[str] = set()
    products: set[str] = set()
    for event in events:
        if type(event) not in ORDER_HANDLERS:
            continue
        order_id = getattr(event, "order_id", None)
        if order_id is not None:
            orders.add(order_id)
        equipment_id = getattr(event, "equipment_id", None)
        if equipment_id is not None:
            units.add(equipment_id)
        if isinstance(event, ProductionOrderReleased | ProductDefined):
            products.add(event.product_id)
    return KeysToLoad(frozenset(orders), frozenset(units), frozenset(products))
