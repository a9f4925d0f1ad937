"""Execution's pure core, Given/When/Then over events: no broker, no database, no clock."""
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.execution import orders
from services.execution.events import (
    DowntimeEnded,
    DowntimeStarted,
    MachineStateChanged,
    OperationStarted,
    PartsProduced,
    ProductDefined,
    ProductionOrderReleased,
    RoutingStep,
)
from services.execution.handlers import fold
from services.execution.model import BatchState, EquipmentStatus, is_too_late

PRESS = "acme.berlin.assembly.line1.press07"
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def envelope(event_id: str, minutes: float) -> dict:
    at = T0 + timedelta(minutes=minutes)
    return {"event_id": event_id, "occurred_at": at, "recorded_at": at, "source": "plc"}


def state(event_id: str, minutes: float, value: str, reason: str | None = None) -> MachineStateChanged:
    return MachineStateChanged(**envelope(event_id, minutes), equipment_id=PRESS, state=value, reason_code=reason)


def parts(event_id: str, minutes: float, good: int, reject: int = 0, order_id: str | None = None) -> PartsProduced:
    return PartsProduced(**envelope(event_id, minutes), equipment_id=PRESS, good=good, reject=reject, order_id=order_id)


def new_batch(**kwargs) -> BatchState:
    return BatchState(statuses={PRESS: None}, clocks={PRESS: None}, **kwargs)


def test_first_state_becomes_current_since_its_event_time_and_moves_the_clock():
    batch = new_batch()
    assert fold(batch, [state("PRESS-07-1", 0, "RUNNING")]) == []
    assert batch.statuses[PRESS] == EquipmentStatus(PRESS, "RUNNING", None, T0, "PRESS-07-1")
    assert batch.clocks[PRESS] == T0
    assert [s.event_id for s in batch.state_changes] == ["PRESS-07-1"]


def test_a_long_stop_is_an_unplanned_stop_and_a_short_one_a_minor_stop():
    batch = new_batch()
    derived = fold(batch, [state("e1", 0, "RUNNING"), state("e2", 10, "DOWN", "JAM"), state("e3", 25, "RUNNING"),
                           state("e4", 30, "DOWN", "JAM"), state("e5", 31, "RUNNING")])
    assert [(type(d).__name__, d.classification) for d in derived] == [
        ("DowntimeStarted", "unplanned_stop"), ("DowntimeEnded", "unplanned_stop"),
        ("DowntimeStarted", "unplanned_stop"), ("DowntimeEnded", "minor_stop")]
    ended = derived[1]
    assert isinstance(ended, DowntimeEnded) and ended.duration_s == 900.0 and ended.reason_code == "JAM"
    assert ended.started_at == T0 + timedelta(minutes=10)
    assert derived[0].event_id == "e2:downtime-started" and ended.event_id == "e3:downtime-ended"


def test_moving_from_one_stop_state_to_another_ends_one_and_starts_the_next():
    batch = new_batch()
    derived = fold(batch, [state("e1", 0, "SETUP"), state("e2", 20, "STARVED")])
    assert [(type(d).__name__, d.classification) for d in derived] == [
        ("DowntimeStarted", "setup"), ("DowntimeEnded", "setup"), ("DowntimeStarted", "starved")]


def test_a_late_state_event_does_not_move_the_current_state_back_nor_decide_anything():
    batch = BatchState(statuses={PRESS: EquipmentStatus(PRESS, "RUNNING", None, T0 + timedelta(hours=1), "e9")},
                       clocks={PRESS: T0 + timedelta(hours=1)})
    derived = fold(batch, [state("late", 30, "DOWN", "JAM")])
    assert derived == []
    assert batch.statuses[PRESS].state == "RUNNING"
    assert [s.event_id for s in batch.state_changes] == ["late"]  # still a fact of the timeline


def test_an_event_later_than_the_lateness_is_kept_apart_not_applied():
    batch = BatchState(statuses={PRESS: None}, clocks={PRESS: T0 + timedelta(hours=30)})
    fold(batch, [parts("p1", 0, 5), state("s1", 1, "DOWN")])
    assert [f.event.event_id for f in batch.late] == ["p1", "s1"]
    assert batch.production == [] and batch.state_changes == []
    assert is_too_late(T0 + timedelta(hours=24, seconds=1), T0, timedelta(hours=24))
    assert not is_too_late(T0 + timedelta(hours=24), T0, timedelta(hours=24))
    assert not is_too_late(None, T0, timedelta(hours=24))


def test_the_same_state_with_a_new_reason_keeps_the_stop_and_its_start():
    batch = new_batch()
    derived = fold(batch, [state("e1", 0, "DOWN", "JAM"), state("e2", 3, "DOWN", "MOTOR")])
    assert [type(d) for d in derived] == [DowntimeStarted]
    assert batch.statuses[PRESS].reason_code == "MOTOR" and batch.statuses[PRESS].since == T0


def test_parts_of_a_running_operation_get_the_routing_steps_ideal_cycle_time():
    book = orders.OrderBook()
    batch = new_batch(book=book)
    fold(batch, [
        ProductDefined(**envelope("d1", 0), product_id="P-BRACKET-01", name="Bracket", ideal_cycle_time_s=2.0,
                       routing=(RoutingStep(operation="0010", equipment_id=PRESS, ideal_cycle_time_s=1.5),)),
        ProductionOrderReleased(**envelope("r1", 0), order_id="WO-1042", product_id="P-BRACKET-01", quantity=100),
        OperationStarted(**envelope("o1", 1), order_id="WO-1042", operation="0010", equipment_id=PRESS),
        parts("p1", 2, good=9, reject=1),
    ])
    (fact,) = batch.production
    assert fact.ideal_us == 15_000_000  # 10 parts x 1.5 s
    assert batch.book.operations[orders.OperationKey("WO-1042", "0010", PRESS)].good == 9


def test_parts_of_no_single_operation_have_no_ideal_time():
    batch = new_batch()
    fold(batch, [parts("p1", 2, good=4)])
    assert batch.production[0].ideal_us is None


def test_the_touched_range_spans_from_the_previous_clock_to_the_latest_event():
    batch = BatchState(statuses={PRESS: None}, clocks={PRESS: T0})
    fold(batch, [parts("p1", 70, 1), parts("p2", 65, 1)])
    assert batch.touched[PRESS] == (T0, T0 + timedelta(minutes=70))
    assert batch.clocks[PRESS] == T0 + timedelta(minutes=70)


@given(st.lists(st.sampled_from(["RUNNING", "IDLE", "DOWN", "SETUP", "BLOCKED"]), min_size=1, max_size=40))
def test_downtimes_pair_up_and_their_durations_add_up_to_the_stopped_time(states):
    events = [state(f"e{i}", i, s) for i, s in enumerate(states)]
    batch = new_batch()
    derived = fold(batch, events)
    started = sum(isinstance(d, DowntimeStarted) for d in derived)
    ended = [d for d in derived if isinstance(d, DowntimeEnded)]
    open_stop = states[-1] not in ("RUNNING", "IDLE")
    assert started == len(ended) + (1 if open_stop else 0)
    stopped_minutes = sum(1 for s in states[:-1] if s not in ("RUNNING", "IDLE"))
    trailing = 0
    if open_stop:
        i = len(states) - 1
        while i > 0 and states[i - 1] == states[-1]:
            i -= 1
            trailing += 1
    assert sum(d.duration_s for d in ended) / 60 == stopped_minutes - trailing
