"""Composition root of ingest: the HTTP API, the translator, the codec and the Kafka producer (all its I/O)."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from confluent_kafka import KafkaException, Producer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from services.common import kafka
from services.common.avro import Codec, codec_for
from services.common.catalogue import Catalogue
from services.common.metrics import INGEST_EVENTS, INGEST_REQUEST_DURATION, INGEST_REQUESTS
from services.ingest.events import EventRejected, RejectionError
from services.ingest.settings import SERVICE, ClientToken, IngestSettings
from services.ingest.translators import Accepted, Refused, Translator, to_micros

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
JSON_TYPES = frozenset({"application/json"})
REJECTED_EVENT = EventRejected.__name__

DELIVERY_FAILURES = Counter(
    "mom_ingest_delivery_failures_total",
    "Messages Kafka did not acknowledge (delivery error or ack timeout), by kind (event or rejection).",
    ["kind"])

CHUNK = 500  # items worked through between two yields to the event loop
_PENDING, _ACKED, _FAILED = 0, 1, 2
INGEST_KEY: web.AppKey[Ingest] = web.AppKey("ingest")


def authenticate(authorization: str | None, tokens: Sequence[ClientToken]) -> str | None:
    """The client's name for a valid `Bearer <token>` header, else None. The one place tokens are checked."""
    if not authorization:
        return None
    scheme, _, presented = authorization.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return None
    presented_bytes = presented.encode()
    presented_digest = hashlib.sha256(presented_bytes).digest()
    client = None
    for candidate in tokens:  # no early exit: the time taken does not tell which token matched
        if candidate.hashed:
            match = hmac.compare_digest(presented_digest, candidate.sha256)
        else:
            match = hmac.compare_digest(presented_bytes, candidate.token.encode())
        if match and client is None:
            client = candidate.name
    return client


