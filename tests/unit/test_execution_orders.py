"""Execution's order core, Given/When/Then over events: orders, operations, WIP, backflush, refusals."""
import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from services.execution.orders import (
    ORDER_HANDLERS,
    Operation,
    OperationKey,
    OperationStatus,
    Order,
    OrderBook,
    OrderStatus,
    Product,
    fold_orders,
    keys_to_load,
    wip_row,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
PRESS = "acme.berlin.assembly.line1.press07"
WELD = "acme.berlin.assembly.line1.weld02"
WELD_B = "acme.berlin.assembly.line1.weld03"
BRACKET = "P-BRACKET-01"
PLATE = "P-PLATE-02"  # no routing
STEEL = "M-STEEL-2MM"
BOLT = "M-BOLT-M6"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def envelope(event_id: str, minutes: float, source: str = "terminal-07", correlation_id: str | None = None) -> dict:
    return {"event_id": event_id, "occurred_at": at(minutes), "recorded_at": at(minutes) + timedelta(seconds=2),
            "source": source, "correlation_id": correlation_id}


def product_defined(product_id: str = BRACKET, routing=(("0010", PRESS), ("0020", WELD)),
                    bom=((STEEL, 0.25), (BOLT, 2.0)), event_id: str = "erp-p1") -> ProductDefined:
    return ProductDefined(**envelope(event_id, -60, "erp"), product_id=product_id, name="Bracket", ideal_cycle_time_s=6.0,
                          bom=tuple(BomLine(material_id=m, quantity_per_unit=q) for m, q in bom),
                          routing=tuple(RoutingStep(operation=op, equipment_id=unit, ideal_cycle_time_s=6.0)
                                        for op, unit in routing))


def released(order_id: str = "WO-1042", product_id: str = BRACKET, quantity: float = 100,
             event_id: str | None = None) -> ProductionOrderReleased:
    return ProductionOrderReleased(**envelope(event_id or f"erp-{order_id}", -30, "erp"), order_id=order_id,
                                   product_id=product_id, quantity=quantity, due_at=at(8 * 60))


def started(event_id: str, minutes: float, operation: str = "0010", unit: str = PRESS,
            order_id: str = "WO-1042", correlation_id: str | None = None) -> OperationStarted:
    return OperationStarted(**envelope(event_id, minutes, correlation_id=correlation_id), order_id=order_id,
                            operation=operation, equipment_id=unit, operator_id="OP-0231")


def completed(event_id: str, minutes: float, operation: str = "0010", unit: str = PRESS,
              order_id: str = "WO-1042") -> OperationCompleted:
    return OperationCompleted(**envelope(event_id, minutes), order_id=order_id, operation=operation,
                              equipment_id=unit, operator_id="OP-0231")


def parts(event_id: str, minutes: float, good: int, reject: int = 0, unit: str = PRESS,
          order_id: str | None = None) -> PartsProduced:
    return PartsProduced(**envelope(event_id, minutes, "edge-berlin-01"), equipment_id=unit, good=good,
                         reject=reject, order_id=order_id)


def scrap(event_id: str, minutes: float, quantity: int, unit: str = PRESS, order_id: str | None = "WO-1042",
          rework: bool = False) -> ScrapReported:
    return ScrapReported(**envelope(event_id, minutes), equipment_id=unit, order_id=order_id, quantity=quantity,
                         reason_code="BURR", rework=rework)


def loaded(event_id: str, minutes: float, unit: str = WELD, order_id: str | None = "WO-1042") -> MaterialLoaded:
    return MaterialLoaded(**envelope(event_id, minutes), equipment_id=unit, order_id=order_id,
                          lot_id="LOT-2026-0117", quantity=25.0)


def given_events(*events: Event) -> OrderBook:
    book = OrderBook()
    fold_orders(book, events)
    return book


def snapshot(book: OrderBook) -> tuple:
    return (dict(book.orders), dict(book.operations), dict(book.products), book.unattributed)


def when(book: OrderBook, event: Event) -> list[Event]:
    return ORDER_HANDLERS[type(event)](book, event)


def only_refusal(derived: list[Event]) -> TransitionRefused:
    assert len(derived) == 1 and isinstance(derived[0], TransitionRefused), derived
    return derived[0]


def op(book: OrderBook, operation: str = "0010", unit: str = PRESS, order_id: str = "WO-1042") -> Operation:
    return book.operations[OperationKey(order_id, operation, unit)]


RELEASED_BRACKET = (product_defined(), released())


# Orders and operations: the happy path.

def test_a_release_makes_a_released_order():
    book = given_events(product_defined())
    assert when(book, released()) == []
    assert book.orders["WO-1042"] == Order("WO-1042", BRACKET, 100, at(8 * 60))
    assert book.changed_orders == {"WO-1042"}


def test_the_first_operation_start_starts_the_order():
    book = given_events(*RELEASED_BRACKET)
    (order_started,) = when(book, started("term-1", 0))
    assert order_started == OrderStarted(
        event_id="WO-1042:order-started", occurred_at=at(0), recorded_at=at(0) + timedelta(seconds=2),
        source="execution", correlation_id="term-1", order_id="WO-1042", product_id=BRACKET, quantity=100,
        due_at=at(8 * 60), operation="0010", equipment_id=PRESS)
    assert book.orders["WO-1042"].status == OrderStatus.STARTED
    assert book.orders["WO-1042"].started_at == at(0)
    assert op(book) == Operation("WO-1042", "0010", PRESS, OperationStatus.RUNNING, at(0))


def test_derived_events_copy_the_correlation_id_of_their_cause():
    book = given_events(*RELEASED_BRACKET)
    (order_started,) = when(book, started("term-1", 0, correlation_id="ERP-TX-77"))
    assert order_started.correlation_id == "ERP-TX-77"


def test_a_second_operation_start_does_not_start_the_order_again():
    book = given_events(*RELEASED_BRACKET, started("term-1", 0))
    assert when(book, started("term-2", 5, "0020", WELD)) == []
    assert book.orders["WO-1042"].started_at == at(0)


def test_a_late_start_moves_the_order_start_back_to_the_earliest_start():
    book = given_events(*RELEASED_BRACKET, started("term-1", 10))
    when(book, started("term-2", 3, "0020", WELD))
    assert book.orders["WO-1042"].started_at == at(3)


def test_completing_a_running_operation_completes_it():
    book = given_events(*RELEASED_BRACKET, started("term-1", 0))
    assert when(book, completed("term-2", 30)) == []
    assert op(book).status == OperationStatus.COMPLETED and op(book).completed_at == at(30)
    assert book.orders["WO-1042"].status == OrderStatus.STARTED


def test_completing_the_last_routing_step_completes_the_order_with_its_counts():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), parts("m1", 10, 98, 2, PRESS), completed("t2", 30),
                        started("t3", 31, "0020", WELD), parts("m2", 50, 95, 3, WELD), scrap("t4", 55, 1, WELD),
                        scrap("t5", 56, 2, WELD, rework=True))
    (done,) = when(book, completed("t6", 90, "0020", WELD))
    assert done == OrderCompleted(
        event_id="WO-1042:order-completed", occurred_at=at(90), recorded_at=at(90) + timedelta(seconds=2),
        source="execution", correlation_id="t6", order_id="WO-1042", product_id=BRACKET, quantity=100,
        operation="0020", equipment_id=WELD, good=92, scrap=4, rework=2, started_at=at(0), duration_s=5400.0)
    order = book.orders["WO-1042"]
    assert order.status == OrderStatus.COMPLETED and order.completed_at == at(90)


