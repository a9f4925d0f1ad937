"""The demo's scenario: a deterministic, small, well-ordered shift whose ground truth obeys ISO 22400."""
from __future__ import annotations

from simulator import scenario


def test_the_scenario_is_deterministic_and_small():
    assert scenario.shift() == scenario.shift()
    events = scenario.shift()
    assert 1000 < len(events) < 3000
    assert len({e["event_id"] for e in events}) == len(events)


def test_master_data_comes_first_then_the_floor_by_event_time():
    events = scenario.shift()
    plan = scenario.plan()
    assert events[:len(plan)] == plan
    floor = [e["occurred_at"] for e in events[len(plan):]]
    assert floor == sorted(floor)


def test_every_unit_reports_a_state_after_the_shift_end_so_the_shift_closes():
    shift_end = scenario.local("14:00").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for unit in scenario.UNITS:
        states = [e for e in scenario.shift() if e["type"] == "MachineStateChanged"
                  and e["equipment_id"] == scenario.unit_id(unit)]
        assert states[-1]["occurred_at"] > shift_end


def test_the_ground_truth_has_ratios_in_range():
    for unit, truth in scenario.ground_truth().items():
        assert 0 < truth["availability"] <= 1, unit
        assert 0 < truth["effectiveness"] <= 1, unit
        assert 0 < truth["quality_ratio"] <= 1, unit
        assert abs(truth["oee"] - truth["availability"] * truth["effectiveness"] * truth["quality_ratio"]) < 1e-12


def test_the_bad_items_break_rules():
    assert [item["event_id"] for item in scenario.bad_items()] == ["bad-1", "bad-2"]
