"""How a parallel replay splits the input partitions among its workers: as Kafka's range assignor does."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.common.replay import ranges, shares


def test_consecutive_partitions_per_topic_the_first_workers_one_more():
    partitions = [("m", p) for p in range(7)] + [("o", p) for p in range(2)]
    assert ranges(partitions, 3) == [[("m", 0), ("m", 1), ("m", 2), ("o", 0)],
                                     [("m", 3), ("m", 4), ("o", 1)],
                                     [("m", 5), ("m", 6)]]


def test_one_worker_reads_everything_and_extra_workers_read_nothing():
    partitions = [("m", 1), ("m", 0)]
    assert ranges(partitions, 1) == [[("m", 0), ("m", 1)]]
    assert ranges(partitions, 3) == [[("m", 0)], [("m", 1)], []]


def test_co_partitioned_topics_meet_in_the_same_worker():
    # the same partition number of two topics with as many partitions lands in one worker
    shares = ranges([(t, p) for t in ("a", "b") for p in range(6)], 4)
    for share in shares:
        assert sorted(p for t, p in share if t == "a") == sorted(p for t, p in share if t == "b")


@given(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 24), min_size=1), st.integers(1, 9))
def test_every_partition_goes_to_exactly_one_worker(topics, workers):
    partitions = [(t, p) for t, n in topics.items() for p in range(n)]
    shares = ranges(partitions, workers)
    assert len(shares) == workers
    assert sorted(tp for share in shares for tp in share) == sorted(partitions)
    for topic in topics:
        sizes = [sum(1 for t, _ in share if t == topic) for share in shares]
        assert max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)


def test_a_replay_of_execution_by_two_processes_splits_the_plan_and_machine_topics_alike():
    plan, machine = "mom.plan.events", "mom.machine.events"
    partitions = [(plan, p) for p in range(3)] + [(machine, p) for p in range(6)]
    assert ranges(partitions, 2) == [
        [(machine, 0), (machine, 1), (machine, 2), (plan, 0), (plan, 1)],
        [(machine, 3), (machine, 4), (machine, 5), (plan, 2)],
    ]


def test_a_replay_splits_only_the_topics_apart_and_the_first_process_reads_all_others():
    plan, machine, operator = "mom.plan.events", "mom.machine.events", "mom.operator.events"
    partitions = [(plan, p) for p in range(3)] + [(machine, p) for p in range(6)] + [(operator, p) for p in range(2)]
    assert shares(partitions, 2, (machine,)) == [
        [(machine, 0), (machine, 1), (machine, 2), (operator, 0), (operator, 1), (plan, 0), (plan, 1), (plan, 2)],
        [(machine, 3), (machine, 4), (machine, 5)],
    ]
    # a service with no topic apart (quality, maintenance, inventory): one process folds, the others settle
    assert shares(partitions, 3, ()) == [sorted(partitions), [], []]


@given(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 12), min_size=1), st.integers(1, 5),
       st.sets(st.sampled_from("abcd")))
def test_a_replays_shares_cover_every_partition_once(topics, workers, apart):
    partitions = [(t, p) for t, n in topics.items() for p in range(n)]
    split = shares(partitions, workers, tuple(apart))
    assert len(split) == workers
    assert sorted(tp for share in split for tp in share) == sorted(partitions)
    assert all(t in apart for share in split[1:] for t, _ in share)