def test_completing_a_step_that_is_not_last_in_the_routing_leaves_the_order_started():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0020", WELD), started("t2", 1, "0010", PRESS))
    assert when(book, completed("t3", 30, "0010", PRESS)) == []
    assert book.orders["WO-1042"].status == OrderStatus.STARTED


def test_a_final_step_split_over_two_units_completes_the_order_when_the_last_unit_finishes():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0020", WELD), started("t2", 0, "0020", WELD_B),
                        parts("m1", 10, 40, 0, WELD), parts("m2", 10, 60, 1, WELD_B))
    assert when(book, completed("t3", 20, "0020", WELD)) == []
    assert book.orders["WO-1042"].status == OrderStatus.STARTED
    (done,) = when(book, completed("t4", 25, "0020", WELD_B))
    assert isinstance(done, OrderCompleted) and (done.good, done.scrap) == (100, 1)


def test_without_routing_the_order_completes_when_no_operation_is_still_running():
    book = given_events(product_defined(PLATE, routing=()), released("WO-2001", PLATE, 10),
                        started("t1", 0, "cut", PRESS, "WO-2001"), started("t2", 1, "deburr", WELD, "WO-2001"),
                        parts("m1", 5, 10, 0, WELD))
    assert when(book, completed("t3", 10, "cut", PRESS, "WO-2001")) == []
    assert book.orders["WO-2001"].status == OrderStatus.STARTED
    (done,) = when(book, completed("t4", 12, "deburr", WELD, "WO-2001"))
    assert isinstance(done, OrderCompleted) and done.operation == "deburr" and done.good == 10
    assert book.orders["WO-2001"].status == OrderStatus.COMPLETED


