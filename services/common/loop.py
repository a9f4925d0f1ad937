"""The consumer loop every service runs: batch, decode, skip what is done, fold, commit, publish.

Exactness rests on two rules. On partition assignment the loop seeks to the positions stored in
PostgreSQL (what Kafka committed never decides where processing resumes). A batch's position update
is conditional on the position it started from, so a worker that lost a partition cannot apply a
batch its successor applies too.

Per batch, in order:
  1. consume up to N records (one blocking call, in a thread);
  2. decode them and drop records below the stored position;
  3. in ONE transaction: claim event ids (duplicates drop out), fold the events into the projection,
     add derived events to the outbox, keep undecodable records in dead_letters, advance positions;
  4. after commit: wake the outbox relay (if the batch added outbox rows), report metrics, commit offsets
     to Kafka as a lag hint.
Steps 1 and 2 of the next batch overlap steps 3 and 4 of this one (see run_once and _fetch).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import metrics
from services.common.avro import Codec, DecodeError, EventMapper
from services.common.catalogue import Catalogue
from services.common.db import (
    UNDATED,
    OutboxRow,
    Span,
    StalePosition,
    add_dead_letters,
    add_outbox,
    advance_positions,
    claim_event_ids,
    load_heads,
    load_positions,
    publish_heads,
)
from services.common.ordering import FIRST, Merger, frontiers, key_of

log = logging.getLogger(__name__)

BUFFER_TARGET = 50_000  # buffered records the pausing of full partitions aims to stay under (see _flow)
PARTITION_BOUND_MIN = 500  # the least a partition buffers before it is paused
BUFFER_BOUND = 200_000  # past this (a fetch larger than the pausing foresaw) nothing waits: memory before order
STARVED_S = 60.0  # a partition known to lag that delivers nothing this long is sought again (see _watch_starving)
STARVED_CHECK_S = 5.0
ENDS_TIMEOUT_S = 5.0  # how long asking the broker for the partitions' ends may take (see _begin_round)
HELD_WARN_S = 30.0  # held back this long by a partition another worker holds: say which (see _exchange_heads)
DECODE_SLICE = 250  # records a prefetch decodes before it gives way to the commit it overlaps (see _fetch)


class Projector(Protocol):
    """A service's projection: folds a batch of events into its tables, returns derived events."""

    async def apply(self, conn: AsyncConnection, events: Sequence[Any]) -> Sequence[Any]: ...


@dataclass(frozen=True)
class ServiceSpec:
    """What a service hands the shared loop: no Kafka, no faust, no codec."""

    name: str
    input_topics: tuple[str, ...]
    events: EventMapper            # the event classes it consumes and emits
    projector: Projector
    # Input topics whose partitions' facts never bear on each other's (each key's facts stand alone, and no
    # fact of another key of the same topic changes what they decide): workers of the service need not
    # order their events against such partitions of another worker (see ConsumerLoop._exchange_heads).
    partitions_apart: tuple[str, ...] = ()


@dataclass(slots=True)
class _Entry:
    """A fetched record, buffered until the merger lets it go: an event, a dead letter, or neither (a
    type this service does not use, which still moves the position)."""

    offset: int
    event: Any
    dead: dict[str, Any] | None
    recorded_at: Any


@dataclass(slots=True)
class _Item:
    topic: str
    partition: int
    offset: int
    event: Any


@dataclass
class _Batch:
    items: list[_Item] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    spans: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (topic, partition) -> [start, next]
    skipped: int = 0
    applied: list[Any] = field(default_factory=list)  # filled in by the commit
    duplicates: int = 0
    outboxed: int = 0  # derived events the commit added to the outbox


def _is_transient(exc: BaseException) -> bool:
    """A lost or refused database connection: through SQLAlchemy, or raw from psycopg (COPY runs on the
    driver's connection)."""
    return (isinstance(exc, OperationalError | psycopg.OperationalError)
            or (isinstance(exc, DBAPIError) and exc.connection_invalidated))


