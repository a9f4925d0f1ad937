"""Timestamp synchronisation across the partitions a worker holds: fold events in acceptance order.

A decision may involve facts from several topics (an order released on the plan topic, started on
the operator topic). Within a partition the log fixes the order; across partitions it is whatever
the fetcher returned first. This module decides, from per-partition buffers of fetched events, which
events a batch may take so that they come in the order ingest accepted them (`recorded_at`): an
event is taken only when every partition that may still hold an earlier one has shown its next event
(a partition whose end is not known yet holds the others back only up to the idle bound). The same rule as Kafka Streams'
`max.task.idle.ms`; live and replay then fold the same sequence, batch sizes notwithstanding.

Workers of one service that split the partitions keep that order between them: `frontiers` tells,
from the next event of each partition another worker holds, where each partition held here must
stop (see ConsumerLoop._exchange_heads).
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import datetime
from typing import Generic, TypeVar

Item = TypeVar("Item")
Lane = Hashable


class Merger(Generic[Item]):
    """Per-partition buffers, and the rule for what may be taken now. Pure: the caller says which
    partitions are lagging (may hold unfetched events) and how long each has been empty.

    Each buffer holds (key, item) pairs, the key (`key_of` the item's recorded_at) worked out once, as
    the item comes in."""

    def __init__(self, recorded_at: Callable[[Item], datetime | None], offset: Callable[[Item], int] = lambda _: 0) -> None:
        self._recorded_at = recorded_at
        self._offset = offset
        self._lanes: dict[Lane, deque[tuple[float, Item]]] = {}

    def add(self, lane: Lane, item: Item) -> None:
        self.appender(lane)((key_of(self._recorded_at(item)), item))

    def appender(self, lane: Lane) -> Callable[[tuple[float, Item]], None]:
        """What `add` does, for a caller that adds many items to one partition and knows their keys: a
        function taking (`key_of` the item's recorded_at, item)."""
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = deque()
        return queue.append

    def drop(self, lane: Lane) -> None:
        """Forget a partition's buffer (revoked, or re-sought to its stored position)."""
        self._lanes.pop(lane, None)

    def head(self, lane: Lane) -> Item | None:
        """A partition's first buffered item, if any."""
        queue = self._lanes.get(lane)
        return queue[0][1] if queue else None

    def buffered(self, lane: Lane) -> int:
        return len(self._lanes.get(lane, ()))

    def holds_below(self, lane: Lane, bound: int) -> bool:
        """Whether a partition's buffer holds an item whose offset lies below `bound`."""
        queue = self._lanes.get(lane)
        return bool(queue) and self._offset(queue[0][1]) < bound  # type: ignore[index]

    def __len__(self) -> int:
        return sum(len(q) for q in self._lanes.values())

    def take(self, limit: int, waiting_on: Mapping[Lane, bool],
             bounds: Mapping[Lane, int] | None = None,
             before: Mapping[Lane, tuple[float, str]] | None = None) -> list[tuple[Lane, Item]]:
        """Up to `limit` items in acceptance order, each partition's own order kept.

        `waiting_on[lane]` is True for a partition that may hold an earlier event not fetched yet (it
        is known to lag behind its end, or its end is unknown and its idle bound has not passed). Taking stops as soon as such a
        partition's buffer is empty: its next event could come before anything still buffered.
        With `bounds`, only items below their partition's bound are taken (a partition without one
        gives none): the items that existed when the bounds were asked for.
        With `before`, taking stops at the first item (in acceptance order) that does not lie below its
        partition's entry there, if it has one: a key and a lane's `repr` (see `key_of`), the first event
        another worker has yet to fold that this partition's events must wait for (see `frontiers`).
        Items without a recorded_at (undecodable) go first in their partition's turn.
        """
        offset = self._offset
        lanes = self._lanes

        def ready(lane: Lane, queue: deque[tuple[float, Item]]) -> bool:
            return bool(queue) and (bounds is None or offset(queue[0][1]) < bounds.get(lane, 0))

        if any(waiting and not ready(lane, lanes.get(lane, deque())) for lane, waiting in waiting_on.items()):
            return []
        heap: list[tuple[float, int, Lane]] = []
        order = {lane: i for i, lane in enumerate(sorted(lanes, key=repr))}
        for lane, queue in lanes.items():
            if ready(lane, queue):
                heap.append((queue[0][0], order[lane], lane))
        heapq.heapify(heap)
        taken: list[tuple[Lane, Item]] = []
        append = taken.append
        while heap and len(taken) < limit:
            key, rank, lane = heap[0]
            if before and (bound := before.get(lane)) is not None and (key, repr(lane)) >= bound:
                break  # another worker's partition holds an earlier event it has not folded yet
            queue = lanes[lane]
            append((lane, queue.popleft()[1]))
            if queue and (bounds is None or offset(queue[0][1]) < bounds.get(lane, 0)):
                heapq.heapreplace(heap, (queue[0][0], rank, lane))
                continue
            heapq.heappop(heap)
            if waiting_on.get(lane):
                break  # this partition's next event is unknown: nothing later may go before it
        return taken


FIRST = float("-inf")  # the key of an item without a recorded_at (undecodable): first in its partition's turn


def key_of(recorded_at: datetime | None) -> float:
    """Where an event falls in acceptance order; ties go by partition, as `repr` of its lane sorts (the same
    in every worker, whatever partitions each holds)."""
    return FIRST if recorded_at is None else recorded_at.timestamp()


def frontiers(own: Iterable[tuple[str, int]], others: Iterable[tuple[str, int]], ends: Mapping[tuple[str, int], int],
              stored: Mapping[tuple[str, int], tuple[int, datetime | None]], apart: Iterable[str] = ()
              ) -> dict[tuple[str, int], tuple[tuple[float, str], tuple[str, int]]]:
    """For each partition of `own` (topic, partition), the first event that other workers have yet to fold
    and that its events must wait for, with the partition that holds it; a partition with nothing to wait
    for is left out.

    `others` are the partitions other workers hold: `ends[lane]` is one's end, asked for before `stored`
    was read (without one, a partition is not known to be folded); `stored[lane]` is its position and
    the recorded_at of the record there, if its worker published it. Those whose position lies short
    of their end hold back events at or after their next one; one whose next event is not known holds
    back everything. A topic in `apart` has partitions whose facts never bear on each other's (a
    service's declaration, ServiceSpec.partitions_apart): its events wait for the other topics'
    partitions only."""
    pending = []
    for lane in others:
        position, head = stored.get(lane, (0, None))
        end = ends.get(lane)
        if end is not None and position >= end:
            continue
        pending.append(((float("-inf"), "") if head is None else (key_of(head), repr(lane)), lane))
    pending.sort()
    apart = frozenset(apart)
    waits = {}
    for lane in own:
        for key, other in pending:
            if not (lane[0] == other[0] and lane[0] in apart):
                waits[lane] = (key, other)
                break
    return waits
