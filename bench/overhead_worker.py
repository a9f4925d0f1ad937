"""`python -m bench.overhead_worker`: the shared consumer loop with a trivial projector.

The same worker host as every service (services.common.runtime.run_service -> build_worker ->
ConsumerLoop and OutboxRelay), reading the bench's machine topic with the execution schema's plumbing
tables, but with a projector that does almost nothing: it counts events, good and reject parts per
work unit and upserts those counters with ONE `unnest` statement per batch. So `loop_overhead`
measures the shared loop's own cost (consume, decode, claim ids, positions, commit), apart from any
service's domain work. The table `bench_loop_counts` is created by the bench (scenarios.loop_overhead).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.avro import EventMapper
from services.common.catalogue import Catalogue
from services.common.db import Int8Array, TextArray
from services.common.loop import ServiceSpec
from services.common.runtime import run_service
from services.common.settings import Settings
from services.execution.events import MachineStateChanged, PartsProduced

TABLE = "bench_loop_counts"
DDL = f"""CREATE TABLE IF NOT EXISTS {{schema}}.{TABLE} (
    work_unit text PRIMARY KEY,
    events bigint NOT NULL,
    good bigint NOT NULL,
    reject bigint NOT NULL)"""

_UPSERT = text(f"""INSERT INTO {TABLE} AS c (work_unit, events, good, reject)
    SELECT * FROM unnest(CAST(:units AS text[]), CAST(:events AS bigint[]), CAST(:good AS bigint[]), CAST(:reject AS bigint[]))
    ON CONFLICT (work_unit) DO UPDATE
    SET events = c.events + excluded.events, good = c.good + excluded.good, reject = c.reject + excluded.reject""")


class CountingProjector:
    """Per-unit counters, one statement per batch, no derived events."""

    async def apply(self, conn: AsyncConnection, events: Sequence[Any]) -> Sequence[Any]:
        counts: dict[str, list[int]] = {}
        for event in events:
            c = counts.get(event.equipment_id)
            if c is None:
                c = counts[event.equipment_id] = [0, 0, 0]
            c[0] += 1
            if type(event) is PartsProduced:
                c[1] += event.good
                c[2] += event.reject
        if counts:
            units = list(counts)
            await conn.execute(_UPSERT, {"units": TextArray(units), "events": Int8Array([counts[u][0] for u in units]),
                                         "good": Int8Array([counts[u][1] for u in units]), "reject": Int8Array([counts[u][2] for u in units])})
        return ()


def build(settings: Settings, catalogue: Catalogue) -> ServiceSpec:
    return ServiceSpec(
        name="bench_loop",
        input_topics=(catalogue.topic_for("MachineStateChanged").name,),
        events=EventMapper([MachineStateChanged, PartsProduced]),
        projector=CountingProjector(),
    )


if __name__ == "__main__":
    run_service(Settings.from_env("execution"), build)
