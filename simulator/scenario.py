"""A small, deterministic shift of a three-machine line in Berlin, in ingest's JSON wire format.

One early shift (06:00-14:00 Europe/Berlin, two breaks) on line 1 of the assembly area: a press, a
second press and a welding cell work two production orders in flow. Each unit has a setup or a
starved start, a few stops (minor and long), one unit runs through the first break, and every unit
reports its counts once a minute while running. An operator later reclassifies one stop's reason and
reports scrap that the welding cell counted good. Each unit reports one state after the shift end,
so the shift and its hours close (PeriodClosed) with the facts complete.

`shift()` returns the events in the order a client would send them: master data and plans first,
then everything else by event time. `ground_truth()` gives the scenario's own per-unit figures.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")
SITE = "acme.berlin"
AREA = f"{SITE}.assembly"
LINE = f"{AREA}.line1"
UNITS = ("press07", "press08", "weld01")
DAY = datetime(2026, 11, 2)  # a Monday; CET (UTC+1)
SHIFT_ID = "2026-11-02-EARLY"
PRODUCT = "BRACKET-A"
ORDERS = ("WO-1042", "WO-1043")
OPERATIONS = {"press07": "0010", "press08": "0020", "weld01": "0030"}
IDEAL_CYCLE_S = {"press07": 5.0, "press08": 5.5, "weld01": 6.0}
PARTS_PER_MINUTE = {"press07": 11, "press08": 10, "weld01": 9}
BREAKS = (("09:00", "09:15"), ("11:30", "12:00"))

# Each unit's states over the shift, local wall-clock times: (HH:MM[:SS], state, reason_code).
TIMELINES: dict[str, list[tuple[str, str, str | None]]] = {
    "press07": [("06:00", "SETUP", "CHANGEOVER"), ("06:20", "RUNNING", None),
                ("07:40", "DOWN", "JAM"), ("07:41:30", "RUNNING", None),
                ("09:00", "IDLE", "BREAK"), ("09:15", "RUNNING", None),
                ("10:10", "DOWN", "E-HYD-12"), ("10:35", "RUNNING", None),
                ("11:30", "IDLE", "BREAK"), ("12:00", "RUNNING", None),
                ("13:10", "DOWN", "JAM"), ("13:11", "RUNNING", None),
                ("13:50", "IDLE", "CLEANING"), ("14:02", "OFFLINE", "END-OF-SHIFT")],
    "press08": [("06:00", "STARVED", "NO-MATERIAL"), ("06:30", "RUNNING", None),
                ("08:15", "BLOCKED", "CONVEYOR-FULL"), ("08:25", "RUNNING", None),
                # runs through the 09:00 break: that time is production time (APT), not planned down time
                ("10:40", "DOWN", "E-TOOL-03"), ("10:58", "RUNNING", None),
                ("11:30", "IDLE", "BREAK"), ("12:00", "RUNNING", None),
                ("13:50", "IDLE", "CLEANING"), ("14:02", "OFFLINE", "END-OF-SHIFT")],
    "weld01": [("06:00", "SETUP", "CHANGEOVER"), ("06:10", "STARVED", "NO-MATERIAL"), ("06:40", "RUNNING", None),
               ("07:15", "DOWN", "E-WIRE"), ("07:16:30", "RUNNING", None),
               ("08:30", "DOWN", "E-WIRE"), ("08:42", "RUNNING", None),
               ("09:00", "IDLE", "BREAK"), ("09:15", "RUNNING", None),
               ("11:30", "IDLE", "BREAK"), ("12:00", "RUNNING", None),
               ("12:30", "DOWN", "E-ROBOT-7"), ("13:05", "RUNNING", None),
               ("13:50", "IDLE", "CLEANING"), ("14:02", "OFFLINE", "END-OF-SHIFT")],
}
ORDER_CHANGE = "10:00"  # WO-1042 completes and WO-1043 starts on every unit
OPERATORS = {"press07": "OP-17", "press08": "OP-23", "weld01": "OP-31"}
REASSIGNED = ("press08", "10:40", "11:05", "TOOL-BREAK")  # unit, stop start, when, new reason
SCRAP = ("weld01", "12:10", 6, "WELD-POROSITY")  # unit, when, quantity, reason


def local(hhmm: str) -> datetime:
    """A wall-clock time of the shift's day in Berlin, as a UTC instant."""
    parts = [int(p) for p in hhmm.split(":")]
    hour, minute, second = (parts + [0, 0])[:3]
    return DAY.replace(hour=hour, minute=minute, second=second, tzinfo=BERLIN).astimezone(UTC)


