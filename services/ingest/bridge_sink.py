"""Where the bridges and `mom import` send canonical events: ingest's own path, in process or over HTTP.

`DirectSink` hands a batch to ingest's request pipeline (`services.ingest.app.Ingest`): the same
translator, validation, Avro codec, Kafka producer, dead-letter topic and metrics as
`POST /v1/events`, without the HTTP hop. `HttpSink` posts the batch to a running ingest.

Both answer a `SinkResult`; a batch with any `failed` item is not delivered and must be sent again
(the event ids make the items that did get through harmless duplicates).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from confluent_kafka import Producer

from services.common import kafka
from services.common.catalogue import Catalogue
from services.common.settings import Settings
from services.ingest.app import Ingest, make_ingest
from services.ingest.settings import SERVICE, IngestSettings


@dataclass
class SinkResult:
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)   # ingest's per-item results
    error: str | None = None                                       # why the whole batch failed

    @property
    def delivered(self) -> bool:
        return self.failed == 0 and self.error is None


class Sink(Protocol):
    async def submit(self, items: list[dict[str, Any]]) -> SinkResult: ...

    async def close(self) -> None: ...


def _result(body: dict[str, Any]) -> SinkResult:
    return SinkResult(body.get("accepted", 0), body.get("rejected", 0), body.get("failed", 0),
                      body.get("results", []))


class DirectSink:
    """ingest's pipeline in this process: `Ingest._process` and `Ingest._answer`, as a request uses them."""

    def __init__(self, ingest: Ingest, client: str, *, owned: bool = False) -> None:
        self.ingest = ingest
        self.client = client
        self._owned = owned
        self._started = False

    @classmethod
    def from_settings(cls, settings: IngestSettings, client: str, *, catalogue: Catalogue | None = None,
                      producer: Producer | None = None) -> DirectSink:
        """An ingest pipeline of its own (its own producer), built as `services.ingest.app.build` builds it."""
        producer = producer or kafka.producer(settings.common.kafka,
                                              logger=logging.getLogger("services.ingest.bridge.kafka"))
        ingest = make_ingest(settings, catalogue=catalogue, producer=producer)
        return cls(ingest, client, owned=True)

    @staticmethod
    def settings_from_env(env: dict[str, str] | Any, ack_timeout_s: float) -> IngestSettings:
        """Ingest settings for a pipeline that serves no HTTP clients (so it needs no tokens)."""
        return IngestSettings(common=Settings.from_env(SERVICE, env), tokens=(), ack_timeout_s=ack_timeout_s)

    async def submit(self, items: list[dict[str, Any]]) -> SinkResult:
        if not items:
            return SinkResult()
        if self._owned and not self._started:
            await self.ingest.start()
            self._started = True
        loop = asyncio.get_running_loop()
        request_id = str(uuid.uuid4())
        try:
            if not self.ingest._registered and not await asyncio.to_thread(self.ingest._register_schemas):
                return SinkResult(failed=len(items), error="the schema registry is unreachable")
            deliveries, outcomes = await self.ingest._process(loop, orjson.dumps(items), False, datetime.now(UTC),
                                                              request_id, self.client)
        except Exception as exc:  # noqa: BLE001 - BadRequest (503 codec) or anything else: resend later
            return SinkResult(failed=len(items), error=getattr(exc, "message", None) or str(exc))
        try:
            await asyncio.wait_for(asyncio.shield(deliveries.future), timeout=self.ingest.settings.ack_timeout_s)
        except TimeoutError:
            pass
        response = self.ingest._answer(request_id, outcomes, deliveries)
        return _result(orjson.loads(response.body))

    async def close(self) -> None:
        if self._owned and self._started:
            await self.ingest.close(timeout_s=5.0)


class HttpSink:
    """`POST /v1/events` of a running ingest, with its bearer token."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/") + "/v1/events"
        self.token = token
        self.timeout_s = timeout_s
        self._session: Any = None

    async def submit(self, items: list[dict[str, Any]]) -> SinkResult:
        import aiohttp

        if not items:
            return SinkResult()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        try:
            async with self._session.post(self.url, data=orjson.dumps(items), headers={
                    "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SinkResult(failed=len(items), error=f"ingest at {self.url} is unreachable: {exc}")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = {}
        if status in (202, 503) and "results" in parsed:
            return _result(parsed)
        return SinkResult(failed=len(items), error=f"ingest answered {status}: {parsed.get('message', body[:200])}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