def test_an_order_for_an_unknown_product_completes_like_one_without_routing():
    book = given_events(released("WO-2002", "P-UNKNOWN", 5), started("t1", 0, "0010", PRESS, "WO-2002"))
    (done,) = when(book, completed("t2", 10, "0010", PRESS, "WO-2002"))
    assert isinstance(done, OrderCompleted)


def test_a_release_before_the_start_replaces_the_order():
    book = given_events(*RELEASED_BRACKET)
    assert when(book, released(quantity=120, event_id="erp-fix")) == []
    assert book.orders["WO-1042"].quantity == 120


def test_a_product_redefinition_replaces_the_product():
    book = given_events(product_defined())
    when(book, product_defined(routing=(("0010", PRESS),), bom=((STEEL, 0.5),), event_id="erp-p2"))
    assert book.products[BRACKET] == Product(BRACKET, 6.0, (BomLine(material_id=STEEL, quantity_per_unit=0.5),),
                                             (RoutingStep(operation="0010", equipment_id=PRESS,
                                                          ideal_cycle_time_s=6.0),))


# Refusals: never an exception; one TransitionRefused naming the rule; nothing changes.

def refuse(book: OrderBook, event: Event) -> TransitionRefused:
    before = snapshot(book)
    changed = (set(book.changed_orders), set(book.changed_operations))
    refusal = only_refusal(when(book, event))
    assert snapshot(book) == before
    assert (book.changed_orders, book.changed_operations) == changed
    assert refusal.event_id == f"{event.event_id}:transition-refused"
    assert refusal.caused_by == event.event_id and refusal.attempted == type(event).__name__
    assert refusal.source == "execution"
    return refusal


def test_completing_an_operation_never_started_is_refused():
    book = given_events(*RELEASED_BRACKET)
    refusal = refuse(book, completed("t1", 5))
    assert (refusal.entity, refusal.entity_id, refusal.current_status) == ("operation", f"WO-1042/0010/{PRESS}", None)
    assert refusal.order_id == "WO-1042" and refusal.equipment_id == PRESS
    assert "never started" in refusal.reason


def test_completing_an_operation_twice_is_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), completed("t2", 5))
    refusal = refuse(book, completed("t3", 6))
    assert refusal.current_status == "COMPLETED" and "only a running operation" in refusal.reason


def test_starting_an_operation_of_a_completed_order_is_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0020", WELD), completed("t2", 5, "0020", WELD))
    refusal = refuse(book, started("t3", 6, "0010", PRESS))
    assert (refusal.entity, refusal.entity_id, refusal.current_status) == ("order", "WO-1042", "COMPLETED")
    assert "is completed" in refusal.reason


