"""The benchmark's pure helpers: percentiles, commit times from position polls, replay tails, memory summary."""
from __future__ import annotations

from bench.latency import commit_times, percentile
from bench.scratch_run import rss_summary, tail_start


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_of_few_values_takes_the_higher_one():
    assert percentile([10, 20, 30, 40], 0.5) == 20
    assert percentile([10, 20, 30, 40], 0.99) == 40


def test_an_offset_is_committed_at_the_first_poll_past_it():
    start = {("mom.machine.events", 0): 100}
    observed = [(1.0, {("mom.machine.events", 0): 100}),
                (2.0, {("mom.machine.events", 0): 102}),   # offsets 100 and 101 committed
                (3.0, {("mom.machine.events", 0): 102}),
                (4.0, {("mom.machine.events", 0): 103})]   # offset 102
    assert commit_times(start, observed) == {("mom.machine.events", 0, 100): 2.0,
                                             ("mom.machine.events", 0, 101): 2.0,
                                             ("mom.machine.events", 0, 102): 4.0}


def test_the_replay_tail_is_taken_from_every_partition_in_proportion():
    start = {("t", 0): 0, ("t", 1): 100}
    end = {("t", 0): 300, ("t", 1): 200}   # 300 + 100 events in the segment
    assert tail_start(start, end, 200) == {("t", 0): 150, ("t", 1): 150}
    assert tail_start(start, end, 10_000) == start


def test_memory_that_keeps_growing_is_not_flat():
    growing = [(t, 100.0 + 2 * t) for t in range(0, 100)]
    steady = [(t, 150.0 if t > 5 else 100.0) for t in range(0, 100)]
    assert rss_summary(growing, 100.0)["flat"] is False
    summary = rss_summary(steady, 120.0)
    assert summary["flat"] is True
    assert (summary["start"], summary["peak"], summary["end"]) == (120.0, 150.0, 150.0)


def test_a_high_water_mark_while_the_first_backlog_is_fetched_and_a_swinging_heap_are_not_growth():
    # 185 MB while the backlog comes in, then swinging between 141 and 187 MB as batches come and go
    samples = [(t, 185.0 if t < 10 else (141.0 if t % 2 else 187.0)) for t in range(0, 100)]
    summary = rss_summary(samples, 185.0)
    assert summary["flat"] is True and summary["peak"] == 187.0
    # the same start and swing, on a level that climbs by 1 MB a second: growth
    climbing = [(t, v + max(0, t - 20)) for t, v in samples]
    assert rss_summary(climbing, 185.0)["flat"] is False
