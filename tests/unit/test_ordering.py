"""Timestamp synchronisation: events leave in acceptance order, never ahead of a partition that may
still hold an earlier one."""
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.common.ordering import Merger, frontiers, key_of

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


@given(st.lists(st.tuples(st.sampled_from([PLAN, OPERATOR]), st.one_of(st.none(), st.floats(0, 100))), max_size=40),
       st.integers(1, 7))
def test_items_added_with_their_keys_leave_as_items_added_one_by_one(items, size):
    one_by_one = Merger(lambda item: None if item[1] is None else at(item[1]))
    keyed = Merger(lambda item: None if item[1] is None else at(item[1]))
    appenders = {lane: keyed.appender(lane) for lane in (PLAN, OPERATOR)}
    for i, (lane, stamp) in enumerate(items):
        one_by_one.add(lane, (i, stamp))
        appenders[lane]((key_of(None if stamp is None else at(stamp)), (i, stamp)))
    assert len(keyed) == len(one_by_one) == len(items)
    while len(one_by_one):
        waiting = {PLAN: False, OPERATOR: False}
        assert keyed.head(PLAN) == one_by_one.head(PLAN)
        assert keyed.take(size, waiting) == one_by_one.take(size, waiting)
    assert len(keyed) == 0


# -- several workers: what the partitions other workers hold make each partition wait for ------------------

MACHINE, MACHINE_2 = ("mom.machine.events", 1), ("mom.machine.events", 4)


def test_a_partition_held_elsewhere_and_folded_to_its_end_holds_nothing_back():
    assert frontiers([OPERATOR], [PLAN], ends={PLAN: 40}, stored={PLAN: (40, None)}) == {}


def test_each_partition_waits_for_the_earliest_next_event_of_the_partitions_held_elsewhere_that_lag():
    waits = frontiers([OPERATOR], [PLAN, MACHINE], ends={PLAN: 40, MACHINE: 900},
                      stored={PLAN: (38, at(7)), MACHINE: (850, at(3))})
    assert waits == {OPERATOR: ((key_of(at(3)), repr(MACHINE)), MACHINE)}


def test_a_lagging_partition_whose_next_event_nobody_published_holds_everything_back():
    waits = frontiers([OPERATOR], [PLAN, MACHINE], ends={PLAN: 40, MACHINE: 900},
                      stored={PLAN: (38, at(7)), MACHINE: (850, None)})
    assert waits == {OPERATOR: ((float("-inf"), ""), MACHINE)}
    m = merger(operator=[("undecodable", None), ("start WO-1042", 2)])
    assert m.take(10, {OPERATOR: False}, before={OPERATOR: waits[OPERATOR][0]}) == []


def test_a_partition_whose_end_the_broker_did_not_give_counts_as_lagging():
    assert frontiers([OPERATOR], [PLAN], ends={}, stored={PLAN: (40, at(1))}) == {
        OPERATOR: ((key_of(at(1)), repr(PLAN)), PLAN)}


def test_a_partition_never_consumed_lags_from_offset_zero():
    assert frontiers([OPERATOR], [PLAN], ends={PLAN: 3}, stored={}) == {OPERATOR: ((float("-inf"), ""), PLAN)}
    assert frontiers([OPERATOR], [PLAN], ends={PLAN: 0}, stored={}) == {}


def test_partitions_of_a_topic_declared_apart_wait_for_other_topics_only():
    ends = {MACHINE_2: 900, PLAN: 40}
    stored = {MACHINE_2: (850, at(2)), PLAN: (38, at(7))}
    waits = frontiers([MACHINE, OPERATOR], [MACHINE_2, PLAN], ends, stored, apart=["mom.machine.events"])
    assert waits == {MACHINE: ((key_of(at(7)), repr(PLAN)), PLAN),  # not the other machine partition
                     OPERATOR: ((key_of(at(2)), repr(MACHINE_2)), MACHINE_2)}
    assert frontiers([MACHINE], [MACHINE_2], ends, stored, apart=["mom.machine.events"]) == {}