class ConsumerLoop:
    def __init__(
        self,
        spec: ServiceSpec,
        catalogue: Catalogue,
        codec: Codec,
        engine: AsyncEngine,
        consumer: Consumer,
        *,
        batch_max_events: int = 10000,
        batch_max_wait_s: float = 0.05,
        batch_max_idle_s: float = 0.5,
        on_commit: Callable[[], None] = lambda: None,  # called after a commit that added outbox rows
        ends_reader: Any = None,  # asks partitions' ends: a worker passes kafka.ends_reader (on the consumer itself, the
        # question would wait behind its fetch); None, the consumer, serves fakes that answer at once
    ) -> None:
        self._spec = spec
        self._catalogue = catalogue
        self._codec = codec
        self._engine = engine
        self._consumer = consumer
        self._ends_reader = ends_reader
        self._max = batch_max_events
        self._wait = batch_max_wait_s
        self._on_commit = on_commit
        self._positions: dict[tuple[str, int], int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()  # set once the group gave this worker its share (possibly none)
        self.last_progress = time.time()
        self._name = spec.name
        self._merger: Merger[_Entry] = Merger(lambda entry: entry.recorded_at, lambda entry: entry.offset)
        self._fetched: dict[tuple[str, int], int] = {}  # next offset to buffer, per partition
        self._empty_since: dict[tuple[str, int], float] = {}
        self._max_idle = batch_max_idle_s
        self._filling_since: float | None = None
        self._paused: set[tuple[str, int]] = set()  # partitions whose buffer is full (see _flow)
        self._resync_pending = False  # a commit failed: seek to the stored positions before reading on
        self._prefetch: asyncio.Future | None = None  # _fetch of the next batch, running while one commits
        self._forgotten = 0  # partitions forgotten so far (see _forget, _fetch)
        self._committing = False  # a batch's commit runs: a prefetch may fetch again (see _fetch)
        self._makers: dict[str, Callable[[Any], Any] | None] = {}  # event type -> record-to-event, None if unused
        self._ends: dict[tuple[str, int], int] = {}  # end offsets asked for (at assignment, and see _begin_round)
        self._fixed: list[tuple[str, int]] | None = None  # see read_only
        self._round: dict[tuple[str, int], int] | None = None  # the offsets records existed below (see _begin_round)
        self._starving: dict[tuple[str, int], tuple[float, int]] = {}  # since when, fetched then (see _watch_starving)
        self._hint: list[TopicPartition] = []  # offsets committed to the database, for Kafka (see _send_hint)
        self._next_starving_check = 0.0
        self._inputs: list[tuple[str, int]] | None = None  # every partition of the input topics (see _exchange_heads)
        self._inputs_wanted = False  # assigned since they were learnt: learn them again (a topic may have grown)
        self._frontier: dict[tuple[str, int], tuple[float, str]] = {}  # per partition, what other workers hold back
        self._published: dict[tuple[str, int], tuple[int, Any]] = {}  # heads stored, per partition held here
        self._held_since: float | None = None

    # -- partition assignment (called by librdkafka inside consume(), on the consuming thread) --

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        wanted = [(p.topic, p.partition) for p in partitions]
        stored = asyncio.run_coroutine_threadsafe(self._load(wanted), self._loop).result()
        for p in partitions:
            p.offset = stored[(p.topic, p.partition)]
        self._positions.update(stored)
        for tp in wanted:  # a fresh seek: what was buffered for these partitions is read again
            self._loop.call_soon_threadsafe(self._forget, tp, False)
        ends = {}
        for p in partitions:  # each partition's end now, so the merge need not guess before its first fetch
            try:
                ends[(p.topic, p.partition)] = consumer.get_watermark_offsets(
                    TopicPartition(p.topic, p.partition), timeout=5, cached=False)[1]
            except Exception:  # noqa: BLE001 - then the end is learnt from the first fetch
                log.debug("end offset unknown", exc_info=True)
        self._loop.call_soon_threadsafe(self._ends.update, ends)
        self._loop.call_soon_threadsafe(self._want_inputs)
        consumer.assign(partitions)
        with contextlib.suppress(KafkaException):  # none starts paused (what _forget, scheduled above, assumes)
            consumer.resume(partitions)
        self._loop.call_soon_threadsafe(self.assigned.set)
        log.info("assigned", extra={"fields": {"partitions": {f"{t}[{n}]": o for (t, n), o in stored.items()}}})

    def read_only(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Before run(): read these partitions, assigned by hand, rather than the group's share of the
        input topics. A replay reads every input partition this way, without waiting for a group to
        form."""
        self._fixed = list(partitions)

    async def _assign_fixed(self, partitions: list[tuple[str, int]]) -> None:
        """What _on_assign does for the group's assignment, for partitions assigned by hand."""
        stored = await self._load(partitions)
        self._positions.update(stored)
        for tp in partitions:
            try:
                self._ends[tp] = (await asyncio.to_thread(self._consumer.get_watermark_offsets, TopicPartition(*tp),
                                                          ENDS_TIMEOUT_S, False))[1]
            except KafkaException:  # then the end is learnt from the first fetch
                log.debug("end offset unknown", exc_info=True)
        await asyncio.to_thread(self._consumer.assign, [TopicPartition(t, p, stored[(t, p)]) for t, p in partitions])
        self._want_inputs()
        self.assigned.set()
        log.info("assigned by hand", extra={"fields": {"partitions": {f"{t}[{n}]": o for (t, n), o in stored.items()}}})

    def _want_inputs(self) -> None:
        self._inputs_wanted = True
        self._published.clear()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._positions.pop((p.topic, p.partition), None)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._forget, (p.topic, p.partition), False)
        consumer.unassign()
        log.info("revoked", extra={"fields": {"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]}})

    def _high(self, tp: tuple[str, int]) -> int:
        """A partition's end as far as this worker knows: the last fetch's high watermark, or the end
        asked for at assignment if no fetch has told it yet (-1 when neither has)."""
        _, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        return max(high, self._ends.get(tp, -1))

    def _lags(self, tp: tuple[str, int], position: int) -> bool:
        """Whether a partition's end lies past what was fetched of it: it has records still to bring."""
        return self._high(tp) > self._fetched.get(tp, position)

    def _forget(self, tp: tuple[str, int], resume: bool = True) -> None:
        """Drop a partition's buffered records (on the event loop, before any later fetch is decoded).

        Called from a rebalance callback, it must not touch the consumer (`resume=False`): the callback
        runs inside consume(), which holds the consumer's handle, and on_assign waits for the event loop
        to read the stored positions; a consumer call on the event loop would wait for the handle, and
        neither would ever go on. on_assign resumes the partitions it assigns itself."""
        self._merger.drop(tp)
        self._forgotten += 1  # a prefetch decodes no further until the commit is done (see _fetch)
        self._round = None  # its bounds were asked for another assignment, or other buffers
        self._fetched.pop(tp, None)
        self._empty_since.pop(tp, None)
        self._starving.pop(tp, None)
        if tp in self._paused:  # its buffer is gone: it must be fetched again
            self._paused.discard(tp)
            if resume:
                with contextlib.suppress(KafkaException):
                    self._consumer.resume([TopicPartition(*tp)])

    def _flow(self) -> None:
        """A bound per partition, as Kafka Streams has: a partition whose buffer holds its share of the
        buffer bound (shared by the partitions that bring records, buffered or still to fetch, not the
        idle ones) is paused, so the fetcher brings the partitions the merge waits for rather than more
        of one that is far ahead, and it is resumed once it has drained to half of that. Without it, a
        backlog on one topic fills the buffers until the memory bound lifts the acceptance order, and a
        consumption could be folded before the receipt it needs."""
        active = sum(1 for tp, position in self._positions.items() if self._merger.buffered(tp) or self._lags(tp, position))
        share = max(PARTITION_BOUND_MIN, min(self._max, BUFFER_TARGET // (2 * max(active, 1))))
        pause = [tp for tp in self._positions if tp not in self._paused and self._merger.buffered(tp) >= share]
        resume = [tp for tp in self._paused if self._merger.buffered(tp) <= share // 2]
        try:
            if pause:
                self._consumer.pause([TopicPartition(*tp) for tp in pause])
                self._paused.update(pause)
            if resume:
                self._consumer.resume([TopicPartition(*tp) for tp in resume])
                self._paused.difference_update(resume)
        except KafkaException as exc:  # e.g. a partition revoked meanwhile: the next assignment starts afresh
            log.debug("pause or resume failed", extra={"fields": {"error": str(exc)}})

    async def _load(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        async with self._engine.begin() as conn:
            return await load_positions(conn, partitions)

    # -- the loop --

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._fixed is None:
            self._consumer.subscribe(list(self._spec.input_topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        else:
            await self._assign_fixed(self._fixed)
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    if self._resync_pending:
                        await self._resync()  # raises while the database is still away
                        self._resync_pending = False
                    await self.run_once()
                    backoff = 0.5
                except Exception as exc:
                    if not _is_transient(exc):
                        raise
                    log.warning("database unavailable, retrying", extra={"fields": {"error": str(exc)[:300], "in_s": backoff}})
                    await self._drop_prefetch()
                    # The failed batch left the buffers and the prefetch was dropped: the consumer stands
                    # past records not committed. Nothing is read until it is back at the stored positions.
                    self._resync_pending = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            # consume() of the next batch may still run in its thread: wait for it, so the consumer is
            # never closed under it, and drop what it read (the stored positions say where to resume)
            await self._drop_prefetch()
            self._send_hint()

    def _start_prefetch(self) -> None:
        """Start fetching the next batch while this one commits (see run_once and _fetch)."""
        if self._prefetch is None and not self._stopping.is_set():
            self._prefetch = asyncio.ensure_future(self._fetch(ahead=True))

    async def _drop_prefetch(self) -> None:
        """Wait for a prefetch to finish; the caller then seeks to the stored positions, which drops what it
        buffered (_forget)."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            try:
                await prefetch
            except Exception:  # noqa: BLE001 - what it read is dropped anyway; a lasting error comes back
                log.debug("prefetch failed", exc_info=True)

    async def _fetch(self, ahead: bool = False) -> tuple[int, list]:
        """consume() in a thread, then decode what it brought into the buffers; returns how many records
        the last consume() brought, and those left to decode.

        As a prefetch (`ahead`), the decoding runs while the batch before commits, in slices of
        DECODE_SLICE records that give way to the event loop: the main thread decodes while the commit
        waits on PostgreSQL, and the commit goes on within a slice's time once PostgreSQL has answered.
        While the commit still runs and a lagging partition holds fewer records than the next batch will
        want of it (_wants_more), the prefetch pauses the full partitions (_flow) and consumes again: the
        next batch then need not stop short where that partition runs dry, nor wait for a fetch of its own.

        Decoding drops records below max(position, fetched). While the commit runs, the position it will
        store is not yet the in-memory one; but every partition it covers was fetched past that position,
        so the same records drop either way. That holds until a partition is forgotten (an assignment
        inside this consume(), which seeks to the positions stored before the commit, or a seek after a
        failed commit): from then on, the records are left to decode after the commit (run_once)."""
        forgotten = self._forgotten
        while True:
            records = await asyncio.to_thread(self._consumer.consume, self._max, self._wait)
            for at in range(0, len(records), DECODE_SLICE):
                if at:
                    await asyncio.sleep(0)
                if self._forgotten != forgotten:
                    return len(records), records[at:]
                self._decode(records[at:at + DECODE_SLICE])
            if not (ahead and self._committing and not self._stopping.is_set() and self._wants_more()):
                return len(records), []
            self._flow()

    def _wants_more(self) -> bool:
        """Whether a partition that lags (its end lies past what was fetched of it) holds fewer buffered
        records than a batch takes of it (as _should_fill reckons), with the buffers below half their bound."""
        if len(self._merger) >= BUFFER_BOUND // 2:
            return False
        lagging = [tp for tp, position in self._positions.items() if self._lags(tp, position)]
        enough = self._enough(lagging)
        return any(self._merger.buffered(tp) < enough for tp in lagging)

    def _enough(self, lagging: list[tuple[str, int]]) -> int:
        """What a batch wants buffered of each lagging partition so as not to stop short where one runs dry."""
        return max(1, self._max // (2 * max(len(lagging), 1)))

    async def _next_records(self) -> tuple[int, list]:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            return await prefetch
        return await self._fetch()

    async def run_once(self) -> int:
        """Consume and commit one batch; returns the number of records it covered.

        While a batch commits, consume() of the next one already runs in its thread (the prefetch), and
        its records are decoded into the buffers while the commit waits on PostgreSQL (_fetch): the
        database round trips, the broker fetch and the decoding overlap. The next batch is taken only
        after the commit finished and _after_commit moved the in-memory positions, so its spans start at
        the stored positions. When the commit is refused (StalePosition) or the database is away, the
        prefetch is awaited, and the seek to the stored positions drops what it buffered.
        A rebalance inside the prefetching consume() runs on_revoke/on_assign as before: on_assign
        reads the stored positions through the event loop (free while the commit awaits PostgreSQL)
        and seeks there; records below a position are dropped by _decode; and a batch whose partition
        moved to another worker meanwhile is refused by the conditional position update.
        """
        fetched, undecoded = await self._next_records()
        self._send_hint()
        self.last_progress = time.time()
        metrics.LAST_PROGRESS.labels(self._name).set(self.last_progress)
        started = time.perf_counter()
        near_tail = fetched < self._max
        if undecoded:
            self._decode(undecoded)
        del undecoded
        if near_tail:
            self._step_over_markers()
        self._watch_starving()
        if not len(self._merger) and not self._past_markers():
            return 0
        if self._round is not None and self._round_taken():
            self._round = None
        if self._round is None and len(self._merger):
            await self._begin_round()
        if self._inputs_wanted or self._inputs:
            await self._exchange_heads()
        batch = self._take()
        self._flow()
        if not batch.items and self._frontier and self._round is not None:
            # Held by another worker: its next event may come before this round's records, while this
            # worker's next event lies past the round's bounds (it arrived after the round began) and
            # holds that worker back. Each waiting for the other would wait for ever; a new round takes
            # in everything fetched, so the earliest event of all can always go.
            self._round = None
        if not batch.spans:
            return 0
        self._start_prefetch()
        try:
            self._committing = True
            try:
                await self._commit_whole_or_in_parts(batch)
            finally:
                self._committing = False  # the prefetch fetches no further (see _fetch)
        except StalePosition as exc:
            metrics.STALE_BATCHES.labels(self._name).inc()
            log.warning("batch refused: position moved", extra={"fields": {"error": str(exc)}})
            await self._drop_prefetch()
            await self._resync()
            return 0
        self._after_commit(batch, started)
        return sum(n - s for s, n in batch.spans.values())

    def _decode(self, records: list) -> None:
        """Decode fetched records into the per-partition buffers of the merger (see _take)."""
        positions = self._positions
        fetched = self._fetched
        decode = self._codec.decode
        makers = self._makers
        appender = self._merger.appender
        entry = _Entry
        last_tp = None
        position = None
        append = None
        for record in records:
            error = record.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"fields": {"error": str(error)}})
                continue
            tp = (record.topic(), record.partition())
            if tp != last_tp:
                last_tp = tp
                position = max(positions.get(tp, -1), fetched.get(tp, -1)) if tp in positions else None
                append = appender(tp) if position is not None else None
            offset = record.offset()
            if append is None or offset < position:
                continue  # not ours any more, already buffered, or processed before a restart
            position = fetched[tp] = offset + 1
            event_type = None
            value = record.value()
            try:
                event_type, body = decode(value)
                try:
                    make = makers[event_type]
                except KeyError:
                    make = makers[event_type] = self._spec.events.maker(event_type)
                if make is None:
                    recorded_at = body.get("recorded_at")
                    append((key_of(recorded_at), entry(offset, None, None, recorded_at)))
                    continue
                event = make(body)
                recorded_at = event.recorded_at
                append((recorded_at.timestamp() if recorded_at is not None else FIRST,  # key_of, inlined
                        entry(offset, event, None, recorded_at)))
            except (DecodeError, TypeError, KeyError, ValueError) as exc:
                append((FIRST, entry(offset, None, self._dead_letter(tp, offset, event_type, f"decode: {exc}", value), None)))

    def _step_over_markers(self) -> None:
        """Move each partition's fetched offset to the consumer's position. A topic written in Kafka
        transactions holds commit markers (and aborted records) that consume() never hands over but
        steps past; without this the stored position of a partition whose last record is a marker would
        stay short of its end, and the merge would wait for records that do not exist. Called on the
        event loop right after a consume() that came back short (the consumer is near its end), while no
        consume() runs: every record below the position has then been decoded into the buffers."""
        if not self._positions:
            return
        try:
            positions = self._consumer.position([TopicPartition(*tp) for tp in self._positions])
        except KafkaException as exc:  # e.g. revoked meanwhile: the next short consume tries again
            log.debug("position unknown", extra={"fields": {"error": str(exc)}})
            return
        fetched = self._fetched
        for p in positions:
            tp = (p.topic, p.partition)
            if p.error is None and p.offset >= 0 and tp in self._positions and p.offset > fetched.get(tp, self._positions[tp]):
                fetched[tp] = p.offset

    async def _begin_round(self) -> None:
        """Ask the broker for the end of every assigned partition, and take from now on only the records
        that existed then, until all of them are taken (a round).

        A partition's end is otherwise known from fetch responses, and a fetch response can predate a
        record that was accepted earlier than one it brings from another partition: the broker reads
        the partitions of one fetch one after another while appends go on, and ingest writes a
        request's plan and machine events in separate batches. The merge would then take the machine
        event, believing the plan partition holds nothing earlier. Ends asked for after the records
        arrived cover every record written before them, so the merge waits for those (`_waiting_on`).
        Records written after the question are left for the next round: were they waited for too, a
        steady flow on other partitions would hold back what is buffered, round after round.
        One ListOffsets request (under read_committed, the last stable offset), from a client of its
        own (kafka.ends_reader). Should the broker not answer, the loop takes by the ends it last fetched, and asks again
        before the next batch."""
        partitions = list(self._positions)
        answered = await self._ask_ends(partitions, "taking by the ends last fetched")
        if answered is None:
            return
        bounds = {tp: max(self._fetched.get(tp, self._positions[tp]), self._high(tp)) for tp in partitions}
        for tp, end in answered.items():
            if tp in bounds:
                bounds[tp] = max(bounds[tp], end)
                self._ends[tp] = max(self._ends.get(tp, -1), end)
        self._round = bounds

    async def _exchange_heads(self) -> None:
        """Fold in one acceptance order with the service's other workers: publish the next record of each
        partition held here, and take nothing at or past the first event another worker has yet to fold.

        Within one worker the merge gives facts from several topics in the order ingest accepted them.
        Workers that split the partitions fold at their own pace, and a fact joined across topics keyed
        differently (an order's release and its operations' starts; the lots a genealogy edge links) could
        otherwise be folded before one accepted earlier that another worker still holds: after a backlog,
        a worker far ahead would refuse the start of an order whose release the other has yet to fold.
        So each worker stores, beside each position, the recorded_at of the record there, as far as it has
        fetched it (positions.head_recorded_at, cleared when the position moves); and each asks the ends
        of the partitions it does not hold, then reads their positions and heads, and takes only what
        lies before the least head of those that have not reached their end (ordering.frontiers). A
        partition that lags and whose head nobody has published (no worker holds it, or it has not
        fetched it yet) holds everything back: exactness before progress, as the merge waits for a
        partition of its own. A worker that holds every input partition (one worker; a replay) asks
        nothing. A service may declare topics whose partitions' facts never bear on each other's
        (ServiceSpec.partitions_apart): their events wait only for the other topics' partitions, so
        workers that split such a topic fold it side by side instead of by turns. The heads describe
        the log, not a worker, so they stay true while a position stays put, whoever holds the
        partition by then (docs/architecture.md, "Several workers of one service")."""
        if self._inputs_wanted:
            try:
                self._inputs = await asyncio.to_thread(self._input_partitions)
                self._inputs_wanted = False
            except KafkaException as exc:
                log.warning("input partitions unknown: waiting", extra={"fields": {"error": str(exc)}})
                self._frontier = dict.fromkeys(self._positions, (float("-inf"), ""))
                return
        foreign = [tp for tp in self._inputs or () if tp not in self._positions]
        if not foreign:
            self._frontier, self._held_since = {}, None
            metrics.HELD_BY_OTHER_WORKERS.labels(self._name).set(0)
            return
        heads = {}
        for tp, position in self._positions.items():
            entry = self._merger.head(tp)
            if entry is not None:
                heads[tp] = (position, entry.recorded_at or UNDATED)
        fresh = [(t, p, *head) for (t, p), head in heads.items() if self._published.get((t, p)) != head]
        ends = await self._ask_ends(foreign, "waiting") or {}  # before the positions: what existed then, folded or not
        async with self._engine.begin() as conn:
            await publish_heads(conn, fresh)
            stored = await load_heads(conn, foreign)
        self._published.update(heads)
        waits = frontiers(self._positions, foreign, ends, stored, self._spec.partitions_apart)
        self._frontier = {tp: key for tp, (key, _) in waits.items()}
        earliest = min(((key_of(at), repr(tp)), tp) for tp, (_, at) in heads.items()) if heads else None
        least = None if earliest is None else waits.get(earliest[1])
        held = least is not None and earliest is not None and earliest[0] >= least[0]
        metrics.HELD_BY_OTHER_WORKERS.labels(self._name).set(int(held))
        now = time.monotonic()
        if not held:
            self._held_since = None
        elif self._held_since is None:
            self._held_since = now
        elif now - self._held_since >= HELD_WARN_S:
            self._held_since = now
            assert least is not None
            position, head = stored.get(least[1], (0, None))
            log.warning("held back by a partition another worker holds", extra={"fields": {
                "partition": f"{least[1][0]}[{least[1][1]}]", "stored_position": position, "end": ends.get(least[1]),
                "next_recorded_at": None if head is None else head.isoformat(), "for_s": HELD_WARN_S}})

    def _input_partitions(self) -> list[tuple[str, int]]:
        """Every partition of the input topics, from the cluster's metadata (on a thread)."""
        metadata = (self._ends_reader or self._consumer).list_topics(timeout=ENDS_TIMEOUT_S)
        found = []
        for name in self._spec.input_topics:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                raise KafkaException(f"topic {name}: {'not found' if topic is None else topic.error}")
            found.extend((name, p) for p in topic.partitions)
        return sorted(found)

    async def _ask_ends(self, partitions: list[tuple[str, int]], otherwise: str) -> dict[tuple[str, int], int] | None:
        """The partitions' ends (one ListOffsets request; under read_committed, the last stable offset), a
        partition the broker did not answer for missing; None if the broker did not answer at all."""
        try:
            answered = await asyncio.to_thread((self._ends_reader or self._consumer).offsets_for_times,
                                               [TopicPartition(t, p, OFFSET_END) for t, p in partitions], ENDS_TIMEOUT_S)
        except KafkaException as exc:
            log.warning(f"partition ends unknown: {otherwise}", extra={"fields": {"error": str(exc)}})
            return None
        return {(p.topic, p.partition): p.offset for p in answered if p.error is None and p.offset >= 0}

    def _round_taken(self) -> bool:
        """Whether every record below the round's bounds was fetched and taken."""
        assert self._round is not None
        return all(self._fetched.get(tp, position) >= self._round.get(tp, -1) and not self._merger.holds_below(tp, self._round[tp])
                   for tp, position in self._positions.items() if tp in self._round)

    def _watch_starving(self) -> None:
        """A partition whose end lies past what was fetched, that is not paused and has nothing buffered,
        and whose fetched offset has not moved for STARVED_S, is starving: its records exist but the
        consumer does not bring them, and the merge may hold every other partition back for it. It is
        logged with what the loop and the consumer know of it, counted, and sought to its fetched offset,
        which restarts its fetcher (a librdkafka consumer has been seen to leave a partition's fetcher
        idle after a broker restart). A transaction left open by a producer that died holds a
        read_committed reader the same way, until the broker aborts it (transaction.timeout.ms); the
        seek is harmless then. Checked every STARVED_CHECK_S, on the event loop."""
        now = time.monotonic()
        if now < self._next_starving_check:
            return
        self._next_starving_check = now + STARVED_CHECK_S
        starving = self._starving
        for tp, position in self._positions.items():
            fetched = self._fetched.get(tp, position)
            if tp in self._paused or self._merger.buffered(tp) or not self._lags(tp, position):
                starving.pop(tp, None)
                continue
            since, seen = starving.get(tp, (now, fetched))
            if seen != fetched:
                since = now
            starving[tp] = (since, fetched)
            if now - since < STARVED_S:
                continue
            starving[tp] = (now, fetched)
            try:
                (consumer_position,) = self._consumer.position([TopicPartition(*tp)])
                self._consumer.seek(TopicPartition(tp[0], tp[1], fetched))
            except KafkaException as exc:  # e.g. revoked meanwhile
                log.debug("starving partition not sought", extra={"fields": {"error": str(exc)}})
                continue
            metrics.PARTITION_REFETCHES.labels(self._name, tp[0], str(tp[1])).inc()
            log.warning("partition delivers nothing although its end lies beyond: seeking it again", extra={"fields": {
                "partition": f"{tp[0]}[{tp[1]}]", "stored_position": position, "fetched": fetched, "end": self._high(tp),
                "consumer_position": consumer_position.offset, "for_s": round(now - since, 1)}})

    def _past_markers(self) -> dict[tuple[str, int], int]:
        """Partitions with nothing buffered that were fetched past their stored position (over markers
        only, then): where each may move to."""
        return {tp: fetched for tp, fetched in self._fetched.items()
                if fetched > self._positions.get(tp, fetched) and not self._merger.buffered(tp)}

    def _waiting_on(self) -> dict[tuple[str, int], bool]:
        """Partitions that may hold an event earlier than those buffered.

        A partition known to lag behind its end (its high watermark is past what was fetched) is
        waited for however long its records take to arrive: they exist, and one of them may come
        first. A partition whose end is not known yet is waited for up to the idle bound. Past a
        buffer bound nothing waits (memory before order)."""
        now = time.monotonic()
        waiting = {}
        if self._over_memory_bound():
            return waiting
        if self._round is not None:  # within a round: the records that existed when it began
            return {tp: self._fetched.get(tp, position) < self._round.get(tp, -1) for tp, position in self._positions.items()}
        for tp, position in self._positions.items():
            high = self._high(tp)
            if high >= 0:
                self._empty_since.pop(tp, None)
                waiting[tp] = high > self._fetched.get(tp, position)
            elif self._merger.buffered(tp):
                self._empty_since.pop(tp, None)
                waiting[tp] = True  # should it run dry while taking, its next event is unknown
            else:
                since = self._empty_since.setdefault(tp, now)
                waiting[tp] = now - since < self._max_idle
        return waiting

    def _over_memory_bound(self) -> bool:
        return len(self._merger) > max(4 * self._max, BUFFER_BOUND)

    def _should_fill(self, waiting_on: dict[tuple[str, int], bool]) -> bool:
        """While partitions lag, a batch ends as soon as one of their buffers runs dry; with a few records
        in one of them the batch would be tiny. So fetch more first, for at most the batch wait."""
        lagging = [tp for tp, waiting in waiting_on.items() if waiting]
        total = len(self._merger)
        if not lagging or total >= 2 * self._max:
            self._filling_since = None
            return False
        enough = self._enough(lagging)
        if all(self._merger.buffered(tp) >= enough for tp in lagging):
            self._filling_since = None
            return False
        now = time.monotonic()
        if self._filling_since is None:
            self._filling_since = now
        if now - self._filling_since < 4 * self._wait:
            return True
        self._filling_since = None
        return False

    def _take(self) -> _Batch:
        """The next batch: buffered events in acceptance order, as far as every partition allows."""
        batch = _Batch()
        waiting_on = self._waiting_on()
        if self._should_fill(waiting_on):
            return batch  # let the buffers of lagging partitions fill up first: a batch stops where one runs dry
        bounds = None if self._round is None or self._over_memory_bound() else self._round
        for tp, taken in self._merger.take(self._max, waiting_on, bounds, self._frontier):
            span = batch.spans.get(tp)
            if span is None:
                batch.spans[tp] = [self._positions[tp], taken.offset + 1]
            else:
                span[1] = taken.offset + 1
            if taken.event is not None:
                batch.items.append(_Item(tp[0], tp[1], taken.offset, taken.event))
            elif taken.dead is not None:
                batch.dead.append(taken.dead)
            else:
                batch.skipped += 1
        for tp, fetched in self._past_markers().items():  # what remains of a drained partition: markers
            span = batch.spans.setdefault(tp, [self._positions[tp], fetched])
            span[1] = max(span[1], fetched)
        return batch

    @staticmethod
    def _dead_letter(tp: tuple[str, int], offset: int, event_type: str | None, error: str, payload: bytes | None) -> dict:
        return {"topic": tp[0], "partition": tp[1], "offset": offset, "event_type": event_type,
                "error": error[:2000], "payload": payload}

    async def _commit(self, batch: _Batch) -> None:
        # Duplicates inside one batch: the first copy wins, as it would across batches.
        unique: dict[str, _Item] = {}
        for item in batch.items:
            unique.setdefault(item.event.event_id, item)
        async with self._engine.begin() as conn:
            fresh = await claim_event_ids(conn, list(unique))
            if len(fresh) == len(unique) == len(batch.items):  # the common case: no duplicate at all
                events = [item.event for item in batch.items]
            else:
                events = [item.event for item in batch.items
                          if item.event.event_id in fresh and unique[item.event.event_id] is item]
            derived = await self._spec.projector.apply(conn, events) if events else ()
            if derived:
                await add_outbox(conn, [self._outbox_row(event) for event in derived])
            await add_dead_letters(conn, batch.dead)
            await advance_positions(conn, [Span(t, p, s, n) for (t, p), (s, n) in batch.spans.items()])
        batch.duplicates = len(batch.items) - len(events)
        batch.applied = events
        batch.outboxed = len(derived)

    async def _commit_whole_or_in_parts(self, batch: _Batch) -> None:
        """Commit the batch; if a handler raised, in parts (_commit_in_halves). A lost database and a moved
        position are raised: the caller waits, or seeks to the stored positions.

        One failure is not a handler's: an event id of the batch claimed by another worker at the same
        moment (an event re-published under another partition) fails the claim on the primary key once
        that worker commits (claim_event_ids). The batch is committed again whole; the claim's look-up
        then finds the id, and it drops out as a duplicate."""
        failure: Exception | None = None
        for attempt in (1, 2):
            try:
                await self._commit(batch)
                return
            except Exception as exc:
                if _is_transient(exc) or isinstance(exc, StalePosition):
                    raise
                failure = exc
            if attempt == 1 and isinstance(failure, psycopg.errors.UniqueViolation):
                log.warning("an event id of the batch was claimed by another worker at the same moment; committing "
                            "the batch again", extra={"fields": {"error": str(failure)[:300]}})
                continue
            break
        log.error("batch failed; retrying it in halves to find the events that fail", exc_info=failure)
        await self._commit_in_halves(batch)

    async def _commit_in_halves(self, batch: _Batch) -> None:
        """A handler raised: commit the batch's events in halves, and the halves of a half that fails,
        down to the event that fails alone, which is kept as a dead letter. A few bad events in a large
        batch cost a few dozen commits, not one per event (which could outlast the poll interval)."""
        cursor = {tp: span[0] for tp, span in batch.spans.items()}
        done = _Batch()

        async def commit(items: list[_Item]) -> None:
            last: dict[tuple[str, int], int] = {}
            for item in items:
                last[(item.topic, item.partition)] = item.offset + 1
            part = _Batch(items=items, spans={tp: [cursor[tp], end] for tp, end in last.items()})
            part.dead = [d for d in batch.dead
                         if (tp := (d["topic"], d["partition"])) in last and cursor[tp] <= d["offset"] < last[tp]]
            try:
                await self._commit(part)
            except Exception as exc:
                if _is_transient(exc) or isinstance(exc, StalePosition):
                    raise
                if len(items) > 1:
                    middle = len(items) // 2
                    await commit(items[:middle])
                    await commit(items[middle:])
                    return
                (item,) = items
                event_type = type(item.event).__name__
                metrics.EVENTS_FAILED.labels(self._name, event_type, "handler").inc()
                log.error("event failed; kept in dead_letters", exc_info=True,
                          extra={"fields": {"event_id": item.event.event_id, "offset": item.offset}})
                part.items = []
                part.dead.append(self._dead_letter((item.topic, item.partition), item.offset, event_type,
                                                   f"handler: {exc!r}", None))
                await self._commit(part)
            done.applied.extend(part.applied)
            done.duplicates += part.duplicates
            done.outboxed += part.outboxed
            cursor.update(last)

        items = batch.items
        if len(items) > 1:  # the whole batch failed already (_commit_whole_or_in_parts): start with its halves
            middle = len(items) // 2
            await commit(items[:middle])
            await commit(items[middle:])
        elif items:
            await commit(items)
        tail = _Batch(spans={tp: [cursor[tp], span[1]] for tp, span in batch.spans.items() if cursor[tp] < span[1]})
        tail.dead = [d for d in batch.dead if cursor[(d["topic"], d["partition"])] <= d["offset"]]
        if tail.spans:
            await self._commit(tail)
        batch.applied, batch.duplicates, batch.outboxed = done.applied, done.duplicates, done.outboxed

    async def settle(self, share: tuple[int, int] = (0, 1)) -> int:
        """Let a projector that deferred work while replaying (`defer()`, then `settle(conn, share)`) finish
        it, in one transaction with the outbox rows it derives; returns how many events it derived. Call
        it once the replay's fold is done, with the loop stopped. `share` (i, n): this process's part
        when n processes settle at once."""
        settle = getattr(self._spec.projector, "settle", None)
        if settle is None:
            return 0
        async with self._engine.begin() as conn:
            derived = await settle(conn, share)
            if derived:
                await add_outbox(conn, [self._outbox_row(event) for event in derived])
        return len(derived)

    def _outbox_row(self, event: Any) -> OutboxRow:
        event_type = type(event).__name__
        record = self._spec.events.to_record(event)
        key = self._catalogue.key_for(event_type, record)
        return OutboxRow(
            event_id=event.event_id,
            event_type=event_type,
            topic=self._catalogue.topic_for(event_type).name,
            key=key.encode(),
            value=self._codec.encode(event_type, record),
        )

    def _send_hint(self) -> None:
        """The last commit's offsets to Kafka as a lag hint, and the lag gauges. Called right after a
        consume() returned, while none runs: the event loop calls the consumer only then (see _forget)."""
        committed, self._hint = self._hint, []
        if not committed:
            return
        name = self._name
        for tp in committed:
            high = self._high((tp.topic, tp.partition))
            if high >= 0:
                metrics.CONSUMER_LAG.labels(name, tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))
        try:
            self._consumer.commit(offsets=committed, asynchronous=True)
        except Exception:  # the hint is optional; the database holds the truth
            log.debug("offset hint not committed", exc_info=True)

    def _after_commit(self, batch: _Batch, started: float) -> None:
        now = time.time()
        name = self._name
        hint = {(tp.topic, tp.partition): tp for tp in self._hint}
        for (topic, partition), (_, next_offset) in batch.spans.items():
            if (topic, partition) in self._positions:
                self._positions[(topic, partition)] = next_offset
            hint[(topic, partition)] = TopicPartition(topic, partition, next_offset)
        self._hint = list(hint.values())  # sent after the next consume() returns (the prefetch runs now)
        applied = batch.applied
        for event_class, count in Counter(map(type, applied)).items():
            metrics.EVENTS_PROCESSED.labels(name, event_class.__name__).inc(count)
        if applied:
            metrics.EVENT_LATENCY.labels(name).observe(max(now - applied[-1].occurred_at.timestamp(), 0.0))
            metrics.ARRIVAL_LATENCY.labels(name).observe(max(now - applied[-1].recorded_at.timestamp(), 0.0))
        for dead in batch.dead:
            metrics.EVENTS_FAILED.labels(name, dead["event_type"] or "unknown", "decode").inc()
        if batch.duplicates:
            metrics.EVENTS_DUPLICATE.labels(name).inc(batch.duplicates)
        if batch.skipped:
            metrics.EVENTS_SKIPPED.labels(name).inc(batch.skipped)
        metrics.BATCH_SIZE.labels(name).observe(len(batch.items))
        metrics.BATCH_DURATION.labels(name).observe(time.perf_counter() - started)
        if batch.outboxed:
            self._on_commit()  # wakes the outbox relay: only when this batch gave it something to publish

    async def _resync(self) -> None:
        """Reload positions of the current assignment from the database and seek there."""
        assignment = await asyncio.to_thread(self._consumer.assignment)
        if not assignment:
            return
        wanted = [(p.topic, p.partition) for p in assignment]
        stored = await self._load(wanted)  # the database still away: raises, and run() tries again later
        for (topic, partition), offset in stored.items():
            self._positions[(topic, partition)] = offset
            self._forget((topic, partition))
            await asyncio.to_thread(self._consumer.seek, TopicPartition(topic, partition, offset))

    def lags(self) -> dict[str, int]:
        return {f"{t}[{p}]": o for (t, p), o in self._positions.items()}
