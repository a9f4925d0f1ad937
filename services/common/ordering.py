"""Timestamp synchronisation across the partitions a worker holds: fold events in acceptance order.

A decision may involve facts from several topics (an order released on the plan topic, started on
the operator topic). Within a partition the log fixes the order; across partitions it is whatever
the fetcher returned first. This module decides, from per-partition buffers of fetched events, which
events a batch may take so that they come in the order ingest accepted them (`recorded_at`): an
event is taken only when every partition that may still hold an earlier one has shown its next event
(a partition whose end is not known yet holds the others back only up to the idle bound). The same rule as Kafka Streams'
`max.task.idle.ms`; live and replay then fold the same sequence, batch sizes notwithstanding.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from itertools import accumulate, repeat
from typing import Generic, TypeVar

Item = TypeVar("Item")
Lane = Hashable


class _Lane:
    """One partition's buffer: items from `head` on, with the acceptance time of each as a float."""

    __slots__ = ("items", "keys", "head", "tiebreak")

    def __init__(self, tiebreak: str) -> None:
        self.items: list = []
        self.keys: list[float] = []
        self.head = 0
        self.tiebreak = tiebreak  # orders partitions whose events were accepted at the same instant

    def __len__(self) -> int:
        return len(self.items) - self.head

    def pop(self, count: int) -> list:
        taken = self.items[self.head:self.head + count]
        self.head += count
        if self.head > 4096 and self.head * 2 > len(self.items):  # drop what was taken, now and then
            del self.items[:self.head], self.keys[:self.head]
            self.head = 0
        return taken


class Merger(Generic[Item]):
    """Per-partition buffers, and the rule for what may be taken now. Pure: the caller says which
    partitions are lagging (may hold unfetched events) and how long each has been empty."""

    def __init__(self, recorded_at: Callable[[Item], datetime | None]) -> None:
        self._recorded_at = recorded_at
        self._lanes: dict[Lane, _Lane] = {}

    def add(self, lane: Lane, item: Item) -> None:
        self.extend(lane, [item])

    def extend(self, lane: Lane, items: list[Item]) -> None:
        """Append items fetched from one partition, in its order."""
        buffer = self._lanes.get(lane)
        if buffer is None:
            buffer = self._lanes[lane] = _Lane(repr(lane))
        buffer.items.extend(items)
        recorded_at = self._recorded_at
        buffer.keys.extend(float("-inf") if (at := recorded_at(item)) is None else at.timestamp() for item in items)

    def drop(self, lane: Lane) -> None:
        """Forget a partition's buffer (revoked, or re-sought to its stored position)."""
        self._lanes.pop(lane, None)

    def buffered(self, lane: Lane) -> int:
        buffer = self._lanes.get(lane)
        return 0 if buffer is None else len(buffer)

    def __len__(self) -> int:
        return sum(len(buffer) for buffer in self._lanes.values())

    def take(self, limit: int, waiting_on: Mapping[Lane, bool]) -> list[tuple[Lane, Item]]:
        """Up to `limit` items in acceptance order, each partition's own order kept.

        `waiting_on[lane]` is True for a partition that may hold an earlier event not fetched yet (it
        is known to lag behind its end, or its end is unknown and its idle bound has not passed). Taking stops as soon as such a
        partition's buffer is empty: its next event could come before anything still buffered.
        Items without a recorded_at (undecodable) go first in their partition's turn.

        This is the k-way merge that repeatedly takes the partition whose next item was accepted first
        (ties to the partition first by repr). That merge yields its items sorted by (the latest
        acceptance time in the partition up to the item, partition, position), so it is computed as one
        sort of those keys; taking then stops after the last item of the first lagging partition to run
        dry, or at the limit.
        """
        blocked = [lane for lane, waiting in waiting_on.items() if waiting and not self._lanes.get(lane)]
        if blocked:
            return []
        lanes = sorted(((buffer.tiebreak, lane, buffer) for lane, buffer in self._lanes.items() if buffer),
                       key=lambda entry: entry[0])
        if not lanes:
            return []
        if len(lanes) == 1:  # one partition: its own order, as far as the limit
            ((_, lane, buffer),) = lanes
            return [(lane, item) for item in buffer.pop(min(limit, len(buffer)))]
        # Each lane's latest acceptance time so far, up to each item (non-decreasing); the first
        # `limit` of the merge come from each lane's first `limit`, and only from items whose time is at
        # most the least time that `limit` items reach.
        heads = [list(accumulate(buffer.keys[buffer.head:buffer.head + min(limit, len(buffer))], max))
                 for _, _, buffer in lanes]
        counts = [len(times) for times in heads]
        if sum(counts) > limit:
            bound = _least_time_reached_by(limit, heads)
            if bound is not None:
                counts = [bisect_right(times, bound) for times in heads]
        # Lanes side by side in partition order: a stable sort on the time alone then orders by
        # (time, partition, position).
        latest: list[float] = []
        items: list = []
        owners: list[int] = []
        lasts: list[int] = []  # where the last item of each lagging partition stands in `latest`
        for number, ((_, lane, buffer), times, count) in enumerate(zip(lanes, heads, counts, strict=True)):
            latest.extend(times[:count])
            items.extend(buffer.items[buffer.head:buffer.head + count])
            owners.extend(repeat(number, count))
            if waiting_on.get(lane) and count == len(buffer):
                lasts.append(len(latest) - 1)
        order = sorted(range(len(latest)), key=latest.__getitem__)
        if lasts:  # the first lagging partition to run dry ends the take
            limit = min(limit, min(map(order.index, lasts)) + 1)
        order = order[:limit]
        for number, count in Counter(map(owners.__getitem__, order)).items():
            lanes[number][2].pop(count)
        return [(lanes[owners[index]][1], items[index]) for index in order]


def _least_time_reached_by(limit: int, lanes: list[list[float]]) -> float | None:
    """A time no earlier than the least time t with at least `limit` items at or before t, and close to
    it (bisection over time); None when an item has no time (undecodable), where there is no range."""
    low = min(times[0] for times in lanes if times)
    high = max(times[-1] for times in lanes if times)
    if low == float("-inf"):
        return None
    for _ in range(48):
        middle = (low + high) / 2
        if middle <= low or middle >= high:
            break
        if sum(bisect_right(times, middle) for times in lanes) >= limit:
            high = middle
        else:
            low = middle
    return high
