"""One service worker process timed over a stream of its own, in a scratch schema.

The scenarios of the domain services (quality, maintenance) share this: migrate a scratch schema,
seed its positions at the current end of the service's input topics (so only this run's events
count), produce the stream, start `python -m services.<service>` on that schema, and time it from
its first committed position to the last. A query then reads what the projection holds, before the
scratch schema is dropped.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module

from services.common import kafka as mom_kafka
from services.common import localstack
from services.common.kafka import end_offsets
from services.common.migrations import upgrade
from services.common.replay import seed_positions
from services.common.settings import REPO_ROOT


@dataclass(frozen=True)
class Timed:
    events: int       # events processed from the first committed position to the last
    seconds: float
    found: tuple      # the row the query returned

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def produce(ctx, events: Sequence[tuple[str, dict]]) -> None:
    """Each (event type, record) to its catalogue topic, keyed as the catalogue says."""
    producer = mom_kafka.producer(ctx.kafka)
    for event_type, record in events:
        producer.produce(ctx.catalogue.topic_for(event_type).name,
                         key=ctx.catalogue.key_for(event_type, record).encode(),
                         value=ctx.codec.encode(event_type, record))
        producer.poll(0)
    assert producer.flush(60) == 0


def timed_worker(ctx, service: str, events: Sequence[tuple[str, dict]], query: str, *,
                 env: Mapping[str, str] | None = None, timeout_s: float = 900.0) -> Timed:
    """Run the stream through one worker of `service`; `query` (with `{schema}`) reads the result."""
    run = uuid.uuid4().hex[:8]
    schema = f"{service}_bench_{run}"
    admin = ctx.config.db_url()
    upgrade(admin, service, schema=schema)
    settings = import_module(f"services.{service}.settings").from_env()
    topics = import_module(f"services.{service}.app").build(settings, ctx.catalogue).input_topics
    start = end_offsets(ctx.kafka, topics)
    seed_positions(admin, schema, start)
    produce(ctx, events)
    target = sum(end_offsets(ctx.kafka, topics).values()) - sum(start.values())
    worker_env = {**os.environ, **localstack.service_env(ctx.config, service), "MOM_DATABASE_URL": admin,
                  "MOM_DB_SCHEMA": schema, "MOM_GROUP_ID": f"bench-{service}-{run}", "MOM_LOG_LEVEL": "WARNING",
                  "MOM_HTTP_PORT": "0", **(env or {})}
    log_path = ctx.config.logs_dir / f"bench-{service}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"services.{service}"], env=worker_env, cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    first_t = first_n = None
    began = time.perf_counter()
    try:
        with ctx.superuser() as conn:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the {service} worker exited with {proc.returncode}; see {log_path}")
                done = int(conn.execute(f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".positions')
                           .fetchone()[0]) - sum(start.values())
                if done > 0 and first_t is None:
                    first_t, first_n = time.perf_counter(), done
                if done >= target:
                    done_t = time.perf_counter()
                    break
                if time.perf_counter() - began > timeout_s:
                    raise RuntimeError(f"{service}: only {done:,} of {target:,} events after {timeout_s:.0f} s")
                time.sleep(0.2)
            found = tuple(conn.execute(query.format(schema=schema)).fetchone())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with ctx.superuser() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return Timed(events=target - first_n, seconds=done_t - first_t, found=found)
