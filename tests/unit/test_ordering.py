"""Timestamp synchronisation: events leave in acceptance order, never ahead of a partition that may
still hold an earlier one."""
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.common.ordering import Merger

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
PLAN, OPERATOR = ("mom.plan.events", 0), ("mom.operator.events", 3)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def merger(**lanes: list[tuple[str, float | None]]) -> Merger:
    m = Merger(lambda item: None if item[1] is None else at(item[1]))
    for lane, items in lanes.items():
        for item in items:
            m.add({"plan": PLAN, "operator": OPERATOR}[lane], item)
    return m


def test_events_of_two_partitions_leave_in_acceptance_order():
    m = merger(plan=[("release WO-1042", 1), ("release WO-1043", 5)], operator=[("start WO-1042", 2)])
    taken = m.take(10, {PLAN: False, OPERATOR: False})
    assert [item[0] for _, item in taken] == ["release WO-1042", "start WO-1042", "release WO-1043"]


def test_nothing_leaves_while_a_lagging_partition_has_shown_nothing():
    # the operator's start is fetched, the plan partition lags behind its end and is still empty
    m = merger(operator=[("start WO-1042", 2)])
    assert m.take(10, {PLAN: True, OPERATOR: False}) == []
    m.add(PLAN, ("release WO-1042", 1))
    assert [item[0] for _, item in m.take(10, {PLAN: True, OPERATOR: False})] == ["release WO-1042"]


def test_taking_stops_when_a_lagging_partition_runs_dry():
    m = merger(plan=[("p1", 1)], operator=[("o1", 2), ("o2", 3)])
    taken = m.take(10, {PLAN: True, OPERATOR: False})
    assert [item[0] for _, item in taken] == ["p1"]  # p2 may come before o1
    assert m.buffered(OPERATOR) == 2


def test_a_caught_up_partition_does_not_hold_the_others_back():
    m = merger(operator=[("o1", 2)])
    assert [item[0] for _, item in m.take(10, {PLAN: False, OPERATOR: False})] == ["o1"]


def test_each_partitions_own_order_is_kept_even_against_acceptance_time():
    m = merger(plan=[("p-late-stamp", 9), ("p-early-stamp", 1)], operator=[("o", 5)])
    taken = [item[0] for _, item in m.take(10, {PLAN: False, OPERATOR: False})]
    assert taken.index("p-late-stamp") < taken.index("p-early-stamp")


def test_undecodable_items_leave_first_in_their_turn_and_the_limit_holds():
    m = merger(plan=[("bad", None), ("p1", 1)], operator=[("o1", 0.5)])
    taken = m.take(2, {PLAN: False, OPERATOR: False})
    assert [item[0] for _, item in taken] == ["bad", "o1"]
    assert len(m) == 1


@given(st.lists(st.tuples(st.sampled_from([PLAN, OPERATOR]), st.floats(0, 100)), max_size=40),
       st.integers(1, 7))
def test_any_batch_size_yields_the_same_sequence(items, size):
    def run(limit: int) -> list:
        m = Merger(lambda item: at(item[1]))
        for i, (lane, stamp) in enumerate(items):
            m.add(lane, (i, stamp))
        out = []
        while len(m):
            out.extend(item for _, item in m.take(limit, {PLAN: False, OPERATOR: False}))
        return out

    assert run(size) == run(1000)
