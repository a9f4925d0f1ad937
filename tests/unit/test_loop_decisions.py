"""The consumer loop's decisions without a broker or a database: what a batch covers and what it applies."""
from datetime import UTC, datetime, timedelta

from services.common.avro import EventMapper, SingleObjectCodec
from services.common.catalogue import Catalogue
from services.common.loop import DECODE_SLICE, ConsumerLoop, ServiceSpec
from services.execution.events import MachineStateChanged, PartsProduced

CATALOGUE = Catalogue.load()
CODEC = SingleObjectCodec(CATALOGUE)
TOPIC = CATALOGUE.topic_for("MachineStateChanged").name
AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


class FakeRecord:
    def __init__(self, partition: int, offset: int, value: bytes, topic: str = TOPIC) -> None:
        self._p, self._o, self._v, self._t = partition, offset, value, topic

    def error(self):
        return None

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v


def state_bytes(event_id: str, recorded_at: datetime = AT) -> bytes:
    return CODEC.encode("MachineStateChanged", {
        "event_id": event_id, "occurred_at": AT, "recorded_at": recorded_at, "source": "plc", "correlation_id": None,
        "equipment_id": "acme.berlin.assembly.line1.press07", "state": "RUNNING", "reason_code": None})


def alarm_bytes(event_id: str) -> bytes:
    return CODEC.encode("AlarmRaised", {
        "event_id": event_id, "occurred_at": AT, "recorded_at": AT, "source": "plc", "correlation_id": None,
        "equipment_id": "acme.berlin.assembly.line1.press07", "alarm_code": "E-17", "severity": "critical",
        "text": None})


class CaughtUp:
    """A consumer whose partitions hold nothing beyond what was fetched: no partition makes others wait."""

    def get_watermark_offsets(self, _tp, cached=True):
        return (0, 0)


def make_loop(positions: dict) -> ConsumerLoop:
    spec = ServiceSpec("execution", (TOPIC,), EventMapper([MachineStateChanged, PartsProduced]), projector=None)
    loop = ConsumerLoop(spec, CATALOGUE, CODEC, engine=None, consumer=CaughtUp())
    loop._positions.update(positions)
    return loop


def decode(loop: ConsumerLoop, records: list):
    """What the loop folds next from these fetched records."""
    loop._decode(records)
    return loop._take()


def test_records_below_the_stored_position_are_skipped_and_the_span_starts_at_the_position():
    loop = make_loop({(TOPIC, 0): 5})
    batch = decode(loop, [FakeRecord(0, 3, state_bytes("a")), FakeRecord(0, 5, state_bytes("b")),
                          FakeRecord(0, 6, state_bytes("c"))])
    assert [i.event.event_id for i in batch.items] == ["b", "c"]
    assert batch.spans == {(TOPIC, 0): [5, 7]}


def test_records_of_partitions_not_assigned_are_ignored():
    loop = make_loop({(TOPIC, 0): 0})
    batch = decode(loop, [FakeRecord(1, 0, state_bytes("a"))])
    assert batch.items == [] and batch.spans == {}


def test_a_gap_in_offsets_still_moves_the_position_past_the_last_record():
    # read_committed leaves gaps where transaction markers sit
    loop = make_loop({(TOPIC, 2): 10})
    batch = decode(loop, [FakeRecord(2, 12, state_bytes("a")), FakeRecord(2, 15, state_bytes("b"))])
    assert batch.spans == {(TOPIC, 2): [10, 16]}


def test_event_types_the_service_does_not_use_advance_the_position_but_are_not_applied():
    loop = make_loop({(TOPIC, 0): 0})
    batch = decode(loop, [FakeRecord(0, 0, alarm_bytes("al-1")), FakeRecord(0, 1, state_bytes("s-1"))])
    assert [i.event.event_id for i in batch.items] == ["s-1"]
    assert batch.skipped == 1
    assert batch.spans == {(TOPIC, 0): [0, 2]}


