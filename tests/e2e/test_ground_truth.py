"""End to end: a simulated shift sent through ingest's HTTP API with every available service running;
then every time element and count per work unit and shift in kpi.oee equals the simulator's own
ground truth exactly (to the microsecond and the unit), and inventory's on-hand equals the
simulator's material balance.

The small plant (simulator/plants/small.yaml: two lines of two units, a two-hour shift with a
break, failures, minor stops, blocked and starved spells, a unit running through its break, a
preventive maintenance under a lockout, scrap and rework reports, a two-level BOM with backflush and
a kitted order) keeps the run short. Ids carry a fresh tag, as the topics keep earlier tests' events.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from services.cli import available_services, prepare
from services.common import localstack
from simulator import engine, plant, send, truth
from simulator.progress import wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
SMALL = Path(plant.PLANTS_DIR) / "small.yaml"
SERVICES = available_services()
PROJECTING = tuple(s for s in SERVICES if s != "ingest")
ELEMENTS = ("pot", "pdot", "pbt", "apt", "asut", "adet", "adot", "aupt", "aubt", "aoet", "apat", "apwt",
            "out_of_shift", "data_gap", "ideal")


@pytest.fixture(scope="module")
def running(stack: localstack.StackConfig) -> Iterator[dict]:
    status = localstack.up(stack, services=SERVICES, after_infra=prepare)
    yield status
    localstack.stop_services(stack, PROJECTING)


@pytest.fixture(scope="module")
def shift(running: dict) -> dict:
    """Given the small plant's shift, simulated with a fresh tag and sent through ingest; when every
    running service has caught up."""
    sim = engine.simulate(plant.load(SMALL), seed=11, tag=uuid.uuid4().hex[:8])
    sent = send.to_ingest(sim.events, running["ingest"]["url"], running["ingest"]["token"], batch=500,
                          barriers=sim.barriers,
                          barrier=lambda: wait_caught_up(running, PROJECTING, quiet_polls=1, interval_s=0.05))
    assert sent.refused == 0, sent.refusals[:5]
    wait_caught_up(running, PROJECTING)
    return {"status": running, "sim": sim}


def shift_rows(status: dict, sim: engine.Simulation) -> dict[tuple[str, str], dict]:
    columns = ", ".join(f"{e}_s" for e in ELEMENTS)
    with psycopg.connect(status["database"]["analyst_url"], autocommit=True) as conn:
        rows = conn.execute(f"""SELECT equipment_id, shift_id, version, {columns}, pq, gq, sq, rq, unrated
                                FROM kpi.oee WHERE period = 'shift' AND equipment_id = ANY(%s)""",
                            (sorted(sim.facts.states),)).fetchall()
    names = ["version", *ELEMENTS, "pq", "gq", "sq", "rq", "unrated"]
    return {(r[0], r[1]): dict(zip(names, r[2:], strict=True)) for r in rows}


def mismatches(status: dict, sim: engine.Simulation) -> list[str]:
    """Every difference between kpi.oee and the ground truth, per unit and shift."""
    expected = {(e.equipment_id, e.label): e for e in truth.shift_truth(sim)}
    rows = shift_rows(status, sim)
    if set(rows) != set(expected):
        return [f"rows for {sorted(rows)}, expected {sorted(expected)}"]
    found = []
    for key, got in rows.items():
        want = expected[key]
        if got["version"] < 1 or got["unrated"]:
            found.append(f"{key}: version {got['version']}, unrated {got['unrated']}")
        for element in ELEMENTS:
            if micros(got[element]) != getattr(want, element):
                found.append(f"{key[0]} {element}: kpi.oee {got[element]} s, truth "
                             f"{Decimal(getattr(want, element)) / 1_000_000} s")
        for quantity in ("pq", "gq", "sq", "rq"):
            if got[quantity] != getattr(want, quantity):
                found.append(f"{key[0]} {quantity}: kpi.oee {got[quantity]}, truth {getattr(want, quantity)}")
    return found


def micros(seconds: Decimal) -> int:
    value = seconds * 1_000_000
    assert value == value.to_integral_value(), seconds
    return int(value)


def test_every_time_element_and_count_per_unit_and_shift_equals_the_ground_truth(shift):
    found = mismatches(shift["status"], shift["sim"])
    assert not found, "\n".join(found)


def test_the_shift_exercised_every_element(shift):
    elements = truth.shift_truth(shift["sim"])
    for name in ("pdot", "apt", "asut", "adet", "aoet", "apat", "pq", "sq", "rq"):
        assert sum(getattr(e, name) for e in elements) > 0, name
    assert shift["sim"].facts.lockouts, "no maintenance lockout in the shift"


def test_on_hand_equals_the_simulated_material_balance(shift):
    sim = shift["sim"]
    suffix = f"%-{sim.tag.upper()}"
    with psycopg.connect(shift["status"]["database"]["analyst_url"], autocommit=True) as conn:
        rows = conn.execute("SELECT material_id, location_id, quantity FROM inventory.on_hand WHERE material_id LIKE %s",
                            (suffix,)).fetchall()
    on_hand = {(m, loc): float(q) for m, loc, q in rows if abs(float(q)) > 1e-6}
    expected = truth.material_balance(sim)
    assert set(on_hand) == set(expected)
    for key, quantity in expected.items():
        assert on_hand[key] == pytest.approx(quantity, abs=1e-6), key


def test_the_same_shift_straight_to_kafka_gives_the_same_exact_figures(running):
    """The load-test path: canonical events produced with the project codec, no HTTP."""
    sim = engine.simulate(plant.load(SMALL), seed=12, tag=uuid.uuid4().hex[:8])
    sent = send.to_kafka(sim.events, running["kafka"]["bootstrap"], running["registry"]["url"] or "",
                         barriers=sim.barriers,
                         barrier=lambda: wait_caught_up(running, PROJECTING, quiet_polls=1, interval_s=0.05))
    assert (sent.accepted, sent.refused) == (len(sim.events), 0)
    wait_caught_up(running, PROJECTING)
    found = mismatches(running, sim)
    assert not found, "\n".join(found)
