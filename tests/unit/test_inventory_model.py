"""Inventory's pure core: Given lots and stock, When an event is folded, Then the book and derived events."""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inventory import model
from services.inventory.events import (
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
from services.inventory.handlers import fold
from services.inventory.model import Book, Kind, LotStatus

T0 = datetime(2026, 11, 2, 6, tzinfo=UTC)
PRESS = "acme.berlin.assembly.line1.press07"
STEEL = "STEEL-S235"
_counter = iter(range(10**9))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def env(minutes: float, recorded: float | None = None) -> dict:
    i = next(_counter)
    return {"event_id": f"ev-{i}", "occurred_at": at(minutes),
            "recorded_at": at(minutes if recorded is None else recorded) + timedelta(microseconds=i % 1000),
            "source": "test"}


def received(lot: str, quantity: float, minutes: float = 0, material: str = STEEL, location: str = "WH1-A-03"):
    return MaterialLotReceived(**env(minutes), lot_id=lot, material_id=material, quantity=quantity, unit="kg",
                               location_id=location)


def loaded(lot: str, quantity: float, minutes: float = 10, order: str | None = "WO-1042"):
    return MaterialLoaded(**env(minutes), equipment_id=PRESS, order_id=order, lot_id=lot, quantity=quantity)


def backflush(quantity: float, minutes: float = 10, material: str = STEEL, order: str = "WO-1042",
              recorded: float | None = None):
    return MaterialConsumed(**env(minutes, recorded), order_id=order, operation="0010", equipment_id=PRESS,
                            material_id=material, quantity=quantity, produced_lot_id=f"LOT-{order}")


def produced(order: str, good: int, scrap: int = 0, minutes: float = 20, final: bool = True, product: str = "BRACKET"):
    return ProductionReported(**env(minutes), order_id=order, operation="0010", equipment_id=PRESS, product_id=product,
                              lot_id=f"LOT-{order}", good=good, scrap=scrap, final_operation=final)


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def given_(*events, reorder_points=None) -> Book:
    book = Book(reorder_points=reorder_points or {})
    fold(book, list(events))
    book.derived.clear()
    book.movements.clear()
    return book


# -- receipts ------------------------------------------------------------------------------------------


def test_a_receipt_creates_an_available_lot_with_its_stock():
    book = Book()
    derived = fold(book, [received("LOT-2026-0117", 1200)])
    lot = book.lot("LOT-2026-0117")
    assert lot.status == LotStatus.AVAILABLE and lot.quantity == 1200 and lot.at("WH1-A-03") == 1200
    assert [type(e) for e in derived] == [LotCreated] and derived[0].origin == "received"
    assert book.movements[0].kind == Kind.RECEIVED and book.movements[0].quantity == 1200
    assert book.material(STEEL).available == 1200


def test_a_second_receipt_of_the_same_lot_is_refused():
    book = given_(received("LOT-1", 10))
    derived = fold(book, [received("LOT-1", 5)])
    assert [type(e) for e in derived] == [MaterialTransactionRefused]
    assert "already received" in derived[0].reason and book.lot("LOT-1").quantity == 10 and book.movements == []


# -- moves ---------------------------------------------------------------------------------------------


def test_a_move_splits_a_lot_across_locations():
    book = given_(received("LOT-1", 100))
    assert fold(book, [MaterialMoved(**env(5), lot_id="LOT-1", from_location="WH1-A-03", to_location="LINE1",
                                     quantity=30)]) == []
    lot = book.lot("LOT-1")
    assert (lot.at("WH1-A-03"), lot.at("LINE1"), lot.quantity) == (70, 30, 100)
    assert [(m.kind, m.location_id, m.quantity) for m in book.movements] == [
        (Kind.MOVED_OUT, "WH1-A-03", -30), (Kind.MOVED_IN, "LINE1", 30)]


@pytest.mark.parametrize("from_location, quantity, why", [
    ("WH1-A-03", 101, "less than the 101 moved"), ("ELSEWHERE", 1, "holds 0 at ELSEWHERE"),
    ("LINE1", 1, "to itself")])
def test_impossible_moves_are_refused(from_location, quantity, why):
    book = given_(received("LOT-1", 100, location="WH1-A-03"))
    if from_location == "LINE1":
        book = given_(received("LOT-1", 100, location="LINE1"))
    derived = fold(book, [MaterialMoved(**env(5), lot_id="LOT-1", from_location=from_location, to_location="LINE1",
                                        quantity=quantity)])
    assert len(of(derived, MaterialTransactionRefused)) == 1 and why in derived[0].reason
    assert book.movements == []


def test_a_held_lot_may_be_moved_to_quarantine():
    book = given_(received("LOT-1", 100), LotHeld(**env(1), lot_id="LOT-1", nonconformance_id="NC-7", reason="burr"))
    assert fold(book, [MaterialMoved(**env(5), lot_id="LOT-1", from_location="WH1-A-03", to_location="QUARANTINE",
                                     quantity=100)]) == []
    assert book.lot("LOT-1").at("QUARANTINE") == 100


# -- consumption by operators ----------------------------------------------------------------------------


def test_loading_consumes_the_lot_into_the_orders_output_lot():
    book = given_(received("LOT-1", 100))
    derived = fold(book, [loaded("LOT-1", 40)])
    consumed = of(derived, LotConsumed)
    assert [(c.lot_id, c.quantity, c.remaining_quantity, c.produced_lot_id, c.backflushed) for c in consumed] == [
        ("LOT-1", 40, 60, "LOT-WO-1042", False)]
    assert [(m.kind, m.quantity, m.produced_lot_id) for m in book.movements] == [(Kind.CONSUMED, -40, "LOT-WO-1042")]
    assert book.loaded_orders["WO-1042"] is not None


def test_using_up_a_lot_makes_it_consumed_and_a_further_loading_is_refused():
    book = given_(received("LOT-1", 100))
    derived = fold(book, [loaded("LOT-1", 100)])
    assert book.lot("LOT-1").status == LotStatus.CONSUMED
    assert [(e.from_status, e.to_status) for e in of(derived, LotStatusChanged)] == [("AVAILABLE", "CONSUMED")]
    refused = of(fold(book, [loaded("LOT-1", 1)]), MaterialTransactionRefused)
    assert refused[0].lot_status == "CONSUMED" and book.lot("LOT-1").quantity == 0


def test_loading_more_than_the_lot_holds_is_refused_whole():
    book = given_(received("LOT-1", 100))
    refused = of(fold(book, [loaded("LOT-1", 100.5)]), MaterialTransactionRefused)
    assert "holds 100, less than the 100.5 loaded" in refused[0].reason
    assert book.lot("LOT-1").quantity == 100 and book.movements == []


def test_consuming_a_held_lot_is_refused_and_after_release_accepted():
    book = given_(received("LOT-1", 100))
    held = fold(book, [LotHeld(**env(1), lot_id="LOT-1", nonconformance_id="NC-7", reason="SPC rule 1")])
    assert [(e.to_status, e.nonconformance_id) for e in of(held, LotStatusChanged)] == [("HELD", "NC-7")]
    assert book.material(STEEL).available == 0  # held stock is not available
    refused = of(fold(book, [loaded("LOT-1", 10)]), MaterialTransactionRefused)
    assert refused[0].lot_status == "HELD" and "HELD by quality" in refused[0].reason and book.movements == []
    fold(book, [LotReleased(**env(2), lot_id="LOT-1")])
    assert book.lot("LOT-1").status == LotStatus.AVAILABLE and book.material(STEEL).available == 100
    assert len(of(fold(book, [loaded("LOT-1", 10)]), LotConsumed)) == 1


def test_a_scrapped_lot_is_written_off_and_cannot_be_consumed():
    book = given_(received("LOT-1", 100), MaterialMoved(**env(1), lot_id="LOT-1", from_location="WH1-A-03",
                                                        to_location="LINE1", quantity=25))
    derived = fold(book, [LotScrapped(**env(2), lot_id="LOT-1")])
    assert of(derived, LotStatusChanged)[0].to_status == "SCRAPPED"
    assert sorted((m.location_id, m.quantity) for m in book.movements if m.kind == Kind.SCRAPPED) == [
        ("LINE1", -25), ("WH1-A-03", -75)]
    assert book.lot("LOT-1").quantity == 0
    assert of(fold(book, [loaded("LOT-1", 1)]), MaterialTransactionRefused)[0].lot_status == "SCRAPPED"


def test_consuming_an_unknown_lot_is_refused():
    refused = of(fold(Book(), [loaded("LOT-NOPE", 1)]), MaterialTransactionRefused)
    assert refused[0].subject_id == "LOT-NOPE" and "never received" in refused[0].reason


def test_a_lot_in_several_locations_gives_from_the_latest_arrival_first():
    book = given_(received("LOT-1", 100), MaterialMoved(**env(5), lot_id="LOT-1", from_location="WH1-A-03",
                                                        to_location="LINE1", quantity=30))
    derived = fold(book, [loaded("LOT-1", 50)])
    assert [(c.location_id, c.quantity) for c in of(derived, LotConsumed)] == [("LINE1", 30), ("WH1-A-03", 20)]


def test_loading_without_an_order_goes_to_the_order_last_started_on_the_unit():
    book = given_(received("LOT-1", 100), OrderStarted(**env(1), order_id="WO-7", product_id="P", operation="0010",
                                                       equipment_id=PRESS))
    consumed = of(fold(book, [loaded("LOT-1", 5, order=None)]), LotConsumed)
    assert consumed[0].produced_lot_id == "LOT-WO-7" and consumed[0].order_id == "WO-7"


def test_the_units_order_is_that_of_its_latest_fact_whichever_partition_brought_it_first():
    """OrderStarted and ProductionReported are keyed by order: two orders' events for one unit may be
    processed in either order, live or in a replay."""
    first_done = produced("WO-1", 10, minutes=30, final=False)
    second_started = OrderStarted(**env(31), order_id="WO-2", product_id="P", operation="0010", equipment_id=PRESS)
    in_order, reversed_ = given_(first_done, second_started), given_(second_started, first_done)
    assert in_order.unit_orders[PRESS] == reversed_.unit_orders[PRESS]
    assert reversed_.unit_orders[PRESS].order_id == "WO-2" and PRESS in reversed_.changed_units


def test_loading_without_an_order_and_none_known_has_no_genealogy_edge():
    book = given_(received("LOT-1", 100))
    consumed = of(fold(book, [loaded("LOT-1", 5, order=None)]), LotConsumed)
    assert consumed[0].produced_lot_id is None and book.movements[0].produced_lot_id is None


# -- backflush -------------------------------------------------------------------------------------------


def test_a_backflush_draws_available_lots_first_in_first_out():
    book = given_(received("LOT-B", 30, minutes=2), received("LOT-A", 30, minutes=1), received("LOT-C", 30, minutes=3),
                  LotHeld(**env(4), lot_id="LOT-A", nonconformance_id=None, reason=None))
    derived = fold(book, [backflush(45)])
    assert [(c.lot_id, c.quantity, c.backflushed) for c in of(derived, LotConsumed)] == [
        ("LOT-B", 30, True), ("LOT-C", 15, True)]  # LOT-A is held, so skipped
    assert book.lot("LOT-B").status == LotStatus.CONSUMED and book.lot("LOT-C").quantity == 15


def test_a_backflush_larger_than_the_available_stock_is_refused_whole():
    book = given_(received("LOT-A", 30))
    refused = of(fold(book, [backflush(31)]), MaterialTransactionRefused)
    assert refused[0].lot_id is None and refused[0].subject_id == STEEL and "30 in AVAILABLE lots" in refused[0].reason
    assert book.lot("LOT-A").quantity == 30 and book.movements == []


def test_a_backflush_recorded_after_operators_loaded_for_the_order_is_not_booked_again():
    book = given_(received("LOT-A", 100))
    fold(book, [loaded("LOT-A", 10, minutes=10)])
    before = book.lot("LOT-A").quantity
    assert fold(book, [backflush(5, minutes=11, recorded=11)]) == []
    assert book.skipped_backflushes == 1 and book.lot("LOT-A").quantity == before


def test_a_backflush_recorded_before_the_loading_is_booked_whatever_the_processing_order():
    book = given_(received("LOT-A", 100))
    fold(book, [loaded("LOT-A", 10, minutes=10)])
    derived = fold(book, [backflush(5, minutes=5, recorded=5)])  # execution decided it before the loading
    assert len(of(derived, LotConsumed)) == 1 and book.skipped_backflushes == 0


# -- production and genealogy ---------------------------------------------------------------------------


def test_the_final_operation_creates_the_produced_lot_and_later_reports_add_to_it():
    book = Book()
    first = fold(book, [produced("WO-1", 10, scrap=1)])
    assert [(e.lot_id, e.quantity, e.origin, e.order_id) for e in of(first, LotCreated)] == [
        ("LOT-WO-1", 10, "produced", "WO-1")]
    fold(book, [produced("WO-1", 5, scrap=2), produced("WO-1", 7, final=False)])
    lot = book.lot("LOT-WO-1")
    assert (lot.quantity, lot.produced_good, lot.produced_scrap, lot.unit, lot.at(PRESS)) == (15, 15, 3, "pcs", 15)


def test_a_multi_level_genealogy_records_edges_with_quantities():
    book = given_(received("LOT-STEEL", 100), received("LOT-PAINT", 10, material="PAINT"))
    fold(book, [loaded("LOT-STEEL", 40, order="WO-1"), produced("WO-1", 20, product="BRACKET"),
                loaded("LOT-PAINT", 2, order="WO-2"), loaded("LOT-WO-1", 20, order="WO-2"),
                produced("WO-2", 20, product="PAINTED-BRACKET")])
    edges = sorted((m.lot_id, m.produced_lot_id, -m.quantity) for m in book.movements if m.kind == Kind.CONSUMED)
    assert edges == [("LOT-PAINT", "LOT-WO-2", 2), ("LOT-STEEL", "LOT-WO-1", 40), ("LOT-WO-1", "LOT-WO-2", 20)]
    assert book.lot("LOT-WO-1").status == LotStatus.CONSUMED and book.lot("LOT-WO-2").quantity == 20


def test_production_into_a_used_up_lot_makes_it_available_again():
    book = given_(produced("WO-1", 10), loaded("LOT-WO-1", 10, order="WO-2"))
    assert book.lot("LOT-WO-1").status == LotStatus.CONSUMED
    derived = fold(book, [produced("WO-1", 3, minutes=30)])
    assert [(e.from_status, e.to_status) for e in of(derived, LotStatusChanged)] == [("CONSUMED", "AVAILABLE")]


def test_a_hold_before_the_lot_is_known_sticks_when_it_is_produced():
    book = Book()
    fold(book, [LotHeld(**env(1), lot_id="LOT-WO-1", nonconformance_id="NC-1", reason="first article")])
    fold(book, [produced("WO-1", 10)])
    lot = book.lot("LOT-WO-1")
    assert lot.status == LotStatus.HELD and lot.material_id == "BRACKET" and lot.quantity == 10
    assert book.material("BRACKET").available == 0


# -- losses ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", model.LOSS_KINDS)
def test_a_loss_is_booked_out_with_its_kind(kind):
    book = given_(received("LOT-1", 100))
    fold(book, [MaterialLost(**env(3), lot_id="LOT-1", quantity=4, kind=kind)])
    assert [(m.kind, m.quantity, m.loss_kind) for m in book.movements] == [(Kind.LOST, -4, kind)]


def test_a_loss_larger_than_the_location_holds_or_of_an_unknown_kind_is_refused():
    book = given_(received("LOT-1", 100))
    derived = fold(book, [MaterialLost(**env(3), lot_id="LOT-1", quantity=4, kind="production", location_id="LINE9"),
                          MaterialLost(**env(3), lot_id="LOT-1", quantity=4, kind="theft")])
    assert len(of(derived, MaterialTransactionRefused)) == 2 and book.movements == []


# -- reorder points --------------------------------------------------------------------------------------


def test_crossing_below_the_reorder_point_is_reported_once_per_crossing():
    book = given_(received("LOT-1", 100), reorder_points={STEEL: 50})
    first = fold(book, [loaded("LOT-1", 60)])
    assert [(e.material_id, e.available_quantity, e.reorder_point) for e in of(first, MaterialBelowReorderPoint)] == [
        (STEEL, 40, 50)]
    assert of(fold(book, [loaded("LOT-1", 10)]), MaterialBelowReorderPoint) == []  # still below: no repeat
    fold(book, [received("LOT-2", 100, minutes=20)])  # back above: re-armed
    again = fold(book, [loaded("LOT-2", 95, minutes=30)])
    assert len(of(again, MaterialBelowReorderPoint)) == 1


def test_a_hold_can_take_a_material_below_its_reorder_point():
    book = given_(received("LOT-1", 100), reorder_points={STEEL: 50})
    derived = fold(book, [LotHeld(**env(1), lot_id="LOT-1", nonconformance_id=None, reason=None)])
    assert of(derived, MaterialBelowReorderPoint)[0].available_quantity == 0


# -- derived event ids -----------------------------------------------------------------------------------


def test_derived_event_ids_follow_from_their_cause():
    book = given_(received("LOT-1", 100))
    event = loaded("LOT-1", 100)
    ids = [e.event_id for e in fold(book, [event])]
    assert ids == [f"{event.event_id}:lot-consumed:LOT-1@WH1-A-03", f"{event.event_id}:lot-status:LOT-1"]


# -- properties: the ledger is the stock, never negative, and on-hand as of T is the fold of the prefix ----


LOTS = ["LOT-1", "LOT-2", "LOT-3"]
LOCATIONS = ["WH1", "LINE1", "QA"]


@st.composite
def histories(draw):
    events = []
    for minute in range(draw(st.integers(1, 40))):
        choice = draw(st.integers(0, 7))
        lot = draw(st.sampled_from(LOTS))
        quantity = draw(st.sampled_from([1.0, 2.5, 10.0, 40.0, 120.0]))
        if choice == 0:
            events.append(received(lot, quantity, minutes=minute, location=draw(st.sampled_from(LOCATIONS))))
        elif choice == 1:
            events.append(MaterialMoved(**env(minute), lot_id=lot, from_location=draw(st.sampled_from(LOCATIONS)),
                                        to_location=draw(st.sampled_from(LOCATIONS)), quantity=quantity))
        elif choice == 2:
            events.append(loaded(lot, quantity, minutes=minute, order=draw(st.sampled_from(["WO-1", "WO-2"]))))
        elif choice == 3:
            events.append(backflush(quantity, minutes=minute, order="WO-3"))
        elif choice == 4:
            events.append(MaterialLost(**env(minute), lot_id=lot, quantity=quantity,
                                       kind=draw(st.sampled_from(model.LOSS_KINDS))))
        elif choice == 5:
            events.append(LotHeld(**env(minute), lot_id=lot, nonconformance_id=None, reason=None))
        elif choice == 6:
            events.append(LotReleased(**env(minute), lot_id=lot))
        else:
            events.append(produced("WO-1", draw(st.integers(0, 5)), minutes=minute, product=STEEL))
    return events


def stock_of(book: Book) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for lot in book.lots.values():
        for s in lot.stock if lot is not None else ():
            totals[(lot.material_id, s.location_id)] += s.quantity
    return totals


def summed(movements, until: datetime | None = None) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for m in movements:
        if until is None or m.occurred_at <= until:
            totals[(m.material_id, m.location_id)] += m.quantity
    return totals


def same(left: dict, right: dict) -> bool:
    keys = set(left) | set(right)
    return all(abs(left.get(k, 0.0) - right.get(k, 0.0)) < 1e-6 for k in keys)


@settings(max_examples=150, deadline=None)
@given(histories())
def test_stock_is_the_sum_of_the_ledger_and_never_negative(events):
    book = Book()
    fold(book, events)
    assert same(stock_of(book), summed(book.movements))
    assert all(s.quantity > 0 for lot in book.lots.values() if lot is not None for s in lot.stock)
    running: dict[tuple[str, str, str], float] = defaultdict(float)
    for m in book.movements:  # no location of a lot ever goes below zero, at any point of the ledger
        running[(m.lot_id, m.location_id, "")] += m.quantity
        assert running[(m.lot_id, m.location_id, "")] > -1e-6
    available = defaultdict(float)
    for lot in book.lots.values():
        if lot is not None and lot.known and lot.status == LotStatus.AVAILABLE:
            available[lot.material_id] += lot.quantity
    assert all(abs(book.material(m).available - q) < 1e-6 for m, q in available.items())


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(0, 40))
def test_on_hand_as_of_any_time_is_the_fold_of_the_events_up_to_it(events, cut_minute):
    # Given events accepted in event-time order, the ledger summed up to T equals folding only the events up to T
    whole = Book()
    fold(whole, events)
    cut = at(cut_minute)
    prefix = Book()
    fold(prefix, [e for e in events if e.occurred_at <= cut])
    assert same(summed(whole.movements, until=cut), stock_of(prefix))