def test_undecodable_bytes_become_a_dead_letter_with_the_reason_and_the_payload():
    loop = make_loop({(TOPIC, 0): 0})
    batch = decode(loop, [FakeRecord(0, 0, b"not avro"), FakeRecord(0, 1, state_bytes("s-1"))])
    assert len(batch.items) == 1
    (dead,) = batch.dead
    assert dead["offset"] == 0 and dead["payload"] == b"not avro"
    assert "single-object" in dead["error"]
    assert batch.spans == {(TOPIC, 0): [0, 2]}


def test_each_partition_gets_its_own_span():
    loop = make_loop({(TOPIC, 0): 0, (TOPIC, 1): 7})
    batch = decode(loop, [FakeRecord(0, 0, state_bytes("a")), FakeRecord(1, 7, state_bytes("b")),
                          FakeRecord(0, 1, state_bytes("c"))])
    assert batch.spans == {(TOPIC, 0): [0, 2], (TOPIC, 1): [7, 8]}


def test_partitions_are_interleaved_by_acceptance_time_keeping_each_partitions_order():
    loop = make_loop({(TOPIC, 0): 0, (TOPIC, 1): 0})
    t = [AT.replace(second=s) for s in range(6)]
    records = [FakeRecord(0, 0, state_bytes("p0-a", t[1])), FakeRecord(0, 1, state_bytes("p0-b", t[0])),
               FakeRecord(0, 2, state_bytes("p0-c", t[5])), FakeRecord(1, 0, state_bytes("p1-a", t[2])),
               FakeRecord(1, 1, state_bytes("p1-b", t[3]))]
    batch = decode(loop, records)
    # p0-b was accepted earlier than p0-a but sits after it in its partition: partition order wins
    assert [i.event.event_id for i in batch.items] == ["p0-a", "p0-b", "p1-a", "p1-b", "p0-c"]


# -- the prefetch: consume() of the next batch overlaps the commit of this one -------------------------

import asyncio  # noqa: E402
import time  # noqa: E402

from services.common.db import StalePosition  # noqa: E402


class FakeConsumer:
    """Hands out prepared batches; records which were consumed. Its position, as librdkafka's, stands
    past the last record handed out, and past the transaction markers that follow it (`markers`:
    partition -> the offset the consumer steps to once the records before it were handed out)."""

    def __init__(self, batches, markers=None):
        self.batches = list(batches)
        self.consumed = 0
        self.markers = dict(markers or {})
        self.next = {}

    def consume(self, _n, _timeout):
        self.consumed += 1
        records = self.batches.pop(0) if self.batches else []
        for r in records:
            self.next[(r.topic(), r.partition())] = r.offset() + 1
        return records

    def position(self, partitions):
        for p in partitions:
            at = self.next.get((p.topic, p.partition), -1001)
            marker = self.markers.get(p.partition)
            p.offset = marker if marker is not None and at >= 0 and marker > at else at
        return partitions

    def get_watermark_offsets(self, _tp, cached=True):
        return (0, 0)  # nothing beyond what it hands out: no partition holds the others back

    def offsets_for_times(self, partitions, _timeout):
        for p in partitions:  # asked with OFFSET_END: each partition's end
            p.offset = self.get_watermark_offsets(p, cached=False)[1]
        return partitions

    def commit(self, **_kwargs):
        pass


def make_running_loop(positions, batches, commit, markers=None):
    loop = make_loop(positions)
    loop._consumer = FakeConsumer(batches, markers)
    loop._commit = commit
    resyncs = []

    async def resync():
        resyncs.append(dict(loop._positions))
        for tp in list(loop._positions):  # as the real resync: seek, and forget what was buffered
            loop._forget(tp)

    loop._resync = resync
    return loop, resyncs


