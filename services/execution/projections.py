"""Execution's tables and how a batch changes them: load what the batch touches, fold, write each row once."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.execution.events import Event, MachineStateChanged
from services.execution.handlers import fold
from services.execution.model import BatchState, EquipmentStatus


class ExecutionProjector:
    async def apply(self, conn: AsyncConnection, events: Sequence[Event]) -> list[Event]:
        equipment = sorted({e.equipment_id for e in events if isinstance(e, MachineStateChanged)})
        batch = BatchState(statuses=await load_statuses(conn, equipment))
        derived = fold(batch, events)
        await save_statuses(conn, [batch.statuses[e] for e in sorted(batch.changed)])
        await add_counts(conn, batch.counts)
        return derived


async def load_statuses(conn: AsyncConnection, equipment: list[str]) -> dict[str, EquipmentStatus | None]:
    statuses: dict[str, EquipmentStatus | None] = dict.fromkeys(equipment)
    if equipment:
        rows = await conn.execute(
            text("""SELECT equipment_id, state, reason_code, since, last_event_id FROM equipment_status
                    WHERE equipment_id = ANY(:ids)"""), {"ids": equipment})
        for r in rows:
            statuses[r.equipment_id] = EquipmentStatus(r.equipment_id, r.state, r.reason_code, r.since, r.last_event_id)
    return statuses


async def save_statuses(conn: AsyncConnection, statuses: list[EquipmentStatus | None]) -> None:
    rows = [s for s in statuses if s is not None]
    if not rows:
        return
    await conn.execute(
        text("""INSERT INTO equipment_status (equipment_id, state, reason_code, since, last_event_id)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:states AS text[]), CAST(:reasons AS text[]),
                                     CAST(:since AS timestamptz[]), CAST(:events AS text[]))
                ON CONFLICT (equipment_id) DO UPDATE SET state = excluded.state, reason_code = excluded.reason_code,
                    since = excluded.since, last_event_id = excluded.last_event_id"""),
        {"ids": [s.equipment_id for s in rows], "states": [s.state for s in rows],
         "reasons": [s.reason_code for s in rows], "since": [s.since for s in rows],
         "events": [s.last_event_id for s in rows]},
    )


async def add_counts(conn: AsyncConnection, counts: dict) -> None:
    if not counts:
        return
    keys = sorted(counts)
    await conn.execute(
        text("""INSERT INTO part_counts_hourly (equipment_id, hour_start, good, reject)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:hours AS timestamptz[]),
                                     CAST(:good AS bigint[]), CAST(:reject AS bigint[]))
                ON CONFLICT (equipment_id, hour_start) DO UPDATE SET
                    good = part_counts_hourly.good + excluded.good,
                    reject = part_counts_hourly.reject + excluded.reject"""),
        {"ids": [k[0] for k in keys], "hours": [k[1] for k in keys],
         "good": [counts[k][0] for k in keys], "reject": [counts[k][1] for k in keys]},
    )