@pytest.mark.parametrize("event", [started("t1", 0, order_id="WO-9999"), completed("t1", 0, order_id="WO-9999"),
                                   parts("m1", 0, 5, order_id="WO-9999"), scrap("t1", 0, 1, order_id="WO-9999"),
                                   loaded("t1", 0, order_id="WO-9999")],
                         ids=lambda e: type(e).__name__)
def test_events_for_an_order_never_released_are_refused(event):
    book = given_events(*RELEASED_BRACKET)
    refusal = refuse(book, event)
    assert (refusal.entity, refusal.entity_id, refusal.current_status) == ("order", "WO-9999", None)
    assert "WO-9999 was never released" in refusal.reason


def test_a_double_start_is_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0))
    refusal = refuse(book, started("t2", 1))
    assert refusal.current_status == "RUNNING" and "already running" in refusal.reason


def test_restarting_a_completed_operation_on_the_same_unit_is_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), completed("t2", 5))
    refusal = refuse(book, started("t3", 6))
    assert refusal.entity == "operation" and refusal.current_status == "COMPLETED"
    assert "cannot be restarted" in refusal.reason


def test_the_same_operation_may_run_again_on_another_unit():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), completed("t2", 5))
    assert when(book, started("t3", 6, "0010", WELD_B)) == []


def test_a_release_of_an_order_that_has_started_is_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0))
    refusal = refuse(book, released(quantity=50, event_id="erp-late"))
    assert refusal.current_status == "STARTED" and refusal.equipment_id is None


def test_parts_for_an_order_with_no_operation_running_on_that_unit_are_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0010", PRESS))
    refusal = refuse(book, parts("m1", 5, 10, unit=WELD, order_id="WO-1042"))
    assert refusal.entity == "order" and refusal.current_status == "STARTED"
    assert f"no operation of order WO-1042 running on {WELD}" in refusal.reason


def test_scrap_for_an_order_that_never_ran_on_that_unit_is_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0010", PRESS))
    refusal = refuse(book, scrap("t2", 5, 3, unit=WELD))
    assert "cannot be booked" in refusal.reason


def test_counts_and_scrap_naming_an_order_with_two_operations_running_on_the_unit_are_refused():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0010", PRESS), started("t2", 0, "0020", PRESS))
    assert "2 operations of order WO-1042 running" in refuse(book, parts("m1", 5, 10, order_id="WO-1042")).reason
    assert "2 operations of it are running" in refuse(book, scrap("t3", 6, 1)).reason


def test_material_may_be_loaded_for_an_order_before_it_starts():
    book = given_events(*RELEASED_BRACKET)
    assert when(book, loaded("t1", 0, PRESS)) == []
    assert book.orders["WO-1042"].material_loaded and book.changed_orders == {"WO-1042"}


# Attribution of machine counts.

def test_parts_with_an_order_go_to_that_orders_running_operation_on_the_unit():
    book = given_events(*RELEASED_BRACKET, released("WO-1043"), started("t1", 0),
                        started("t2", 0, "0010", PRESS, "WO-1043"))
    (report,) = when(book, parts("m1", 5, 10, 1, order_id="WO-1043"))
    assert report == ProductionReported(
        event_id="m1:production-reported", occurred_at=at(5), recorded_at=at(5) + timedelta(seconds=2),
        source="execution", correlation_id="m1", order_id="WO-1043", operation="0010", equipment_id=PRESS,
        product_id=BRACKET, lot_id="LOT-WO-1043", good=10, scrap=1, final_operation=False)
    assert (op(book, order_id="WO-1043").good, op(book, order_id="WO-1043").scrap) == (10, 1)
    assert op(book, order_id="WO-1042").good == 0


def test_parts_without_an_order_go_to_the_single_running_operation_on_the_unit():
    book = given_events(*RELEASED_BRACKET, started("t1", 0))
    (report,) = when(book, parts("m1", 5, 7))
    assert isinstance(report, ProductionReported) and report.order_id == "WO-1042"
    assert op(book).good == 7 and book.unattributed == 0