def test_the_next_batch_is_consumed_during_the_commit_and_its_span_starts_where_the_commit_ended():
    committed = []

    async def commit(batch):
        await asyncio.sleep(0.01)  # the prefetch runs meanwhile
        committed.append({tp: list(span) for tp, span in batch.spans.items()})

    first = [FakeRecord(0, 0, state_bytes("a")), FakeRecord(0, 1, state_bytes("b"))]
    second = [FakeRecord(0, 2, state_bytes("c"))]
    loop, _ = make_running_loop({(TOPIC, 0): 0}, [first, second], commit)

    async def scenario():
        await loop.run_once()
        assert loop._consumer.consumed == 2  # the second batch was fetched while the first committed
        await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert committed == [{(TOPIC, 0): [0, 2]}, {(TOPIC, 0): [2, 3]}]
    assert loop._positions[(TOPIC, 0)] == 3


def test_the_prefetch_decodes_while_the_commit_waits_in_slices_that_give_way_to_it():
    seen_during_commit = []

    async def commit(batch):
        deadline = time.monotonic() + 10
        while loop._merger.buffered((TOPIC, 0)) < 3 * DECODE_SLICE and time.monotonic() < deadline:
            await asyncio.sleep(0)  # the commit's round trips: the prefetch decodes between them
            seen_during_commit.append(loop._merger.buffered((TOPIC, 0)))

    first = [FakeRecord(0, 0, state_bytes("a"))]
    second = [FakeRecord(0, i, state_bytes(f"e{i}")) for i in range(1, 1 + 3 * DECODE_SLICE)]
    loop, _ = make_running_loop({(TOPIC, 0): 0}, [first, second], commit)

    async def scenario():
        await loop.run_once()
        assert loop._merger.buffered((TOPIC, 0)) == 3 * DECODE_SLICE  # decoded before the next run_once
        await loop._drop_prefetch()

    asyncio.run(scenario())
    # decoded a slice at a time while the commit went on: it saw the buffer grow, not jump from 0 to all
    assert 0 < min(n for n in seen_during_commit if n) < 3 * DECODE_SLICE


def test_a_prefetch_inside_which_the_partitions_were_assigned_again_decodes_after_the_commit():
    # The prefetching consume() runs a rebalance: on_assign seeks to the position stored before the commit
    # (0) and forgets the buffers. Decoded at once, records 0 and 1, which the commit applies, would be
    # buffered again; decoded after the commit moved the position to 2, they drop.
    committed = []

    async def commit(batch):
        await asyncio.sleep(0.01)
        committed.append([i.event.event_id for i in batch.items])

    first = [FakeRecord(0, 0, state_bytes("a")), FakeRecord(0, 1, state_bytes("b"))]
    after_assign = [FakeRecord(0, 0, state_bytes("a")), FakeRecord(0, 1, state_bytes("b")),
                    FakeRecord(0, 2, state_bytes("c"))]
    loop, _ = make_running_loop({(TOPIC, 0): 0}, [first, after_assign], commit)
    consume = loop._consumer.consume

    def consume_with_rebalance(n, timeout):
        if loop._consumer.consumed == 1:  # the prefetch: on_assign, as the real callback schedules it
            loop._loop.call_soon_threadsafe(loop._forget, (TOPIC, 0), False)
        return consume(n, timeout)

    loop._consumer.consume = consume_with_rebalance

    async def scenario():
        loop._loop = asyncio.get_running_loop()
        await loop.run_once()
        await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert committed == [["a", "b"], ["c"]]
    assert loop._positions[(TOPIC, 0)] == 3


class LaggingConsumer(FakeConsumer):
    """Partitions whose ends lie at `ends`: those fetched short of their end lag."""

    def __init__(self, batches, ends):
        super().__init__(batches)
        self.ends = ends

    def get_watermark_offsets(self, tp, cached=True):
        return (0, self.ends.get((tp.topic, tp.partition), 0))

    def pause(self, partitions):
        pass

    def resume(self, partitions):
        pass


