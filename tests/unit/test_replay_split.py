"""How `mom replay --workers N` splits the input partitions among its processes."""
from hypothesis import given
from hypothesis import strategies as st

from services.common.replay import split

PLAN, MACHINE = "mom.plan.events", "mom.machine.events"


def test_each_topic_is_split_in_contiguous_ranges_as_the_range_assignor_does():
    partitions = [(PLAN, p) for p in range(3)] + [(MACHINE, p) for p in range(6)]
    assert split(partitions, 2) == [
        [(MACHINE, 0), (MACHINE, 1), (MACHINE, 2), (PLAN, 0), (PLAN, 1)],
        [(MACHINE, 3), (MACHINE, 4), (MACHINE, 5), (PLAN, 2)],
    ]


def test_more_processes_than_partitions_leaves_the_last_ones_without_any():
    assert split([(PLAN, 0), (PLAN, 1)], 3) == [[(PLAN, 0)], [(PLAN, 1)], []]


@given(st.dictionaries(st.sampled_from([PLAN, MACHINE, "mom.operator.events"]), st.integers(1, 12)), st.integers(1, 8))
def test_every_partition_goes_to_exactly_one_process(counts, workers):
    partitions = [(topic, p) for topic, n in counts.items() for p in range(n)]
    shares = split(partitions, workers)
    assert len(shares) == workers
    assert sorted(tp for share in shares for tp in share) == sorted(partitions)
    for topic in counts:  # no process gets more than one partition of a topic beyond another
        sizes = [sum(1 for t, _ in share if t == topic) for share in shares]
        assert max(sizes) - min(sizes) <= 1
