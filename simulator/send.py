"""Sending a simulation: to ingest's HTTP API (the default, as any client would), or straight to
Kafka with the project's codec for load tests that must not be limited by HTTP.

Both send in the given order, in batches, at a controllable rate (events per second of wall time;
0 = as fast as the target takes them). Straight-to-Kafka mode validates and translates each item
with ingest's own translator, stamps `recorded_at` like ingest does (a microsecond apart, in
order), encodes with the codec and produces to the catalogue's topic and key.
"""
from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

DEFAULT_BATCH = 1000


@dataclass
class Sent:
    accepted: int = 0
    refused: int = 0
    seconds: float = 0.0
    refusals: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


class _Pacer:
    """Keeps a long-run rate: sleeps only when ahead of schedule."""

    def __init__(self, rate: float) -> None:
        self.rate, self.started, self.done = rate, time.monotonic(), 0

    def wait(self, count: int) -> None:
        self.done += count
        if self.rate > 0:
            ahead = self.done / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def post(url: str, token: str, events: Sequence[dict], timeout: float = 120.0) -> dict:
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/events", data=json.dumps(list(events)).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def requests(events: Sequence[dict], batch: int, barriers: frozenset[str] | set[str]) -> list[tuple[int, list[dict]]]:
    """The events cut into requests of at most `batch`, a new request starting at each barrier event:
    (index of its first event, events)."""
    cut: list[tuple[int, list[dict]]] = []
    for index, event in enumerate(events):
        if not cut or len(cut[-1][1]) >= batch or event["event_id"] in barriers:
            cut.append((index, []))
        cut[-1][1].append(event)
    return cut


def to_ingest(events: Sequence[dict], url: str, token: str, *, batch: int = DEFAULT_BATCH, rate: float = 0.0,
              barriers: frozenset[str] | set[str] = frozenset(), barrier: Callable[[], object] | None = None,
              pause_s: float = 1.0, progress: Callable[[int, int], None] | None = None) -> Sent:
    """POST the events in order, `batch` per request; refusals are collected with field and rule.

    Services fold events of several topics in acceptance order only as far as they can see it: an
    operation started on the operator topic and its first count on the machine topic, sent a few
    microseconds apart, may be applied the other way round. So a request starts at each barrier
    event (`barriers`), after `barrier()` returns (e.g. every service has caught up), or, without
    one, after a pause of `pause_s`: the time a real shop floor leaves between such events anyway.
    """
    sent, pacer, started = Sent(), _Pacer(rate), time.monotonic()
    for first, chunk in requests(events, batch, barriers):
        if first and chunk[0]["event_id"] in barriers:
            if barrier is not None:
                barrier()
            else:
                time.sleep(pause_s)
        answer = post(url, token, chunk)
        sent.accepted += answer["accepted"]
        sent.refused += answer["rejected"]
        for result in answer["results"]:
            for error in result.get("errors", []):
                sent.refusals.append(f"item {first + result['index']} ({chunk[result['index']].get('type')}): "
                                     f"{error['field']}: {error['rule']}: {error['message']}")
        pacer.wait(len(chunk))
        if progress:
            progress(first + len(chunk), len(events))
    sent.seconds = time.monotonic() - started
    return sent


def to_kafka(events: Sequence[dict], bootstrap: str, registry_url: str = "", *, batch: int = DEFAULT_BATCH,
             rate: float = 0.0, source: str = "simulator", barriers: frozenset[str] | set[str] = frozenset(),
             barrier: Callable[[], object] | None = None, pause_s: float = 1.0,
             progress: Callable[[int, int], None] | None = None) -> Sent:
    """Produce canonical events straight to the input topics (what ingest would have written); at a
    barrier event, what was produced is flushed first and `barrier()` (or a pause) is awaited."""
    from services.common.avro import codec_for
    from services.common.catalogue import Catalogue
    from services.common.kafka import producer
    from services.common.settings import REPO_ROOT, KafkaSettings
    from services.ingest.translators import Accepted, Translator

    catalogue = Catalogue.load()
    input_types = sorted({e["type"] for e in events})
    translator = Translator(catalogue.schemas, input_types, max_future_s=10 * 365 * 86400.0)
    codec = codec_for(catalogue, registry_url, REPO_ROOT / "schemas")
    produce = producer(KafkaSettings(bootstrap=bootstrap))
    sent, pacer, started = Sent(), _Pacer(rate), time.monotonic()
    for first, chunk in requests(events, batch, barriers):
        if first and chunk[0]["event_id"] in barriers:
            produce.flush(60)
            if barrier is not None:
                barrier()
            else:
                time.sleep(pause_s)
        now = datetime.now(UTC)
        for outcome in translator.translate_all(chunk, now=now, client=source):
            if not isinstance(outcome, Accepted):
                sent.refused += 1
                sent.refusals.extend(f"item {first + outcome.index}: {e['field']}: {e['rule']}: {e['message']}"
                                     for e in outcome.errors)
                continue
            topic = catalogue.topic_for(outcome.event_type)
            value = codec.encode(outcome.event_type, outcome.record)
            key = str(outcome.record[topic.key_field(outcome.event_type)])
            while True:
                try:
                    produce.produce(topic.name, value, key.encode(), headers=[
                        ("event_type", outcome.event_type.encode()), ("event_id", outcome.event_id.encode())])
                    break
                except BufferError:
                    produce.poll(0.05)
            sent.accepted += 1
        produce.poll(0)
        pacer.wait(len(chunk))
        if progress:
            progress(first + len(chunk), len(events))
    remaining = produce.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} events were not delivered to Kafka within 60 s")
    sent.seconds = time.monotonic() - started
    return sent