def test_while_the_commit_runs_the_prefetch_fetches_again_for_a_partition_short_of_records():
    batches = [[FakeRecord(0, i, state_bytes(f"e{i}"))] for i in range(3)]

    def fetch_ahead(committing: bool) -> tuple[int, int]:
        loop = make_loop({(TOPIC, 0): 0})
        loop._consumer = LaggingConsumer([list(b) for b in batches], {(TOPIC, 0): 3})
        loop._committing = committing
        asyncio.run(loop._fetch(ahead=True))
        return loop._consumer.consumed, loop._merger.buffered((TOPIC, 0))

    assert fetch_ahead(committing=True) == (3, 3)  # until the partition no longer lags
    assert fetch_ahead(committing=False) == (1, 1)  # the commit is done: the next batch is taken now


def test_the_prefetch_stops_fetching_once_the_commit_is_done():
    loop = make_loop({(TOPIC, 0): 0})
    loop._consumer = LaggingConsumer([[FakeRecord(0, i, state_bytes(f"e{i}"))] for i in range(5)], {(TOPIC, 0): 5})
    consume = loop._consumer.consume

    def consume_and_finish_the_commit(n, timeout):
        if loop._consumer.consumed == 1:
            loop._committing = False
        return consume(n, timeout)

    loop._consumer.consume = consume_and_finish_the_commit
    loop._committing = True
    assert asyncio.run(loop._fetch(ahead=True)) == (1, [])
    assert loop._consumer.consumed == 2 and loop._merger.buffered((TOPIC, 0)) == 2


def test_a_refused_batch_drops_what_was_prefetched_and_resyncs():
    calls = []

    async def commit(batch):
        calls.append([i.event.event_id for i in batch.items])
        if len(calls) == 1:
            raise StalePosition("moved")

    first = [FakeRecord(0, 0, state_bytes("a"))]
    prefetched = [FakeRecord(0, 1, state_bytes("b"))]
    after_seek = [FakeRecord(0, 0, state_bytes("a")), FakeRecord(0, 1, state_bytes("b"))]
    loop, resyncs = make_running_loop({(TOPIC, 0): 0}, [first, prefetched, after_seek], commit)

    async def scenario():
        assert await loop.run_once() == 0
        assert loop._prefetch is None and loop._consumer.consumed == 2  # prefetched, then dropped
        await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert len(resyncs) == 1
    assert calls == [["a"], ["a", "b"]]  # "b" alone (the prefetch) was never applied


def test_a_batch_whose_event_id_another_worker_claimed_at_the_same_moment_is_committed_again_whole():
    import psycopg

    attempts = []

    async def commit(batch):
        attempts.append([i.event.event_id for i in batch.items])
        if len(attempts) == 1:  # the other worker's transaction committed the id first
            raise psycopg.errors.UniqueViolation("duplicate key value violates unique constraint")

    records = [FakeRecord(0, 0, state_bytes("PRESS-07-000123")), FakeRecord(0, 1, state_bytes("PRESS-07-000124"))]
    loop, _ = make_running_loop({(TOPIC, 0): 0}, [records], commit)

    async def scenario():
        await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert attempts == [["PRESS-07-000123", "PRESS-07-000124"]] * 2  # whole again, not in halves
    assert loop._positions[(TOPIC, 0)] == 2


def test_a_handler_that_keeps_failing_sends_the_batch_into_halves():
    attempts = []

    async def commit(batch):
        ids = [i.event.event_id for i in batch.items]
        attempts.append(ids)
        if "WO-1042-bad" in ids:
            raise ValueError("a handler's defect")

    records = [FakeRecord(0, 0, state_bytes("WO-1042-ok")), FakeRecord(0, 1, state_bytes("WO-1042-bad"))]
    loop, _ = make_running_loop({(TOPIC, 0): 0}, [records], commit)

    async def scenario():
        await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    # the whole batch once, then its halves; the bad event alone is kept as a dead letter (a part without events)
    assert attempts == [["WO-1042-ok", "WO-1042-bad"], ["WO-1042-ok"], ["WO-1042-bad"], []]
    assert loop._positions[(TOPIC, 0)] == 2