def test_parts_without_an_order_and_nothing_running_are_not_attributed():
    book = given_events(*RELEASED_BRACKET)
    before = snapshot(book)
    assert when(book, parts("m1", 5, 7)) == []
    assert book.unattributed == 1 and snapshot(book)[:3] == before[:3]


def test_parts_without_an_order_and_several_running_are_not_attributed():
    book = given_events(*RELEASED_BRACKET, released("WO-1043"), started("t1", 0),
                        started("t2", 0, "0010", PRESS, "WO-1043"))
    assert when(book, parts("m1", 5, 7)) == []
    assert book.unattributed == 1
    assert op(book).good == 0 and op(book, order_id="WO-1043").good == 0


def test_a_report_of_zero_parts_is_no_fact_at_all():
    book = given_events(*RELEASED_BRACKET)
    assert when(book, parts("m1", 5, 0, 0, order_id="WO-9999")) == []
    assert book.unattributed == 0


# Backflush.

def test_good_parts_of_the_final_operation_backflush_every_bom_line():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0020", WELD))
    report, steel, bolts = when(book, parts("m1", 5, 40, 3, WELD))
    assert isinstance(report, ProductionReported) and report.final_operation
    assert steel == MaterialConsumed(
        event_id=f"m1:material-consumed:{STEEL}", occurred_at=at(5), recorded_at=at(5) + timedelta(seconds=2),
        source="execution", correlation_id="m1", order_id="WO-1042", operation="0020", equipment_id=WELD,
        material_id=STEEL, quantity=10.0, produced_lot_id="LOT-WO-1042", backflushed=True)
    assert (bolts.material_id, bolts.quantity, bolts.event_id) == (BOLT, 80.0, f"m1:material-consumed:{BOLT}")


def test_parts_of_an_earlier_operation_backflush_nothing():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0010", PRESS))
    (report,) = when(book, parts("m1", 5, 40))
    assert not report.final_operation


def test_only_rejects_on_the_final_operation_backflush_nothing():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0020", WELD))
    assert [type(e) for e in when(book, parts("m1", 5, 0, 4, WELD))] == [ProductionReported]


def test_bom_lines_of_the_same_material_are_backflushed_as_one():
    book = given_events(product_defined(bom=((STEEL, 0.25), (BOLT, 2.0), (STEEL, 0.5))), released(),
                        started("t1", 0, "0020", WELD))
    _, steel, bolts = when(book, parts("m1", 5, 4, 0, WELD))
    assert (steel.material_id, steel.quantity, bolts.quantity) == (STEEL, 3.0, 8.0)


@pytest.mark.parametrize("loaded_for", ["WO-1042", None])
def test_no_backflush_once_operators_loaded_material_for_the_order(loaded_for):
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0020", WELD), loaded("t2", 1, WELD, loaded_for))
    assert book.orders["WO-1042"].material_loaded
    assert [type(e) for e in when(book, parts("m1", 5, 40, 0, WELD))] == [ProductionReported]


def test_material_loaded_without_an_order_and_nothing_running_is_not_attributed():
    book = given_events(*RELEASED_BRACKET)
    assert when(book, loaded("t1", 1, WELD, None)) == []
    assert book.unattributed == 1 and not book.orders["WO-1042"].material_loaded


# Operators' scrap and rework: moved from good, nothing emitted.

def test_scrap_moves_good_parts_to_scrap_and_rework_to_rework():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), parts("m1", 5, 50, 2))
    assert when(book, scrap("t2", 6, 5)) == []
    assert when(book, scrap("t3", 7, 3, rework=True)) == []
    assert (op(book).good, op(book).scrap, op(book).rework) == (42, 7, 3)


def test_scrap_can_be_booked_on_a_completed_operation():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), parts("m1", 5, 50), completed("t2", 6))
    when(book, scrap("t3", 7, 4))
    assert (op(book).good, op(book).scrap) == (46, 4)


