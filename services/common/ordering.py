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
        lanes = {buffer.tiebreak: (lane, buffer) for lane, buffer in self._lanes.items() if buffer}
        if not lanes:
            return []
        if len(lanes) == 1:  # one partition: its own order, as far as the limit
            ((lane, buffer),) = lanes.values()
            return [(lane, item) for item in buffer.pop(min(limit, len(buffer)))]
        keys: list[tuple[float, str, int]] = []
        ends: list[tuple[float, str, int]] = []  # the last key of each lagging partition
        for tiebreak, (lane, buffer) in lanes.items():
            count = min(limit, len(buffer))  # the first `limit` of the merge come from each one's first `limit`
            head = buffer.head
            lane_keys = list(zip(accumulate(buffer.keys[head:head + count], max), repeat(tiebreak), range(count)))
            keys.extend(lane_keys)
            if waiting_on.get(lane) and count == len(buffer):
                ends.append(lane_keys[-1])
        keys.sort()
        stop = min(limit, bisect_right(keys, min(ends)) if ends else limit)
        taken_per_lane = Counter(tiebreak for _, tiebreak, _ in keys[:stop])
        popped = {tiebreak: iter(lanes[tiebreak][1].pop(count)) for tiebreak, count in taken_per_lane.items()}
        return [(lanes[tiebreak][0], next(popped[tiebreak])) for _, tiebreak, _ in keys[:stop]]