def test_the_relay_is_woken_only_by_commits_that_added_outbox_rows():
    woken = []

    async def commit(batch):
        batch.outboxed = 1 if batch.items[0].event.event_id == "derives" else 0

    loop, _ = make_running_loop({(TOPIC, 0): 0}, [[FakeRecord(0, 0, state_bytes("plain"))],
                                                  [FakeRecord(0, 1, state_bytes("derives"))]], commit)
    loop._on_commit = lambda: woken.append(True)

    async def scenario():
        await loop.run_once()
        assert woken == []
        await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert woken == [True]


def test_a_partition_known_to_lag_holds_the_others_back_however_long_its_records_take():
    class Lagging(CaughtUp):
        def get_watermark_offsets(self, tp, cached=True):
            return (0, 10) if tp.partition == 1 else (0, 0)

    loop = make_loop({(TOPIC, 0): 0, (TOPIC, 1): 0})
    loop._consumer = Lagging()
    assert decode(loop, [FakeRecord(0, 0, state_bytes("a"))]).items == []  # partition 1 holds earlier ones
    loop._max_idle = 0.0  # the idle bound is for partitions whose end is unknown, not for this one
    loop._filling_since = None
    assert loop._take().items == []
    loop._decode([FakeRecord(1, 0, state_bytes("b", AT - timedelta(seconds=1)))])
    loop._wait = 0.0  # no more filling: take what the order allows
    assert [i.event.event_id for i in loop._take().items] == ["b"]  # earlier, so first; then partition 1 is dry


def test_a_partition_that_looks_caught_up_is_asked_for_its_end_before_later_records_are_taken():
    # The last fetch showed partition 1 at its end; the plan event accepted first was written to it
    # after that fetch was read, the machine event accepted next came in the fetch after.
    class StaleEnd(FakeConsumer):
        def get_watermark_offsets(self, tp, cached=True):
            return (0, 1 if tp.partition == 1 and not cached else 0)

    committed = []

    async def commit(batch):
        committed.append([i.event.event_id for i in batch.items])

    machine = [FakeRecord(0, 0, state_bytes("machine", AT + timedelta(microseconds=1)))]
    plan = [FakeRecord(1, 0, state_bytes("plan", AT))]
    loop, _ = make_running_loop({(TOPIC, 0): 0, (TOPIC, 1): 0}, [], commit)
    loop._consumer = StaleEnd([machine, plan])

    async def scenario():
        assert await loop.run_once() == 0  # the end asked for shows partition 1 holds a record not fetched
        assert committed == []
        await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert committed == [["plan", "machine"]]  # in acceptance order


def test_records_written_after_the_ends_were_asked_for_do_not_hold_back_those_written_before():
    # Records keep coming on other partitions: each time the ends are asked for, one partition holds a
    # record not fetched yet. The round waits only for those that existed when it began.
    class Flowing(FakeConsumer):
        def offsets_for_times(self, partitions, _timeout):
            written = dict(self.next)
            for r in self.batches[0] if self.batches else []:  # the next fetch's records are on the log already
                written[(r.topic(), r.partition())] = r.offset() + 1
            for p in partitions:
                p.offset = written.get((p.topic, p.partition), 0)
            return partitions

    committed = []

    async def commit(batch):
        committed.append([i.event.event_id for i in batch.items])

    t = [AT + timedelta(seconds=s) for s in range(4)]
    loop, _ = make_running_loop({(TOPIC, p): 0 for p in range(3)}, [], commit)
    loop._wait = 0.0  # no waiting for buffers to fill: take what the order allows
    loop._consumer = Flowing([[FakeRecord(0, 0, state_bytes("machine", t[1]))],
                              [FakeRecord(1, 0, state_bytes("plan", t[0]))],
                              [FakeRecord(2, 0, state_bytes("later-2", t[2]))],
                              [FakeRecord(1, 1, state_bytes("later-1", t[3]))]])

    async def scenario():
        for _ in range(4):
            await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    # the first round held "machine" until "plan", written before it was, had come; then both went
    assert committed[0] == ["plan", "machine"]
    assert [e for batch in committed for e in batch] == ["plan", "machine", "later-2", "later-1"]


