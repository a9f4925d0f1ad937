"""The ground truth: ISO 22400 invariants hold exactly, and the rules of the project are applied."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import engine, plant, truth

SMALL = plant.load(plant.PLANTS_DIR / "small.yaml")
H = 3_600_000_000
MIN = 60_000_000


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10_000))
def test_elements_add_up_to_the_planned_operation_time_for_any_seed(seed):
    sim = engine.simulate(SMALL, seed=seed)
    for e in truth.shift_truth(sim) + truth.hour_truth(sim):
        assert e.pbt == e.apt + e.asut + e.adet + e.adot
        assert e.pot == e.pbt + e.pdot
        assert e.aupt == e.apt + e.asut
        assert e.aubt <= min(e.aoet, e.pbt)
        assert e.pq >= 0 and e.sq >= 0 and e.rq >= 0


def test_the_hours_of_a_shift_sum_to_the_shift():
    sim = engine.simulate(SMALL, seed=4)
    shifts = {e.equipment_id: e for e in truth.shift_truth(sim)}
    for unit, shift in shifts.items():
        hours = [e for e in truth.hour_truth(sim) if e.equipment_id == unit]
        for name in ("pot", "pdot", "apt", "asut", "adet", "adot", "ideal", "pq", "gq", "sq", "rq"):
            assert sum(getattr(h, name) for h in hours) == getattr(shift, name), (unit, name)


def facts_with(states, *, lockouts=(), breaks=((2 * H, 2 * H + 10 * MIN),)) -> engine.Facts:
    facts = engine.Facts(time_zone="UTC")
    facts.shifts = [("S", 0, 4 * H, tuple(breaks))]
    facts.states["u"] = list(states) + [(5 * H, "OFFLINE", None)]
    facts.lockouts["u"] = list(lockouts)
    return facts


def test_running_through_a_break_is_production_time_and_a_stopped_break_is_planned_down_time():
    running = truth.unit_elements(facts_with([(0, "RUNNING", None)]), "u", "shift", 0, 4 * H, "S")
    stopped = truth.unit_elements(facts_with([(0, "RUNNING", None), (2 * H, "DOWN", "E"), (2 * H + 10 * MIN, "RUNNING", None)]),
                                  "u", "shift", 0, 4 * H, "S")
    assert (running.apt, running.pdot) == (4 * H, 0)
    assert (stopped.apt, stopped.pdot, stopped.adet) == (4 * H - 10 * MIN, 10 * MIN, 0)


def test_a_lockout_is_planned_down_time_whatever_the_state_and_unknown_time_is_a_delay():
    facts = facts_with([(H, "RUNNING", None)], lockouts=[(3 * H, 3 * H + 30 * MIN)], breaks=())
    e = truth.unit_elements(facts, "u", "shift", 0, 4 * H, "S")
    assert e.adet == H and e.data_gap == H  # before the first state: OFFLINE
    assert e.pdot == 30 * MIN and e.apt == 3 * H - 30 * MIN


def test_the_ideal_time_rounds_per_report_half_to_even():
    assert truth.ideal_micros(0.1, 3) == 300_000
    assert truth.ideal_micros(0.0000025, 1) == 2  # 2.5 microseconds: half to even
    assert truth.ideal_micros(5.5, 7) == 38_500_000


def test_the_material_balance_never_goes_negative_and_books_the_loss():
    sim = engine.simulate(SMALL, seed=8)
    balance = truth.material_balance(sim)
    assert all(quantity > 0 for quantity in balance.values())
    assert any(e["type"] == "MaterialLost" for e in sim.events)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_line_oee_comes_from_summed_elements(seed):
    sim = engine.simulate(SMALL, seed=seed)
    shifts = truth.shift_truth(sim)
    for line, oee in truth.line_oee(sim, shifts).items():
        units = [e for e in shifts if e.equipment_id in sim.facts.lines[line]]
        apt, pbt = sum(e.apt for e in units), sum(e.pbt for e in units)
        ideal, gq, pq = sum(e.ideal for e in units), sum(e.gq for e in units), sum(e.pq for e in units)
        assert oee == Fraction(apt, pbt) * Fraction(ideal, apt) * Fraction(gq, pq)
        assert 0 < oee < 1