def test_scrap_goes_to_the_running_operation_rather_than_a_completed_one_on_the_same_unit():
    book = given_events(*RELEASED_BRACKET, started("t1", 0, "0010", PRESS), parts("m1", 1, 10),
                        completed("t2", 2, "0010", PRESS), started("t3", 3, "0020", PRESS), parts("m2", 4, 10))
    when(book, scrap("t4", 5, 2))
    assert op(book, "0020").scrap == 2 and op(book, "0010").scrap == 0


def test_scrap_without_an_order_goes_to_the_single_running_operation():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), parts("m1", 5, 50))
    when(book, scrap("t2", 6, 5, order_id=None))
    assert op(book).scrap == 5


def test_scrap_processed_before_the_machine_count_leaves_good_negative_until_the_count_arrives():
    # documented: counts are sums, so the order in which two topics are processed does not matter
    book = given_events(*RELEASED_BRACKET, started("t1", 0), scrap("t2", 5, 3))
    assert (op(book).good, op(book).scrap) == (-3, 3)
    when(book, parts("m1", 4, 10))
    assert (op(book).good, op(book).scrap) == (7, 3)


# WIP.

def test_wip_row_of_a_running_operation():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), parts("m1", 5, 30, 2), scrap("t2", 6, 1, rework=True))
    row = wip_row(book.orders["WO-1042"], op(book))
    assert (row.in_process, row.good, row.scrap, row.rework, row.remaining) == (True, 29, 2, 1, 71)


def test_wip_remaining_never_goes_below_zero_and_a_completed_operation_is_not_in_process():
    book = given_events(*RELEASED_BRACKET, started("t1", 0), parts("m1", 5, 130), completed("t2", 9))
    row = wip_row(book.orders["WO-1042"], op(book))
    assert (row.in_process, row.remaining) == (False, 0)
    assert book.wip_rows() == [row]


# Determinism and the container.

DAY = (*RELEASED_BRACKET, started("t1", 0), parts("m1", 5, 50, 1), completed("t2", 30),
       started("t3", 31, "0020", WELD), parts("m2", 40, 45, 2, WELD), scrap("t4", 41, 1, WELD),
       completed("t5", 60, "0020", WELD), started("t6", 61))


def test_the_same_events_decide_the_same_derived_events_with_the_same_ids():
    first, second = OrderBook(), OrderBook()
    assert fold_orders(first, DAY) == fold_orders(second, DAY)
    assert first.derived == second.derived and snapshot(first) == snapshot(second)
    ids = [e.event_id for e in first.derived]
    assert len(ids) == len(set(ids))


def test_the_book_collects_exactly_what_the_handlers_return():
    book = OrderBook()
    assert fold_orders(book, DAY) == book.derived
    assert [type(e).__name__ for e in book.derived] == [
        "OrderStarted", "ProductionReported", "ProductionReported", "MaterialConsumed", "MaterialConsumed",
        "OrderCompleted", "TransitionRefused"]


def test_a_book_loaded_from_rows_reports_only_the_rows_that_changed():
    order = Order("WO-1042", BRACKET, 100, None, OrderStatus.STARTED, at(0))
    running = Operation("WO-1042", "0010", PRESS, OperationStatus.RUNNING, at(0), good=5)
    other = Operation("WO-1042", "0020", WELD, OperationStatus.RUNNING, at(0))
    book = OrderBook(orders={"WO-1042": order}, operations={running.key: running, other.key: other},
                     products={BRACKET: None})
    fold_orders(book, [parts("m1", 5, 3)])
    assert book.changed_order_rows() == [] and book.changed_product_rows() == []
    assert book.changed_operation_rows() == [Operation("WO-1042", "0010", PRESS, OperationStatus.RUNNING, at(0), good=8)]