def test_the_ends_are_asked_for_once_per_fetch_that_brought_records():
    class Counting(FakeConsumer):
        asked = 0

        def offsets_for_times(self, partitions, timeout):
            Counting.asked += 1
            return super().offsets_for_times(partitions, timeout)

    async def commit(batch):
        pass

    loop, _ = make_running_loop({(TOPIC, 0): 0, (TOPIC, 1): 0}, [], commit)
    loop._consumer = Counting([[FakeRecord(0, 0, state_bytes("a"))], [], [FakeRecord(0, 1, state_bytes("b"))]])

    async def scenario():
        for _ in range(3):
            await loop.run_once()
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert Counting.asked == 2 and loop._positions[(TOPIC, 0)] == 2


def test_a_partition_whose_end_is_unknown_holds_the_others_back_until_the_idle_bound():
    class Unknown(CaughtUp):
        def get_watermark_offsets(self, tp, cached=True):
            return (-1, -1) if tp.partition == 1 else (0, 0)

    loop = make_loop({(TOPIC, 0): 0, (TOPIC, 1): 0})
    loop._consumer = Unknown()
    assert decode(loop, [FakeRecord(0, 0, state_bytes("a"))]).items == []  # partition 1 may hold earlier ones
    loop._max_idle = 0.0  # the bound passed: go on without it
    assert [i.event.event_id for i in loop._take().items] == ["a"]


def test_revoking_a_partition_forgets_what_was_buffered_for_it():
    loop = make_loop({(TOPIC, 0): 0})
    loop._decode([FakeRecord(0, 0, state_bytes("a"))])
    loop._forget((TOPIC, 0))
    assert len(loop._merger) == 0 and (TOPIC, 0) not in loop._fetched


def test_while_a_lagging_partition_has_few_records_the_loop_fetches_more_before_taking():
    class Lagging(CaughtUp):
        def get_watermark_offsets(self, tp, cached=True):
            return (0, 100)

    loop = make_loop({(TOPIC, 0): 0})
    loop._consumer = Lagging()
    loop._max = 50
    loop._wait = 10.0
    assert decode(loop, [FakeRecord(0, 0, state_bytes("a"))]).items == []  # one record: fetch more first
    loop._decode([FakeRecord(0, i, state_bytes(f"e{i}")) for i in range(1, 30)])
    assert len(loop._take().items) == 30  # enough buffered: all of it goes, up to where the lane runs dry



# -- transaction markers: a topic written in Kafka transactions ends in a record the loop never sees ----

def test_a_commit_marker_after_the_last_record_is_stepped_over_with_the_records():
    committed = []

    async def commit(batch):
        committed.append({tp: list(span) for tp, span in batch.spans.items()})

    records = [FakeRecord(0, 0, state_bytes("a")), FakeRecord(0, 1, state_bytes("b"))]
    loop, _ = make_running_loop({(TOPIC, 0): 0}, [records], commit, markers={0: 3})
    asyncio.run(loop.run_once())
    assert committed == [{(TOPIC, 0): [0, 3]}]  # the marker at offset 2 is behind the position too
    assert loop._positions[(TOPIC, 0)] == 3


def test_a_marker_that_arrives_after_its_records_moves_the_position_in_a_batch_of_its_own():
    committed = []

    async def commit(batch):
        committed.append({tp: list(span) for tp, span in batch.spans.items()})
        assert not batch.items

    loop, _ = make_running_loop({(TOPIC, 0): 5}, [[]], commit)
    loop._consumer.next[(TOPIC, 0)] = 5
    loop._consumer.markers = {0: 6}
    async def twice():
        await loop.run_once()
        assert committed == [{(TOPIC, 0): [5, 6]}]
        await loop.run_once()  # nothing new: no commit at all
        assert committed == [{(TOPIC, 0): [5, 6]}]

    asyncio.run(twice())
    assert loop._positions[(TOPIC, 0)] == 6


