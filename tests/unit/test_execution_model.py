"""Execution's pure core, Given/When/Then over events: no broker, no database, no clock."""
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.execution.events import DowntimeEnded, DowntimeStarted, MachineStateChanged, PartsProduced
from services.execution.handlers import fold
from services.execution.model import BatchState, EquipmentStatus, hour_of

PRESS = "acme.berlin.assembly.line1.press07"
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def state(event_id: str, minutes: float, value: str, reason: str | None = None) -> MachineStateChanged:
    at = T0 + timedelta(minutes=minutes)
    return MachineStateChanged(event_id=event_id, occurred_at=at, recorded_at=at, source="plc",
                               equipment_id=PRESS, state=value, reason_code=reason)


def parts(event_id: str, minutes: float, good: int, reject: int = 0) -> PartsProduced:
    at = T0 + timedelta(minutes=minutes)
    return PartsProduced(event_id=event_id, occurred_at=at, recorded_at=at, source="plc",
                         equipment_id=PRESS, good=good, reject=reject)


def test_first_state_becomes_current_since_its_event_time():
    batch = BatchState(statuses={PRESS: None})
    derived = fold(batch, [state("PRESS-07-1", 0, "RUNNING")])
    assert derived == []
    assert batch.statuses[PRESS] == EquipmentStatus(PRESS, "RUNNING", None, T0, "PRESS-07-1")
    assert batch.changed == {PRESS}


def test_entering_down_starts_a_downtime_and_leaving_it_ends_one_with_its_duration():
    batch = BatchState(statuses={PRESS: None})
    derived = fold(batch, [state("e1", 0, "RUNNING"), state("e2", 10, "DOWN", "JAM"), state("e3", 25, "RUNNING")])
    started, ended = derived
    assert isinstance(started, DowntimeStarted) and started.reason_code == "JAM"
    assert started.occurred_at == T0 + timedelta(minutes=10)
    assert isinstance(ended, DowntimeEnded)
    assert ended.started_at == T0 + timedelta(minutes=10)
    assert ended.duration_s == 900.0
    assert ended.reason_code == "JAM"
    assert started.event_id == "e2:downtime-started" and ended.event_id == "e3:downtime-ended"


def test_a_late_state_event_does_not_move_the_current_state_back_nor_decide_anything():
    batch = BatchState(statuses={PRESS: EquipmentStatus(PRESS, "RUNNING", None, T0 + timedelta(hours=1), "e9")})
    derived = fold(batch, [state("late", 30, "DOWN", "JAM")])
    assert derived == []
    assert batch.statuses[PRESS].state == "RUNNING"
    assert batch.changed == set()


def test_repeating_the_same_state_changes_nothing():
    batch = BatchState(statuses={PRESS: EquipmentStatus(PRESS, "IDLE", None, T0, "e1")})
    assert fold(batch, [state("e2", 5, "IDLE")]) == []
    assert batch.statuses[PRESS].since == T0
    assert batch.changed == set()


def test_down_to_down_with_a_new_reason_keeps_one_downtime():
    batch = BatchState(statuses={PRESS: None})
    derived = fold(batch, [state("e1", 0, "DOWN", "JAM"), state("e2", 3, "DOWN", "MOTOR")])
    assert [type(d) for d in derived] == [DowntimeStarted]
    assert batch.statuses[PRESS].reason_code == "MOTOR"


def test_parts_are_counted_in_the_hour_of_their_event_time():
    batch = BatchState(statuses={})
    fold(batch, [parts("p1", 10, 5, 1), parts("p2", 59, 3), parts("p3", 61, 2, 2)])
    assert batch.counts[(PRESS, T0)] == [8, 1]
    assert batch.counts[(PRESS, T0 + timedelta(hours=1))] == [2, 2]


def test_hour_of_truncates_to_the_hour():
    assert hour_of(datetime(2026, 11, 2, 6, 59, 59, 999999, tzinfo=UTC)) == T0


@given(st.lists(st.tuples(st.integers(0, 600), st.integers(0, 50), st.integers(0, 5)), max_size=60))
def test_counts_are_order_independent_and_never_negative(reports):
    events = [parts(f"p{i}", m, g, r) for i, (m, g, r) in enumerate(reports)]
    forward, backward = BatchState(statuses={}), BatchState(statuses={})
    fold(forward, events)
    fold(backward, list(reversed(events)))
    assert dict(forward.counts) == dict(backward.counts)
    assert sum(c[0] for c in forward.counts.values()) == sum(g for _, g, _ in reports)
    assert all(c[0] >= 0 and c[1] >= 0 for c in forward.counts.values())


@given(st.lists(st.sampled_from(["RUNNING", "IDLE", "DOWN", "SETUP", "BLOCKED"]), min_size=1, max_size=40))
def test_downtimes_alternate_start_end_and_durations_add_up(states):
    events = [state(f"e{i}", i, s) for i, s in enumerate(states)]
    batch = BatchState(statuses={PRESS: None})
    derived = fold(batch, events)
    kinds = [type(d) for d in derived]
    assert all(a is not b for a, b in zip(kinds, kinds[1:], strict=False))  # never two starts or two ends in a row
    if kinds:
        assert kinds[0] is DowntimeStarted
    # the time spent DOWN before the last event equals the sum of ended downtimes plus an open one
    down_minutes = sum(1 for s in states[:-1] if s == "DOWN")
    ended = sum(d.duration_s for d in derived if isinstance(d, DowntimeEnded)) / 60
    open_down = 0
    if states[-1] == "DOWN":
        i = len(states) - 1
        while i > 0 and states[i - 1] == "DOWN":
            i -= 1
            open_down += 1
    assert ended == down_minutes - open_down