class _Deliveries:
    """Kafka's acknowledgements of one request's messages, one status per item.

    Delivery callbacks run on the poll thread; the request's future is resolved once, through
    call_soon_threadsafe, when the last expected message is acknowledged (or failed).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.status = bytearray(size)
        self.errors: dict[int, str] = {}
        self._lock = threading.Lock()
        self._pending = 1  # held until every message is produced (seal), so that an early ack cannot resolve

    def expect(self) -> None:
        with self._lock:
            self._pending += 1

    def delivered(self, index: int, error: Any, _message: Any) -> None:
        if error is None:
            self.status[index] = _ACKED
        else:
            self.status[index] = _FAILED
            self.errors[index] = str(error)
        self._release()

    def not_produced(self, index: int, reason: str) -> None:
        """A message produce() refused: no callback will come for it."""
        self.status[index] = _FAILED
        self.errors[index] = reason
        self._release()

    def seal(self) -> None:
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1
            finished = self._pending == 0
        if finished:
            try:
                self._loop.call_soon_threadsafe(self._resolve)
            except RuntimeError:  # the event loop is closed: nobody waits any more
                pass

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class BadRequest(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


@dataclass(frozen=True)
class _Route:
    topic: str
    key_field: str


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _problem(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"error": error, "message": message}, headers)


class Ingest:
    """The request handlers and the producer they share."""

    def __init__(self, settings: IngestSettings, catalogue: Catalogue, codec: Codec, producer: Producer,
                 translator: Translator) -> None:
        self.settings = settings
        self._codec = codec
        self._producer = producer
        self._translator = translator
        self._rejected_topic = catalogue.topic_for(REJECTED_EVENT).name
        self._routes = {
            event_type: _Route(catalogue.topic_for(event_type).name, catalogue.topic_for(event_type).key_field(event_type))
            for event_type in translator.event_types
        }
        self._own_topics = frozenset(topic.name for topic in catalogue.written_by(SERVICE))
        self._poller: asyncio.Task[None] | None = None
        self._registered = False
        self._ready: tuple[float, bool, str] | None = None
        self._ready_lock = asyncio.Lock()

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._register_schemas)
        self._poller = asyncio.create_task(self._serve_deliveries(), name="ingest-kafka-poll")

    def _register_schemas(self) -> bool:
        """Registry codec: fetch the schema ids up front, so that no request blocks on the registry."""
        register = getattr(self._codec, "register", None)
        if register is None or self._registered:
            return True
        try:
            for event_type in (*self._routes, REJECTED_EVENT):
                register(event_type)
        except Exception as exc:  # noqa: BLE001 - retried by the next request, which answers 503 meanwhile
            log.warning("schema registration failed", extra={"fields": {"error": str(exc)}})
            return False
        self._registered = True
        return True

    async def _serve_deliveries(self) -> None:
        # Delivery callbacks run inside poll(), here on the event loop's thread. A poll *thread* was
        # measured to collapse under concurrent requests: every callback has to win the GIL back
        # from the thread doing CPU work (up to 5 ms each, 1,000 callbacks per request).
        poll = self._producer.poll
        while True:
            served = poll(0)
            await asyncio.sleep(0 if served else 0.002)

    async def close(self, timeout_s: float = 30.0) -> int:
        """Stop polling, then flush what is in flight; returns the number of messages left undelivered."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        left = await asyncio.to_thread(self._producer.flush, timeout_s)
        if left:
            log.error("producer closed with undelivered messages", extra={"fields": {"messages": left}})
        return left

    # Handlers ------------------------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        async with self._ready_lock:
            cached = self._ready
            if cached is None or time.monotonic() - cached[0] > self.settings.ready_cache_s:
                ready, reason = await asyncio.to_thread(self._probe_broker)
                cached = self._ready = (time.monotonic(), ready, reason)
        _, ready, reason = cached
        if ready:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "not ready", "reason": reason})

    def _probe_broker(self) -> tuple[bool, str]:
        try:
            metadata = self._producer.list_topics(timeout=self.settings.ready_timeout_s)
        except KafkaException as exc:
            return False, f"Kafka did not answer a metadata request within {self.settings.ready_timeout_s:g} s: {exc}"
        missing = sorted(self._own_topics - set(metadata.topics))
        if missing:
            return False, f"topics missing on the broker (run `mom topics apply`): {', '.join(missing)}"
        return True, ""

    async def metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def post_events(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            response = await self._post_events(request)
        except BadRequest as exc:
            response = _problem(exc.status, exc.error, exc.message)
        except Exception:
            log.exception("request failed")
            response = _problem(500, "internal", "ingest failed to process the request; it is safe to resend")
        INGEST_REQUESTS.labels(status=str(response.status)).inc()
        INGEST_REQUEST_DURATION.observe(time.perf_counter() - started)
        return response

    async def _post_events(self, request: web.Request) -> web.Response:
        client = authenticate(request.headers.get("Authorization"), self.settings.tokens)
        if client is None:
            return _problem(401, "unauthorized", "send `Authorization: Bearer <token>` with a valid token",
                            {"WWW-Authenticate": 'Bearer realm="mom-ingest"'})
        ndjson = self._is_ndjson(request)
        body = await self._read_body(request)
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC)  # the only clock read: recorded_at of the whole request
        request_id = str(uuid.uuid4())
        if not self._registered and not await asyncio.to_thread(self._register_schemas):
            raise BadRequest(503, "unavailable", "the schema registry is unreachable; nothing was written, resend later")
        deliveries, outcomes = await self._process(loop, body, ndjson, now, request_id, client)
        deadline = self.settings.ack_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(deliveries.future), timeout=deadline)
        except TimeoutError:
            log.warning("Kafka did not acknowledge in time", extra={"fields": {"request_id": request_id}})
        return self._answer(request_id, outcomes, deliveries)

    @staticmethod
    def _is_ndjson(request: web.Request) -> bool:
        if "Content-Type" not in request.headers:
            return False
        content_type = request.content_type
        if content_type in NDJSON_TYPES:
            return True
        if content_type in JSON_TYPES or content_type.endswith("+json"):
            return False
        raise BadRequest(415, "unsupported_media_type",
                         f"Content-Type {content_type} is not supported: send application/json (an array) "
                         "or application/x-ndjson (one event per line)")

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_bytes
        too_large = BadRequest(413, "too_large", f"the body exceeds MOM_INGEST_MAX_BYTES = {limit} bytes; split the batch")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    # The work of one request, on a worker thread -------------------------------------------------

    async def _process(self, loop: asyncio.AbstractEventLoop, body: bytes, ndjson: bool, now: datetime,
                       request_id: str, client: str) -> tuple[_Deliveries, list[Accepted | Refused]]:
        # On the event loop's thread, yielding every CHUNK items so that other requests, probes and the
        # delivery poll keep running while a large request is worked through.
        items, raw_lines = self._parse_ndjson(body) if ndjson else (self._parse_array(body), None)
        translate = self._translator.translate_at
        now_micros = to_micros(now)
        outcomes: list[Accepted | Refused] = []
        # 1. Validate and encode every item first: a codec failure then answers 503 with nothing
        #    produced, instead of half a batch.
        messages: list[tuple[str, bytes, str, list[tuple[str, bytes]]]] = []
        for start in range(0, len(items), CHUNK):
            for index in range(start, min(start + CHUNK, len(items))):
                outcome = translate(index, items[index], now_micros=now_micros, client=client)
                outcomes.append(outcome)
                try:
                    messages.append(self._message(outcome, items, raw_lines, request_id, now, client))
                except Exception as exc:
                    log.exception("encoding failed", extra={"fields": {"request_id": request_id}})
                    raise BadRequest(503, "unavailable", f"events could not be encoded ({exc}); nothing was "
                                                         "written, resend later") from exc
            await asyncio.sleep(0)
        # 2. Produce; the delivery callbacks resolve `deliveries` once all are acknowledged.
        deliveries = _Deliveries(loop, len(outcomes))
        produce = self._producer.produce
        try:
            for index, (topic, value, key, headers) in enumerate(messages):
                deliveries.expect()
                on_delivery = partial(deliveries.delivered, index)
                deadline = None
                while True:
                    try:
                        produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                        break
                    except BufferError:  # the local queue is full: let the poll task drain it
                        deadline = deadline or time.monotonic() + self.settings.ack_timeout_s
                        if time.monotonic() > deadline:
                            deliveries.not_produced(index, "the producer's queue stayed full")
                            break
                        await asyncio.sleep(0.005)
                    except KafkaException as exc:
                        deliveries.not_produced(index, str(exc))
                        break
        finally:
            deliveries.seal()
        return deliveries, outcomes

    def _message(self, outcome: Accepted | Refused, items: list[Any], raw_lines: list[bytes] | None,
                 request_id: str, now: datetime, client: str) -> tuple[str, bytes, str, list[tuple[str, bytes]]]:
        """(topic, value, key, headers) of the message an outcome becomes: the event, or its dead letter."""
        if type(outcome) is Accepted:
            route = self._routes[outcome.event_type]
            return (route.topic, self._codec.encode(outcome.event_type, outcome.record), outcome.record[route.key_field],
                    [("event_type", outcome.event_type.encode()), ("event_id", outcome.event_id.encode())])
        payload = raw_lines[outcome.index].decode("utf-8", "replace") if raw_lines is not None \
            else orjson.dumps(items[outcome.index]).decode()
        rejection = self._rejection(outcome, request_id, now, client, payload)
        return (self._rejected_topic, self._codec.encode(REJECTED_EVENT, rejection.to_record()), client,
                [("event_type", REJECTED_EVENT.encode()), ("event_id", rejection.event_id.encode())])

    def _parse_array(self, body: bytes) -> list[Any]:
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(400, "json", f"the body is not valid JSON: line {exc.lineno} column {exc.colno} "
                                          f"(byte {exc.pos}): {exc.msg}") from None
        if type(items) is not list:
            raise BadRequest(400, "json", "the body must be a JSON array of events "
                                          "(or NDJSON with Content-Type application/x-ndjson)")
        self._check_count(len(items))
        return items

    def _parse_ndjson(self, body: bytes) -> tuple[list[Any], list[bytes]]:
        items, raw_lines = [], []
        loads = orjson.loads
        for line_number, line in enumerate(body.split(b"\n"), start=1):
            line = line.strip()
            if not line:
                continue
            try:
                items.append(loads(line))
            except orjson.JSONDecodeError as exc:
                raise BadRequest(400, "json", f"line {line_number} is not valid JSON: column {exc.colno}: {exc.msg}") from None
            raw_lines.append(line)
            if len(items) > self.settings.max_events:
                self._check_count(len(items))
        self._check_count(len(items))
        return items, raw_lines

    def _check_count(self, count: int) -> None:
        if count == 0:
            raise BadRequest(400, "empty", "the request holds no events")
        if count > self.settings.max_events:
            raise BadRequest(413, "too_many_events",
                             f"the request exceeds MOM_INGEST_MAX_EVENTS = {self.settings.max_events} events; split the batch")

    @staticmethod
    def _rejection(outcome: Refused, request_id: str, now: datetime, client: str, payload: str) -> EventRejected:
        return EventRejected(
            event_id=f"rejected:{request_id}:{outcome.index}",
            occurred_at=now,
            recorded_at=now,
            source=client,
            correlation_id=None,
            request_id=request_id,
            index=outcome.index,
            event_type=outcome.event_type,
            errors=tuple(RejectionError(**error) for error in outcome.errors),
            payload=payload,
        )

    # The answer ------------------------------------------------------------------------------

    def _answer(self, request_id: str, outcomes: list[Accepted | Refused], deliveries: _Deliveries) -> web.Response:
        status = deliveries.status
        results: list[dict[str, Any]] = []
        accepted = rejected = failed = 0
        for outcome in outcomes:
            index = outcome.index
            acked = status[index] == _ACKED
            if type(outcome) is Accepted:
                if acked:
                    accepted += 1
                    results.append({"index": index, "event_id": outcome.event_id, "status": "accepted"})
                    continue
                failed += 1
                DELIVERY_FAILURES.labels(kind="event").inc()
                results.append({"index": index, "event_id": outcome.event_id, "status": "failed",
                                "error": self._failure(deliveries, index)})
                continue
            result: dict[str, Any] = {"index": index, "status": "rejected", "errors": list(outcome.errors)}
            if outcome.event_id is not None:
                result["event_id"] = outcome.event_id
            if acked:
                rejected += 1
            else:  # the item was refused, but its dead letter is not safely kept: the client must resend
                failed += 1
                DELIVERY_FAILURES.labels(kind="rejection").inc()
                result["status"] = "failed"
                result["error"] = self._failure(deliveries, index)
            results.append(result)
        INGEST_EVENTS.labels(outcome="accepted").inc(accepted)
        INGEST_EVENTS.labels(outcome="rejected").inc(rejected)
        if failed:
            INGEST_EVENTS.labels(outcome="failed").inc(failed)
        body = {"request_id": request_id, "accepted": accepted, "rejected": rejected, "failed": failed,
                "results": results}
        return _json(503 if failed else 202, body)

    def _failure(self, deliveries: _Deliveries, index: int) -> str:
        reason = deliveries.errors.get(index)
        if reason is None:
            reason = f"Kafka did not acknowledge within MOM_INGEST_ACK_TIMEOUT_S = {self.settings.ack_timeout_s:g} s"
        return f"{reason}; safe to resend (the event_id makes a duplicate harmless)"