def test_a_partition_at_its_marker_does_not_hold_the_others_back():
    loop = make_loop({(TOPIC, 0): 0, (TOPIC, 1): 4})
    loop._consumer = FakeConsumer([], markers={1: 5})
    loop._consumer.next[(TOPIC, 1)] = 4
    loop._ends = {(TOPIC, 0): 1, (TOPIC, 1): 5}  # partition 1 ends in a marker at offset 4
    loop._consumer.get_watermark_offsets = lambda tp, cached=True: (0, loop._ends[(tp.topic, tp.partition)])
    loop._decode([FakeRecord(0, 0, state_bytes("a"))])
    assert loop._take().items == []  # before the step, partition 1 seems to lag: the merge waits for it
    loop._step_over_markers()
    batch = loop._take()
    assert [i.event.event_id for i in batch.items] == ["a"]
    assert batch.spans == {(TOPIC, 0): [0, 1], (TOPIC, 1): [4, 5]}


def test_a_partition_with_records_still_buffered_is_not_moved_past_them():
    loop = make_loop({(TOPIC, 0): 0})
    loop._consumer = FakeConsumer([], markers={0: 9})
    loop._consumer.next[(TOPIC, 0)] = 2
    loop._max = 1  # a batch takes one record: the second stays buffered
    loop._decode([FakeRecord(0, 0, state_bytes("a")), FakeRecord(0, 1, state_bytes("b"))])
    loop._step_over_markers()
    assert loop._take().spans == {(TOPIC, 0): [0, 1]}  # the second record and the marker wait
    loop._positions[(TOPIC, 0)] = 1  # as the commit does
    assert loop._take().spans == {(TOPIC, 0): [1, 9]}


# -- a partition that delivers nothing although its end lies beyond what was fetched -------------------

class Starving(CaughtUp):
    """Partition 1's end lies at 10, and the consumer brings none of it; seeks and positions are noted."""

    def __init__(self) -> None:
        self.sought: list[tuple[int, int]] = []

    def get_watermark_offsets(self, tp, cached=True):
        return (0, 10) if tp.partition == 1 else (0, 0)

    def position(self, partitions):
        return partitions

    def seek(self, tp):
        self.sought.append((tp.partition, tp.offset))


def starving_loop(monkeypatch, clock: list[float]) -> ConsumerLoop:
    from services.common import loop as loop_module
    monkeypatch.setattr(loop_module.time, "monotonic", lambda: clock[0])
    loop = make_loop({(TOPIC, 0): 0, (TOPIC, 1): 4})
    loop._consumer = Starving()
    return loop


def test_a_partition_that_delivers_nothing_for_the_starvation_bound_is_sought_again_at_its_fetched_offset(monkeypatch):
    from services.common.loop import STARVED_CHECK_S, STARVED_S
    clock = [1000.0]
    loop = starving_loop(monkeypatch, clock)
    loop._watch_starving()
    clock[0] += STARVED_S - 1
    loop._watch_starving()
    assert loop._consumer.sought == []  # not yet
    clock[0] += STARVED_CHECK_S + 1  # the next check, past the bound
    loop._watch_starving()
    assert loop._consumer.sought == [(1, 4)]  # its stored position: nothing of it was fetched
    clock[0] += 6
    loop._watch_starving()
    assert loop._consumer.sought == [(1, 4)]  # the bound starts again after a seek


def test_a_partition_whose_records_keep_coming_is_not_starving(monkeypatch):
    from services.common.loop import STARVED_S
    clock = [1000.0]
    loop = starving_loop(monkeypatch, clock)
    for offset in range(4, 8):
        loop._watch_starving()
        loop._decode([FakeRecord(1, offset, state_bytes(f"s{offset}"))])
        loop._merger.drop((TOPIC, 1))  # taken by a batch: the buffer is empty again, the fetched offset moved
        clock[0] += STARVED_S / 2 + 1
    loop._watch_starving()
    assert loop._consumer.sought == []