def test_a_book_refuses_an_operation_loaded_under_another_key():
    running = Operation("WO-1042", "0010", PRESS, OperationStatus.RUNNING, at(0))
    with pytest.raises(ValueError, match="loaded under key"):
        OrderBook(operations={OperationKey("WO-1042", "0020", PRESS): running})


def test_keys_to_load_names_orders_units_and_products_of_the_batch():
    keys = keys_to_load([product_defined(), released("WO-7"), parts("m1", 0, 1, unit=WELD),
                         started("t1", 0, order_id="WO-8")])
    assert keys.order_ids == {"WO-7", "WO-8"} and keys.equipment_ids == {WELD, PRESS}
    assert keys.product_ids == {BRACKET}


# The events against their schemas: the field names are the contract the edge maps with.

@pytest.mark.parametrize("cls, context", [
    (ProductDefined, "plan"), (ProductionOrderReleased, "plan"), (OperationStarted, "operator"),
    (OperationCompleted, "operator"), (ScrapReported, "operator"), (MaterialLoaded, "operator"),
    (OrderStarted, "execution"), (OrderCompleted, "execution"), (ProductionReported, "execution"),
    (MaterialConsumed, "execution"), (TransitionRefused, "execution")])
def test_each_event_class_has_exactly_its_schemas_fields(cls, context):
    schema = json.loads((SCHEMAS / context / f"{cls.__name__}.avsc").read_text())
    assert [f.name for f in fields(cls)] == [f["name"] for f in schema["fields"]]


def test_product_defined_from_an_avro_record_holds_tuples_of_frozen_lines():
    record = {**envelope("erp-p1", 0, "erp"), "product_id": BRACKET, "name": "Bracket", "unit": None,
              "ideal_cycle_time_s": 6.0, "bom": [{"material_id": STEEL, "quantity_per_unit": 0.25}],
              "routing": [{"operation": "0010", "equipment_id": PRESS, "ideal_cycle_time_s": 5.5}]}
    event = ProductDefined.from_record(record)
    assert event.bom == (BomLine(material_id=STEEL, quantity_per_unit=0.25),)
    assert event.routing == (RoutingStep(operation="0010", equipment_id=PRESS, ideal_cycle_time_s=5.5),)
    assert event.to_record() == record
    assert ProductDefined.from_record({**record, "bom": [], "routing": []}).routing == ()


# Properties: random operator and machine events, valid and invalid, in any order.

ORDERS = ["WO-1042", "WO-1042", "WO-1043", "WO-9999"]  # repeated: valid orders are likelier than unknown
OPERATIONS = ["0010", "0020"]
UNITS = [PRESS, WELD]

_order = st.sampled_from(ORDERS)
_operation = st.sampled_from(OPERATIONS)
_unit = st.sampled_from(UNITS)
_minutes = st.integers(min_value=0, max_value=480)
_master_data = st.permutations([  # usually all of it first; the shop floor may redefine and re-release
    product_defined(BRACKET, event_id="?"), product_defined(PLATE, routing=(), event_id="?"),
    released("WO-1042", BRACKET, 100, "?"), released("WO-1043", PLATE, 20, "?")])
_starts = st.builds(lambda m, p, u, o: started("?", m, p, u, o), _minutes, _operation, _unit, _order)
_counts = st.builds(lambda m, g, r, u, o: parts("?", m, g, r, u, o), _minutes, st.integers(0, 50), st.integers(0, 5),
                    _unit, st.sampled_from([None, None, *ORDERS]))