def _at(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unit_id(unit: str) -> str:
    return f"{LINE}.{unit}"


def plan() -> list[dict]:
    """Master data and plans, as the ERP would send them the evening before."""
    when = _at(local("00:00") - timedelta(hours=6))
    routing = [{"operation": OPERATIONS[u], "equipment_id": unit_id(u), "ideal_cycle_time_s": IDEAL_CYCLE_S[u]}
               for u in UNITS]
    return [
        {"type": "EquipmentRegistered", "event_id": "eq-site", "occurred_at": when, "equipment_id": SITE,
         "name": "Berlin plant", "level": "site", "time_zone": "Europe/Berlin"},
        {"type": "EquipmentRegistered", "event_id": "eq-area", "occurred_at": when, "equipment_id": AREA,
         "name": "Assembly", "level": "area", "parent_id": SITE},
        {"type": "EquipmentRegistered", "event_id": "eq-line1", "occurred_at": when, "equipment_id": LINE,
         "name": "Line 1", "level": "work_center", "parent_id": AREA},
        *({"type": "EquipmentRegistered", "event_id": f"eq-{u}", "occurred_at": when, "equipment_id": unit_id(u),
           "name": u.capitalize(), "level": "work_unit", "parent_id": LINE} for u in UNITS),
        {"type": "ShiftScheduled", "event_id": f"shift-{SHIFT_ID}", "occurred_at": when, "shift_id": SHIFT_ID,
         "equipment_id": SITE, "starts_at": _at(local("06:00")), "ends_at": _at(local("14:00")),
         "breaks": [{"starts_at": _at(local(s)), "ends_at": _at(local(e))} for s, e in BREAKS]},
        {"type": "ProductDefined", "event_id": f"product-{PRODUCT}", "occurred_at": when, "product_id": PRODUCT,
         "name": "Mounting bracket A", "ideal_cycle_time_s": 6.0, "routing": routing,
         "bom": [{"material_id": "STEEL-S235-2MM", "quantity_per_unit": 0.35},
                 {"material_id": "WELD-WIRE-G3SI1", "quantity_per_unit": 0.02}]},
        {"type": "ProductionOrderReleased", "event_id": "release-WO-1042", "occurred_at": when, "order_id": "WO-1042",
         "product_id": PRODUCT, "quantity": 1500, "due_at": _at(local("10:00"))},
        {"type": "ProductionOrderReleased", "event_id": "release-WO-1043", "occurred_at": when, "order_id": "WO-1043",
         "product_id": PRODUCT, "quantity": 3000, "due_at": _at(local("18:00"))},
    ]


def _running_minutes(unit: str) -> Iterator[datetime]:
    """Start of each whole minute the unit spends RUNNING during the shift."""
    timeline = [(local(t), state) for t, state, _ in TIMELINES[unit]]
    for (start, state), (end, _) in zip(timeline, timeline[1:], strict=False):
        if state != "RUNNING":
            continue
        minute = start
        while minute + timedelta(minutes=1) <= end:
            yield minute
            minute += timedelta(minutes=1)


def _order_at(t: datetime) -> str:
    return ORDERS[0] if t < local(ORDER_CHANGE) else ORDERS[1]


def floor_events() -> list[dict]:
    """Operator and machine events of the shift, by event time (the operator's list order breaks ties)."""
    events: list[dict] = []
    for u in UNITS:
        equipment, operation, operator = unit_id(u), OPERATIONS[u], OPERATORS[u]
        events += [
            {"type": "OperatorSignedIn", "event_id": f"{u}-signin", "occurred_at": _at(local("05:55")),
             "operator_id": operator, "equipment_id": equipment},
            {"type": "OperationStarted", "event_id": f"{u}-start-{ORDERS[0]}", "occurred_at": _at(local("06:00")),
             "order_id": ORDERS[0], "operation": operation, "equipment_id": equipment, "operator_id": operator},
            {"type": "OperationCompleted", "event_id": f"{u}-complete-{ORDERS[0]}",
             "occurred_at": _at(local(ORDER_CHANGE)), "order_id": ORDERS[0], "operation": operation,
             "equipment_id": equipment, "operator_id": operator},
            {"type": "OperationStarted", "event_id": f"{u}-start-{ORDERS[1]}",
             "occurred_at": _at(local(ORDER_CHANGE) + timedelta(microseconds=1)), "order_id": ORDERS[1],
             "operation": operation, "equipment_id": equipment, "operator_id": operator},
            {"type": "OperatorSignedOut", "event_id": f"{u}-signout", "occurred_at": _at(local("14:05")),
             "operator_id": operator, "equipment_id": equipment},
        ]
        for i, (when, state, reason) in enumerate(TIMELINES[u]):
            event = {"type": "MachineStateChanged", "event_id": f"{u}-state-{i:02d}", "occurred_at": _at(local(when)),
                     "equipment_id": equipment, "state": state}
            if reason:
                event["reason_code"] = reason
            events.append(event)
        for n, minute in enumerate(_running_minutes(u)):
            reject = 1 if n % 40 == 7 else 0
            events.append({"type": "PartsProduced", "event_id": f"{u}-parts-{n:03d}",
                           "occurred_at": _at(minute + timedelta(seconds=59)), "equipment_id": equipment,
                           "good": PARTS_PER_MINUTE[u] - reject, "reject": reject, "order_id": _order_at(minute)})
    unit, since, when, reason = REASSIGNED
    events.append({"type": "DowntimeReasonAssigned", "event_id": f"{unit}-reason-1", "occurred_at": _at(local(when)),
                   "equipment_id": unit_id(unit), "since": _at(local(since)), "reason_code": reason})
    unit, when, quantity, reason = SCRAP
    events.append({"type": "ScrapReported", "event_id": f"{unit}-scrap-1", "occurred_at": _at(local(when)),
                   "equipment_id": unit_id(unit), "order_id": _order_at(local(when)), "quantity": quantity,
                   "reason_code": reason, "rework": False})
    return sorted(events, key=lambda e: e["occurred_at"])  # stable: same-instant events keep their order


def shift() -> list[dict]:
    """The whole scenario in sending order."""
    return plan() + floor_events()


def ground_truth() -> dict[str, dict[str, float]]:
    """The scenario's own figures per unit for the shift, from the timelines (not from the services)."""
    truth = {}
    shift_start, shift_end = local("06:00"), local("14:00")
    on_break = [(local(s), local(e)) for s, e in BREAKS]
    for u in UNITS:
        timeline = [(local(t), state) for t, state, _ in TIMELINES[u]]
        apt = pdot = 0.0
        for (start, state), (end, _) in zip(timeline, timeline[1:], strict=False):
            start, end = max(start, shift_start), min(end, shift_end)
            if end <= start:
                continue
            seconds = (end - start).total_seconds()
            breaking = sum(max(0.0, (min(end, be) - max(start, bs)).total_seconds()) for bs, be in on_break)
            if state == "RUNNING":
                apt += seconds
            else:
                pdot += breaking
        minutes = list(_running_minutes(u))
        produced = PARTS_PER_MINUTE[u] * len(minutes)
        rejects = sum(1 for n in range(len(minutes)) if n % 40 == 7)
        scrapped = SCRAP[2] if SCRAP[0] == u else 0
        pbt = (shift_end - shift_start).total_seconds() - pdot
        availability = apt / pbt
        effectiveness = IDEAL_CYCLE_S[u] * produced / apt
        quality = (produced - rejects - scrapped) / produced
        truth[unit_id(u)] = {"availability": availability, "effectiveness": effectiveness,
                             "quality_ratio": quality, "oee": availability * effectiveness * quality,
                             "pq": produced, "gq": produced - rejects - scrapped}
    return truth


def bad_items() -> list[dict]:
    """What a misconfigured gateway might send: each is refused with the field and the rule."""
    return [
        {"type": "MachineStateChanged", "event_id": "bad-1", "occurred_at": _at(local("06:00")),
         "equipment_id": unit_id("press07"), "state": "SMOKING"},
        {"type": "PartsProduced", "event_id": "bad-2", "occurred_at": _at(local("06:00")),
         "equipment_id": "Line 1 / Press 7", "good": -3, "reject": 0},
    ]