def test_a_paused_partition_is_never_sought(monkeypatch):
    from services.common.loop import STARVED_S
    clock = [1000.0]
    loop = starving_loop(monkeypatch, clock)
    loop._paused.add((TOPIC, 1))
    loop._watch_starving()
    clock[0] += 2 * STARVED_S
    loop._watch_starving()
    assert loop._consumer.sought == []


def test_the_event_loop_leaves_the_consumer_alone_while_the_next_batch_is_consumed():
    """After a commit the next batch's consume() already runs, and a rebalance callback inside it may be
    waiting for the event loop: the offset hint and the lag gauges wait until that consume() returned."""
    from services.common.loop import _Batch

    class Counting(CaughtUp):
        def __init__(self) -> None:
            self.calls: list[str] = []
            self.committed: list = []

        def get_watermark_offsets(self, _tp, cached=True):
            self.calls.append("get_watermark_offsets")
            return (0, 9)

        def commit(self, offsets, asynchronous):
            self.calls.append("commit")
            self.committed = [(tp.partition, tp.offset) for tp in offsets]

    loop = make_loop({(TOPIC, 0): 0, (TOPIC, 1): 0})
    loop._consumer = consumer = Counting()
    loop._after_commit(_Batch(spans={(TOPIC, 0): [0, 4]}), started=0.0)
    loop._after_commit(_Batch(spans={(TOPIC, 0): [4, 6], (TOPIC, 1): [0, 2]}), started=0.0)
    assert consumer.calls == [] and loop._positions == {(TOPIC, 0): 6, (TOPIC, 1): 2}
    loop._send_hint()  # the consume() returned
    assert consumer.committed == [(0, 6), (1, 2)] and "commit" in consumer.calls


def test_the_buffer_bound_is_shared_by_the_partitions_that_bring_records_not_by_every_assigned_one():
    from services.common.loop import BUFFER_TARGET, _Entry

    class Watermarks(CaughtUp):
        paused: list = []

        def get_watermark_offsets(self, tp, cached=True):
            return (0, 100_000 if tp.partition < 6 else 0)  # six partitions lag; eighteen hold nothing new

        def pause(self, partitions):
            self.paused.extend((p.topic, p.partition) for p in partitions)

    loop = make_loop({(TOPIC, p): 0 for p in range(24)})
    loop._consumer = Watermarks()
    share = BUFFER_TARGET // (2 * 6)
    for p, count in ((0, share), (1, share - 1)):
        for offset in range(count):
            loop._merger.add((TOPIC, p), _Entry(offset, None, None, None))
        loop._fetched[(TOPIC, p)] = count
    loop._flow()
    # a share of the bound among all 24 would have paused both, at a quarter of it
    assert loop._consumer.paused == [(TOPIC, 0)]


def test_a_worker_held_by_another_begins_a_new_round_so_a_record_that_came_after_the_round_can_go():
    """Held by another worker (the frontier), a worker whose round holds only records that must wait
    begins a new round: a record of another partition that arrived after the round began, and that may
    be the earliest event of all, could otherwise never be taken while the other worker waits for it."""
    from services.common.ordering import key_of

    committed = []

    async def commit(batch):
        committed.append([i.event.event_id for i in batch.items])

    t = [AT.replace(second=s) for s in range(4)]
    first = [FakeRecord(0, 0, state_bytes("p0-late", t[2]))]
    second = [FakeRecord(1, 0, state_bytes("p1-early", t[0]))]
    loop, _ = make_running_loop({(TOPIC, 0): 0, (TOPIC, 1): 0}, [first, second], commit)
    loop._frontier = {(TOPIC, 0): (key_of(t[1]), "")}  # another worker's next event, at t1, holds partition 0

    async def scenario():
        await loop.run_once()  # the round holds p0-late alone, which must wait
        await loop.run_once()  # p1-early came after that round began
        await loop._drop_prefetch()

    asyncio.run(scenario())
    assert committed == [["p1-early"]]
