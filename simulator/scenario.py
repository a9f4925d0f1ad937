"""A small, deterministic hour of a three-machine line, in ingest's JSON wire format."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

LINE = "acme.berlin.assembly.line1"
UNITS = ("press07", "press08", "weld01")
START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def _at(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def one_hour() -> list[dict]:
    """Each unit runs, stops once for a jam, and reports parts every minute while running."""
    events: list[dict] = []
    for n, unit in enumerate(UNITS):
        equipment = f"{LINE}.{unit}"
        down_from, down_to = 15 + 10 * n, 22 + 10 * n + 3 * n
        timeline = [(0, "RUNNING", None), (down_from, "DOWN", "JAM"), (down_to, "RUNNING", None), (55, "IDLE", None)]
        for i, (minute, state, reason) in enumerate(timeline):
            event = {"type": "MachineStateChanged", "event_id": f"{unit}-state-{i}",
                     "occurred_at": _at(START + timedelta(minutes=minute)), "equipment_id": equipment, "state": state}
            if reason:
                event["reason_code"] = reason
            events.append(event)
        for minute in range(1, 56):
            if down_from < minute <= down_to:
                continue
            events.append({"type": "PartsProduced", "event_id": f"{unit}-parts-{minute}",
                           "occurred_at": _at(START + timedelta(minutes=minute)), "equipment_id": equipment,
                           "good": 4 + n, "reject": 1 if minute % 10 == 0 else 0})
    return sorted(events, key=lambda e: e["occurred_at"])


def bad_items() -> list[dict]:
    """What a misconfigured gateway might send: each is refused with the field and the rule."""
    return [
        {"type": "MachineStateChanged", "event_id": "bad-1", "occurred_at": _at(START),
         "equipment_id": f"{LINE}.press07", "state": "SMOKING"},
        {"type": "PartsProduced", "event_id": "bad-2", "occurred_at": _at(START),
         "equipment_id": "Line 1 / Press 7", "good": -3, "reject": 0},
    ]
