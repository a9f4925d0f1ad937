"""Scenario `faust_agent`: execution's work done through faust's own per-event stream machinery.

Run as a subprocess by the bench (`python -m bench.faust_worker`), with MOM_BENCH_BOOTSTRAP,
MOM_DATABASE_URL and MOM_BENCH_APP_ID in its environment. One agent over the catalogue's machine topic,
`stream.take_events(2000, within=0.05)` (take() with each event's partition and offset), decoding with
the project's codec and mapper, and per batch ONE transaction doing what the consumer loop does:
claim event ids, ExecutionProjector().apply(), upsert each partition's position. No tables, no web.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback

import faust
from sqlalchemy import text

from services.common.avro import EventMapper, codec_for
from services.common.catalogue import Catalogue
from services.common.db import claim_event_ids, make_engine
from services.common.settings import REPO_ROOT
from services.execution.events import CONSUMED, EMITTED
from services.execution.projections import ExecutionProjector

BATCH = int(os.environ.get("MOM_BENCH_BATCH", "2000"))

catalogue = Catalogue.load()
codec = codec_for(catalogue, "", REPO_ROOT / "schemas")
mapper = EventMapper(CONSUMED + EMITTED)
projector = ExecutionProjector()
topic_name = catalogue.topic_for("MachineStateChanged").name

app = faust.App(
    os.environ["MOM_BENCH_APP_ID"],
    broker=f"kafka://{os.environ['MOM_BENCH_BOOTSTRAP']}",
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,
    topic_disable_leader=True,
    store="memory://",
    consumer_auto_offset_reset="earliest",
    datadir=os.environ.get("MOM_BENCH_DATADIR", "/tmp/mom-bench-faust"),
)
source = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
engine = None
stats = {"batches": 0, "events": 0, "reported": 0.0}

UPSERT_POSITIONS = text("""
    INSERT INTO positions (topic, partition, next_offset)
    SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:parts AS integer[]), CAST(:nexts AS bigint[]))
    ON CONFLICT (topic, partition) DO UPDATE SET next_offset = GREATEST(positions.next_offset, excluded.next_offset)""")


@app.agent(source)
async def project(stream):
    try:
        await _project(stream)
    except Exception:  # faust would log the crash and keep the worker alive, idle: end it so the bench sees it
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)


async def _project(stream):
    global engine
    if engine is None:
        engine = make_engine(os.environ["MOM_DATABASE_URL"], "execution")
    async for batch in stream.take_events(BATCH, within=0.05):
        nexts: dict[int, int] = {}
        events = []
        for event in batch:
            message = event.message
            nexts[message.partition] = max(nexts.get(message.partition, 0), message.offset + 1)
            event_type, record = codec.decode(event.value)
            if mapper.knows(event_type):
                events.append(mapper.to_event(event_type, record))
        async with engine.begin() as conn:
            fresh = await claim_event_ids(conn, [e.event_id for e in events])
            await projector.apply(conn, [e for e in events if e.event_id in fresh])
            parts = sorted(nexts)
            await conn.execute(UPSERT_POSITIONS, {"topics": [topic_name] * len(parts), "parts": parts,
                                                  "nexts": [nexts[p] for p in parts]})
        stats["batches"] += 1
        stats["events"] += len(batch)
        now = time.monotonic()
        if now - stats["reported"] >= 5:
            stats["reported"] = now
            print(f"faust_agent: {stats['batches']} batches, {stats['events']} events, "
                  f"mean batch {stats['events'] / stats['batches']:.0f}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    app.main()
