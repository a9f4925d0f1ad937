"""The simulation: deterministic per seed, well formed for ingest, every domain present."""
from __future__ import annotations

import time
from datetime import UTC, datetime

from services.common.catalogue import Catalogue
from services.ingest.translators import Refused, Translator
from simulator import engine, plant, send

PLANT = plant.load()
SMALL = plant.load(plant.PLANTS_DIR / "small.yaml")


def test_the_same_seed_gives_the_same_events_and_another_seed_other_ones():
    first, again, other = (engine.simulate(SMALL, seed=s) for s in (5, 5, 6))
    assert first.events == again.events and first.barriers == again.barriers
    assert first.events != other.events


def test_a_tag_namespaces_every_id_without_changing_the_timeline():
    plain, tagged = engine.simulate(SMALL, seed=5), engine.simulate(SMALL, seed=5, tag="ab12")
    assert [e["occurred_at"] for e in plain.events] == [e["occurred_at"] for e in tagged.events]
    assert all(e["equipment_id"].split(".")[0] == "smallab12" for e in tagged.events if "equipment_id" in e)
    assert all(e["order_id"].endswith("-AB12") for e in tagged.events if e.get("order_id"))


def test_every_event_is_valid_for_ingest_and_ids_are_unique():
    sim = engine.simulate(PLANT, seed=1, tag="x1")
    translator = Translator(Catalogue.load().schemas, sorted({e["type"] for e in sim.events}))
    refused = [o for o in translator.translate_all(sim.events, now=datetime.now(UTC), client="test")
               if isinstance(o, Refused)]
    assert refused == []
    assert len({e["event_id"] for e in sim.events}) == len(sim.events)


def test_every_domain_is_in_the_shift():
    counts = engine.simulate(PLANT, seed=1).counts()
    for event_type in ("MachineStateChanged", "PartsProduced", "ScrapReported", "AlarmRaised", "AlarmCleared",
                       "OperatorSignedIn", "OperatorSignedOut", "ProcessValueMeasured", "InspectionRecorded",
                       "InspectionPlanDefined", "MaterialLotReceived", "MaterialLoaded", "MaterialMoved", "MaterialLost",
                       "MaintenancePlanDefined", "MaintenanceWorkReported", "ProductionOrderReleased",
                       "OperationStarted", "OperationCompleted", "ShiftScheduled", "ProductDefined"):
        assert counts.get(event_type, 0) > 0, event_type


def test_master_data_comes_first_then_the_floor_by_event_time():
    sim = engine.simulate(SMALL, seed=2)
    first_floor = next(i for i, e in enumerate(sim.events) if e["event_id"] in sim.barriers)
    assert {e["type"] for e in sim.events[:first_floor]} <= {
        "EquipmentRegistered", "ShiftScheduled", "ProductDefined", "InspectionPlanDefined", "MaintenancePlanDefined",
        "ProductionOrderReleased", "MaterialLotReceived"}
    floor = [e["occurred_at"] for e in sim.events[first_floor:]]
    assert floor == sorted(floor)


def test_each_operation_is_sent_before_its_first_count_in_an_earlier_request():
    sim = engine.simulate(SMALL, seed=2)
    requests = send.requests(sim.events, 10_000, sim.barriers)
    request_of = {e["event_id"]: n for n, (_, chunk) in enumerate(requests) for e in chunk}
    for unit in sim.facts.states:
        events = [e for e in sim.events if e.get("equipment_id") == unit]
        for i, event in enumerate(events):
            if event["type"] == "OperationStarted":
                count = next(e for e in events[i:] if e["type"] == "PartsProduced")
                assert request_of[count["event_id"]] > request_of[event["event_id"]]


def test_failures_open_and_close_their_corrective_work_orders():
    sim = engine.simulate(PLANT, seed=3)
    reports = [e for e in sim.events if e["type"] == "MaintenanceWorkReported" and e["work_order_id"].startswith("CM-")]
    started = {e["work_order_id"] for e in reports if e["status"] == "STARTED"}
    completed = {e["work_order_id"] for e in reports if e["status"] == "COMPLETED"}
    assert started == completed and len(started) == sum(len(f) for f in sim.facts.failures.values()) > 0


def test_some_inspections_fall_outside_the_specification():
    sim = engine.simulate(PLANT, seed=1)
    assert 0 < sum(1 for i in sim.facts.inspections if i["outside"]) < len(sim.facts.inspections) / 4


def test_a_shift_of_a_twenty_machine_plant_generates_in_well_under_a_minute():
    twenty = plant.load(plant.PLANTS_DIR / "twenty.yaml")
    assert len(twenty.work_units) == 20
    started = time.monotonic()
    sim = engine.simulate(twenty, seed=1)
    assert time.monotonic() - started < 60
    assert all(sim.facts.production[unit] for unit in sim.facts.states)  # every unit produced