def test_only_events_before_their_partitions_frontier_leave_and_equal_times_go_by_partition():
    m = merger(operator=[("start WO-1042", 2), ("start WO-1043", 4), ("start WO-1044", 6)])
    taken = m.take(10, {OPERATOR: False}, before={OPERATOR: (key_of(at(4)), repr(PLAN))})
    # at equal times the lane whose repr sorts first goes first: ("mom.operator.events", 3) before ("mom.plan.events", 0)
    assert [item[0] for _, item in taken] == ["start WO-1042", "start WO-1043"]
    assert m.take(10, {OPERATOR: False}, before={OPERATOR: (key_of(at(6)), repr(("mom.machine.events", 0)))}) == []
    assert [item[0] for _, item in m.take(10, {OPERATOR: False}, before={PLAN: (key_of(at(0)), "")})] == ["start WO-1044"]


def test_a_partition_that_must_wait_stops_the_others_behind_it():
    # the plan partition waits (at 3) for another worker; the operator's later start may not overtake it
    m = merger(plan=[("release WO-1042", 3)], operator=[("start WO-1042", 4)])
    assert m.take(10, {}, before={PLAN: (key_of(at(2)), repr(MACHINE))}) == []


def two_workers_fold(events, mine, apart=()):
    """Two workers, each with a merger over its own partitions and the other's heads as its frontiers,
    taking in turns one item at a time: the sequence each folds, and the sequence of both."""
    lanes: dict = {}
    for n, (lane, second) in enumerate(events):
        lanes.setdefault(lane, []).append((f"e{n}", second))
    for items in lanes.values():
        items.sort(key=lambda item: item[1])  # a partition's recorded_at grows with its offsets
    workers = [Merger(lambda item: at(item[1])), Merger(lambda item: at(item[1]))]
    owner = {lane: 0 if lane in mine else 1 for lane in (PLAN, OPERATOR, MACHINE, MACHINE_2)}
    for lane, items in lanes.items():
        for item in items:
            workers[owner[lane]].add(lane, item)
    folded: list = []
    for _ in range(len(events) * 2 + 2):
        for me, worker in enumerate(workers):
            other = workers[1 - me]
            ours = [lane for lane, o in owner.items() if o == me]
            theirs = [lane for lane, o in owner.items() if o != me]
            heads = {lane: (0, None if other.head(lane) is None else at(other.head(lane)[1])) for lane in theirs}
            ends = {lane: other.buffered(lane) for lane in theirs}  # lagging while anything is left
            waits = frontiers(ours, theirs, ends, heads, apart)
            folded.extend((lane, item) for lane, item in worker.take(1, {}, before={k: v[0] for k, v in waits.items()}))
    return lanes, folded


PARTITIONS = st.sampled_from([PLAN, OPERATOR, MACHINE, MACHINE_2])


@given(st.lists(st.tuples(PARTITIONS, st.integers(0, 20)), max_size=30), st.sets(PARTITIONS, min_size=1, max_size=3))
def test_workers_that_split_the_partitions_and_wait_for_each_others_frontiers_fold_in_one_order(events, mine):
    lanes, folded = two_workers_fold(events, mine)
    everything = Merger(lambda item: at(item[1]))
    for lane, items in lanes.items():
        for item in items:
            everything.add(lane, item)
    assert [item for _, item in folded] == [item for _, item in everything.take(len(events) + 1, {})]


@given(st.lists(st.tuples(PARTITIONS, st.integers(0, 20)), max_size=30), st.sets(PARTITIONS, min_size=1, max_size=3))
def test_with_a_topic_apart_every_pair_of_events_not_both_of_it_keeps_its_acceptance_order(events, mine):
    lanes, folded = two_workers_fold(events, mine, apart=["mom.machine.events"])
    assert len(folded) == len(events)
    place = {item: n for n, (_, item) in enumerate(folded)}
    for lane, items in lanes.items():
        for other_lane, other_items in lanes.items():
            if lane[0] == other_lane[0] == "mom.machine.events":
                continue
            for item in items:
                for other in other_items:
                    if (item[1], repr(lane)) < (other[1], repr(other_lane)):
                        assert place[item] < place[other], (lane, item, other_lane, other)