_shop_floor = st.one_of(  # starts and counts repeated: they open the paths the other events act on
    _starts, _starts, _counts, _counts,
    st.builds(lambda m, p, u, o: completed("?", m, p, u, o), _minutes, _operation, _unit, _order),
    st.builds(lambda m, q, u, o, rw: scrap("?", m, q, u, o, rw), _minutes, st.integers(1, 20), _unit,
              st.one_of(st.none(), _order), st.booleans()),
    st.builds(lambda m, u, o: loaded("?", m, u, o), _minutes, _unit, st.one_of(st.none(), _order)),
    st.builds(lambda p, r: product_defined(p, routing=r, event_id="?"), st.sampled_from([BRACKET, PLATE]),
              st.sampled_from([(), (("0010", PRESS), ("0020", WELD))])),
    st.builds(lambda o, p, q: released(o, p, q, event_id="?"), st.sampled_from(["WO-1042", "WO-1043"]),
              st.sampled_from([BRACKET, PLATE]), st.integers(min_value=1, max_value=200)),
)
_event_streams = st.tuples(_master_data, st.lists(_shop_floor, min_size=1, max_size=60)).map(
    lambda streams: [type(e)(**{**{f.name: getattr(e, f.name) for f in fields(e)}, "event_id": f"ev-{i}"})
                     for i, e in enumerate(streams[0] + streams[1])])


@settings(max_examples=300, deadline=None)
@given(_event_streams)
def test_any_event_stream_never_raises_keeps_counts_sane_and_refusals_change_nothing(events):
    book = OrderBook()
    scrapped: set[OperationKey] = set()
    for event in events:
        before = snapshot(book)
        derived = when(book, event)
        if any(isinstance(e, TransitionRefused) for e in derived):
            assert len(derived) == 1 and snapshot(book) == before
        if isinstance(event, ScrapReported):
            scrapped |= {k for k, o in book.operations.items() if before[1].get(k) != o}
        for key, operation in book.operations.items():
            assert operation.scrap >= 0 and operation.rework >= 0
            assert operation.good + operation.scrap + operation.rework >= 0
            assert operation.good >= 0 or key in scrapped  # negative only after an operator's scrap (documented)
            assert book.orders[key.order_id] is not None
        for order in book.orders.values():
            assert order is not None
            assert (order.status == OrderStatus.COMPLETED) == (order.completed_at is not None)
            assert (order.status == OrderStatus.RELEASED) == (order.started_at is None)
    ids = [e.event_id for e in book.derived]
    assert len(ids) == len(set(ids))
    assert all(e.quantity > 0 for e in book.derived if isinstance(e, MaterialConsumed))
    assert all(e.good >= 0 and e.scrap >= 0 and e.duration_s >= 0 for e in book.derived
               if isinstance(e, OrderCompleted))


def _load(table: OrderBook, batch: list[Event]) -> OrderBook:
    """What a projection does: load exactly the rows the OrderBook docstring asks for from the tables."""
    keys = keys_to_load(batch)
    operations = {k: o for k, o in table.operations.items()
                  if k.order_id in keys.order_ids
                  or (k.equipment_id in keys.equipment_ids and o.status == OperationStatus.RUNNING)}
    order_ids = keys.order_ids | {k.order_id for k in operations}
    orders = {o: table.orders.get(o) for o in order_ids}
    product_ids = keys.product_ids | {o.product_id for o in orders.values() if o is not None}
    return OrderBook(orders=orders, operations=operations, products={p: table.products.get(p) for p in product_ids})


def _save(table: OrderBook, book: OrderBook) -> None:
    for order in book.changed_order_rows():
        table.put_order(order)
    for operation in book.changed_operation_rows():
        table.put_operation(operation)
    for product in book.changed_product_rows():
        table.put_product(product)


@settings(max_examples=200, deadline=None)
@given(_event_streams, st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=20))
def test_folding_in_batches_loaded_by_the_documented_keys_equals_folding_at_once(events, batch_sizes):
    at_once = OrderBook()
    expected = fold_orders(at_once, events)
    table, derived, position = OrderBook(), [], 0
    sizes = iter(batch_sizes * 60)
    while position < len(events):
        batch = events[position:position + next(sizes)]
        book = _load(table, batch)
        derived += fold_orders(book, batch)
        _save(table, book)
        position += len(batch)
    assert derived == expected
    assert table.operations == at_once.operations
    assert {k: v for k, v in table.orders.items()} == {k: v for k, v in at_once.orders.items() if v is not None}
    assert table.products == {k: v for k, v in at_once.products.items() if v is not None}
