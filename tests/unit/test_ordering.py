"""Timestamp synchronisation: events leave in acceptance order, never ahead of a partition that may
still hold an earlier one."""
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.common.ordering import Merger, frontier, key_of

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


# -- several workers: a frontier over the partitions other workers hold -------------------------------------

MACHINE = ("mom.machine.events", 1)


def test_a_partition_held_elsewhere_and_folded_to_its_end_holds_nothing_back():
    assert frontier([PLAN], ends={PLAN: 40}, stored={PLAN: (40, None)}) is None


def test_the_frontier_is_the_earliest_next_event_of_the_partitions_held_elsewhere_that_lag():
    least = frontier([PLAN, MACHINE], ends={PLAN: 40, MACHINE: 900},
                     stored={PLAN: (38, at(7)), MACHINE: (850, at(3))})
    assert least == ((key_of(at(3)), repr(MACHINE)), MACHINE)


def test_a_lagging_partition_whose_next_event_nobody_published_holds_everything_back():
    least = frontier([PLAN, MACHINE], ends={PLAN: 40, MACHINE: 900}, stored={PLAN: (38, at(7)), MACHINE: (850, None)})
    assert least == ((float("-inf"), ""), MACHINE)
    m = merger(operator=[("undecodable", None), ("start WO-1042", 2)])
    assert m.take(10, {OPERATOR: False}, before=least[0]) == []


def test_a_partition_whose_end_the_broker_did_not_give_counts_as_lagging():
    assert frontier([PLAN], ends={}, stored={PLAN: (40, at(1))}) == ((key_of(at(1)), repr(PLAN)), PLAN)


def test_a_partition_never_consumed_lags_from_offset_zero():
    assert frontier([PLAN], ends={PLAN: 3}, stored={}) == ((float("-inf"), ""), PLAN)
    assert frontier([PLAN], ends={PLAN: 0}, stored={}) is None


def test_only_events_before_the_frontier_leave_and_equal_times_go_by_partition():
    m = merger(operator=[("start WO-1042", 2), ("start WO-1043", 4), ("start WO-1044", 6)])
    taken = m.take(10, {OPERATOR: False}, before=(key_of(at(4)), repr(PLAN)))
    # at equal times the lane whose repr sorts first goes first: ("mom.operator.events", 3) before ("mom.plan.events", 0)
    assert [item[0] for _, item in taken] == ["start WO-1042", "start WO-1043"]
    assert [item[0] for _, item in m.take(10, {OPERATOR: False}, before=(key_of(at(6)), repr(("mom.machine.events", 0))))] == []
    assert [item[0] for _, item in m.take(10, {OPERATOR: False})] == ["start WO-1044"]


@given(st.lists(st.tuples(st.sampled_from([PLAN, OPERATOR, MACHINE]), st.integers(0, 20)), max_size=30),
       st.sets(st.sampled_from([PLAN, OPERATOR, MACHINE]), min_size=1, max_size=2))
def test_workers_that_split_the_partitions_and_wait_for_each_others_frontier_fold_in_one_order(events, mine):
    """Two workers, each with a merger over its own partitions and the other's heads as the frontier,
    taking in turns one item at a time: the interleaving is the one merger over all partitions gives."""
    lanes: dict = {}
    for n, (lane, second) in enumerate(events):
        lanes.setdefault(lane, []).append((f"e{n}", second))
    for items in lanes.values():
        items.sort(key=lambda item: item[1])  # a partition's recorded_at grows with its offsets
    everything = Merger(lambda item: at(item[1]))
    for lane, items in lanes.items():
        for item in items:
            everything.add(lane, item)
    expected = [item for _, item in everything.take(len(events) + 1, {})]
    workers = [Merger(lambda item: at(item[1])), Merger(lambda item: at(item[1]))]
    for lane, items in lanes.items():
        for item in items:
            workers[0 if lane in mine else 1].add(lane, item)
    owner = {lane: 0 if lane in mine else 1 for lane in (PLAN, OPERATOR, MACHINE)}
    folded = []
    for _ in range(len(events) * 2 + 2):
        for me, worker in enumerate(workers):
            other = workers[1 - me]
            theirs = [lane for lane, o in owner.items() if o != me]
            heads = {lane: (0, None if other.head(lane) is None else at(other.head(lane)[1])) for lane in theirs}
            ends = {lane: other.buffered(lane) for lane in theirs}  # lagging while anything is left
            least = frontier(theirs, ends, heads)
            folded.extend(item for _, item in worker.take(1, {}, before=None if least is None else least[0]))
    assert folded == expected
