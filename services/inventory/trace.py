"""`mom trace LOT [--forward] [--as-of T]`: a lot's genealogy from the `inventory.trace` SQL function.

Backward (the default) lists every ancestor lot with the quantity consumed from it into the lot
it went into; forward lists every descendant. With `--as-of`, only consumptions that had happened
by then (event time) count. Reads as the read-only analyst: MOM_ANALYST_DATABASE_URL when set,
else the local stack's analyst URL.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg

from services.inventory.settings import SERVICE


@dataclass(frozen=True)
class TraceRow:
    lot_id: str
    material_id: str | None
    depth: int
    parent_lot_id: str
    child_lot_id: str
    quantity: float


def instant(text: str) -> datetime:
    """RFC 3339; a time without an offset is UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def trace(url: str, lot_id: str, *, forward: bool = False, as_of: datetime | None = None,
          schema: str = SERVICE) -> list[TraceRow]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f'SELECT lot_id, material_id, depth, parent_lot_id, child_lot_id, quantity FROM "{schema}".trace(%s, %s, %s) '
            "ORDER BY depth, lot_id, parent_lot_id, child_lot_id", (lot_id, forward, as_of)).fetchall()
    return [TraceRow(*row) for row in rows]


def render(lot_id: str, rows: list[TraceRow], *, forward: bool, as_json: bool = False) -> str:
    if as_json:
        return json.dumps({"lot_id": lot_id, "direction": "forward" if forward else "backward",
                           "lots": [asdict(r) for r in rows]}, indent=2)
    if not rows:
        return f"{lot_id}: no {'descendants' if forward else 'ancestors'}"
    header = f"{'depth':>5}  {'lot':<28} {'material':<20} {'into' if not forward else 'from':<28} {'quantity':>12}"
    lines = [f"{'descendants' if forward else 'ancestors'} of {lot_id}", header]
    for r in rows:
        other = r.child_lot_id if not forward else r.parent_lot_id
        lines.append(f"{r.depth:>5}  {r.lot_id:<28} {r.material_id or '?':<20} {other:<28} {r.quantity:>12g}")
    return "\n".join(lines)


def analyst_url() -> str:
    if os.environ.get("MOM_ANALYST_DATABASE_URL"):
        return os.environ["MOM_ANALYST_DATABASE_URL"]
    from services.common import localstack

    return localstack.status(localstack.StackConfig.from_env())["database"]["analyst_url"]


def run(lot_id: str, *, forward: bool = False, as_of: str | None = None, as_json: bool = False) -> str:
    rows = trace(analyst_url(), lot_id, forward=forward, as_of=as_of and instant(as_of))
    return render(lot_id, rows, forward=forward, as_json=as_json)