def _time_zones() -> frozenset[str]:
    try:
        return frozenset(zoneinfo.available_timezones())
    except Exception:  # noqa: BLE001 - no tz database: the translator checks the names' syntax instead
        return frozenset()


def make_ingest(settings: IngestSettings, *, catalogue: Catalogue | None = None,
                producer: Producer | None = None) -> Ingest:
    """The ingest pipeline (translate, validate, produce, dead-letter), shared by HTTP and the bridges."""
    common = settings.common
    catalogue = catalogue or Catalogue.load(common.schemas_dir)
    codec = codec_for(catalogue, common.registry_url, common.schemas_dir)
    input_types = [event for topic in catalogue.written_by(SERVICE) for event in topic.events if event != REJECTED_EVENT]
    translator = Translator(catalogue.schemas, input_types, max_future_s=settings.max_future_s,
                            time_zones=_time_zones(), max_string_length=settings.max_string_length)
    return Ingest(settings, catalogue, codec, producer or kafka.producer(common.kafka), translator)


def build(settings: IngestSettings, *, catalogue: Catalogue | None = None, producer: Producer | None = None) -> web.Application:
    """The ingest application; the producer's poll thread starts with the app and stops (flushed) with it."""
    ingest = make_ingest(settings, catalogue=catalogue, producer=producer)
    openapi_yaml = OPENAPI_PATH.read_bytes()
    openapi_json = orjson.dumps(yaml.safe_load(openapi_yaml))

    async def openapi_as_yaml(_request: web.Request) -> web.Response:
        return web.Response(body=openapi_yaml, content_type="application/yaml")

    async def openapi_as_json(_request: web.Request) -> web.Response:
        return web.Response(body=openapi_json, content_type="application/json")

    async def producer_lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await ingest.start()
        log.info("ingest started", extra={"fields": {"event_types": len(ingest._translator.event_types)}})
        yield
        await ingest.close()
        log.info("ingest stopped")

    # client_max_size: the body is read as a stream and limited by MOM_INGEST_MAX_BYTES, with a JSON 413
    app = web.Application(client_max_size=settings.max_bytes + 1)
    app[INGEST_KEY] = ingest
    app.router.add_post("/v1/events", ingest.post_events)
    app.router.add_get("/healthz", ingest.healthz)
    app.router.add_get("/readyz", ingest.readyz)
    app.router.add_get("/metrics", ingest.metrics)
    app.router.add_get("/openapi.yaml", openapi_as_yaml)
    app.router.add_get("/openapi.json", openapi_as_json)
    app.cleanup_ctx.append(producer_lifecycle)
    from services.ingest.bridge import attach  # here, not at the top: the bridge module imports this one

    attach(app)  # the MQTT and OPC UA bridges, when MOM_INGEST_BRIDGE_IN_PROCESS asks for them in this process
    return app
