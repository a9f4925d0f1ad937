"""The worker host: wires a service's spec to the loop, the relay and the HTTP endpoints, and runs them.

This is the only place that knows how a worker process lives: signals, health, readiness, metrics.
Services hand over a ServiceSpec and never touch Kafka, the codec or the event loop themselves.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from confluent_kafka import Consumer, Producer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import kafka
from services.common import logging as mom_logging
from services.common.active import ActiveLock
from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.db import make_engine
from services.common.loop import ConsumerLoop, ServiceSpec
from services.common.outbox import OutboxRelay
from services.common.settings import Settings

log = logging.getLogger(__name__)

LIVENESS_WINDOW_S = 120.0  # the consume loop must have polled within this long to count as alive


@dataclass
class Worker:
    settings: Settings
    spec: ServiceSpec
    engine: AsyncEngine
    loop: ConsumerLoop
    relay: OutboxRelay
    consumer: Consumer
    ends_reader: Consumer  # the loop's question for partition ends (kafka.ends_reader)
    active: ActiveLock | None = None  # one active worker of the service, the others standing by (see serve)

    async def close(self, loop_task: asyncio.Task | None = None, relay_task: asyncio.Task | None = None) -> None:
        """Stop the loop and then the relay, wait for the tasks running them, close the Kafka clients (in
        threads: the consumer leaves the group) and the database engine."""
        self.loop.stop()
        if loop_task is not None:
            await asyncio.gather(loop_task, return_exceptions=True)
        self.relay.stop()
        if relay_task is not None:
            await asyncio.gather(relay_task, return_exceptions=True)
        await asyncio.to_thread(self.consumer.close)
        await asyncio.to_thread(self.ends_reader.close)
        await self.engine.dispose()

    @property
    def standing_by(self) -> bool:
        return self.active is not None and self.active.standing_by

    async def healthz(self, _request: web.Request) -> web.Response:
        if self.standing_by:
            return web.json_response({"status": "standby"})
        silent_for = time.time() - self.loop.last_progress
        if silent_for > LIVENESS_WINDOW_S:
            return web.json_response({"status": "stalled", "silent_for_s": round(silent_for, 1)}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        problems = []
        if not self.standing_by and not self.loop.assigned.is_set():  # a standby joins the group when it takes over
            problems.append("not yet a member of the consumer group")
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            problems.append(f"database: {str(exc)[:200]}")
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        if self.standing_by:
            return web.json_response({"status": "standby"})
        return web.json_response({"status": "ready", "positions": self.loop.lags()})


def build_worker(settings: Settings, make_spec: Callable[[Catalogue], ServiceSpec]) -> Worker:
    """The composition root of a worker: nothing connects until run() is awaited."""
    catalogue = Catalogue.load(settings.schemas_dir)
    codec = codec_for(catalogue, settings.registry_url, settings.schemas_dir)
    engine = make_engine(settings.database_url, settings.db_schema)
    spec = make_spec(catalogue)
    relay = OutboxRelay(settings.service, engine, relay_clients(settings),
                        marker_topic=min((t.name for t in catalogue.written_by(settings.service)), default=None))
    consumer = kafka.consumer(settings.kafka, settings.group_id, **{
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(settings.session_timeout_ms // 4, 500),
    })
    ends = kafka.ends_reader(settings.kafka, settings.group_id)
    loop = ConsumerLoop(
        spec, catalogue, codec, engine, consumer,
        batch_max_events=settings.batch_max_events, batch_max_wait_s=settings.batch_max_wait_s,
        batch_max_idle_s=settings.batch_max_idle_s,
        on_commit=relay.wake, ends_reader=ends,
    )
    # Without a topic apart, workers would fold by turns (see services/common/active.py): one consumes.
    active = None if spec.partitions_apart else ActiveLock(engine, settings.service)
    return Worker(settings, spec, engine, loop, relay, consumer, ends, active)


GC_THRESHOLDS = (100_000, 10, 10)  # the youngest generation collected at 100,000 more live objects, not 700


def settle_heap() -> None:
    """Tune the cyclic garbage collector for a worker process, once it has imported and built what it
    lives with. Freezing moves those objects (modules, classes, clients: most of the heap) out of the
    collector's sight, and a higher first threshold makes collections rarer. A worker allocates a few
    objects per event and keeps few cycles; with the defaults the collector took about a fifth of
    execution's CPU in the bench, most of it full collections walking the start-up objects again and
    again. The first threshold lies above what a batch keeps alive (tens of thousands of events with a
    few objects each): below it, each collection walked a batch still in use (docs/architecture.md).
    For process entry points only: in a process that builds many workers (the tests), frozen objects
    that later die in a cycle would never be freed."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def relay_clients(settings: Settings) -> Callable[[], tuple[Producer, Consumer]]:
    """The outbox relay's Kafka clients, made when it takes the lead: a transactional producer, and a
    reader of its marker group. Both are named after the consumer group and the schema, so that every
    worker of one outbox shares them and no two outboxes do."""
    name = f"{settings.group_id}.outbox.{settings.db_schema}"
    return lambda: (kafka.transactional_producer(settings.kafka, name), kafka.consumer(settings.kafka, name))


async def metrics_endpoint(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def serve(worker: Worker) -> None:
    """Run until SIGTERM or SIGINT: the loop finishes its batch, the relay drains, then everything closes."""
    app = web.Application()
    app.router.add_get("/healthz", worker.healthz)
    app.router.add_get("/readyz", worker.readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, worker.settings.http_host, worker.settings.http_port)
    await site.start()
    stop = asyncio.Event()
    aio = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        aio.add_signal_handler(sig, stop.set)
    log.info("started", extra={"fields": {"port": worker.settings.http_port, "topics": worker.spec.input_topics}})
    loop_task = asyncio.create_task(consume(worker, stop), name="consumer-loop")
    relay_task = asyncio.create_task(worker.relay.run(), name="outbox-relay")
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({loop_task, relay_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    worker.loop.stop()
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("task failed", exc_info=task.exception())
    stopper.cancel()
    await worker.close(loop_task, relay_task)
    await runner.cleanup()
    log.info("stopped")
    failed = [t for t in (loop_task, relay_task) if t.done() and not t.cancelled() and t.exception()]
    if failed:
        raise SystemExit(1)


async def consume(worker: Worker, stop: asyncio.Event) -> None:
    """The consumer loop: at once, or, for a service whose workers elect one to consume (Worker.active),
    once this worker holds the lock and for as long as it does (ActiveLost if another took it over)."""
    if worker.active is None:
        await worker.loop.run()
        return
    if not await worker.active.acquire(stop):
        return
    worker.loop.last_progress = time.time()  # a standby made none: /healthz counts from taking over
    loop_task = asyncio.create_task(worker.loop.run(), name="consumer-loop-active")
    watch = asyncio.create_task(worker.active.watch(), name="active-lock")
    try:
        done, _ = await asyncio.wait({loop_task, watch}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # the loop's failure, or ActiveLost
    finally:
        worker.loop.stop()
        watch.cancel()
        await asyncio.gather(loop_task, watch, return_exceptions=True)
        await worker.active.release()


def run_service(settings: Settings, make_spec: Callable[[Settings, Catalogue], ServiceSpec]) -> None:
    """Entry point of `python -m services.<name>`, given the settings its __main__ read once."""
    mom_logging.configure(settings.service, settings.log_level)
    worker = build_worker(settings, lambda catalogue: make_spec(settings, catalogue))
    settle_heap()
    asyncio.run(serve(worker))
