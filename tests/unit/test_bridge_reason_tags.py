"""Reason tags (a state change's reason code read from its own tag), readings without a value, and the
OPC UA data change trigger of the mapping file."""
from __future__ import annotations

import pytest

from services.ingest.bridge_config import ConfigError, parse
from services.ingest.bridge_mapping import Mapper, Reading

PRESS = "acme.berlin.assembly.line1.press07"
T0 = 1_793_000_000_000
CONFIG = {"tags": {"State": {"kind": "state"}, "StateReason": {"kind": "reason"}, "GoodCount": {"kind": "counter"},
                   "Temp": {"kind": "analog"}},
          "equipment": [{"id": PRESS}]}


def read(mapper: Mapper, tag: str, value, at_ms: int) -> list[dict]:
    return mapper.map(Reading("sparkplug", PRESS, tag, value, T0 + at_ms))


def test_a_reason_of_the_same_instant_becomes_the_state_changes_reason_code():
    mapper = Mapper(parse(CONFIG))
    # Given the press stops with a reason, read before the state of the same instant
    assert read(mapper, "StateReason", "E-HYD-12", 1000) == []
    [down] = read(mapper, "State", "DOWN", 1000)
    # When it runs again with an empty reason, and later stops with no reason read at that instant
    read(mapper, "StateReason", "", 5000)
    [running] = read(mapper, "State", "RUNNING", 5000)
    [idle] = read(mapper, "State", "IDLE", 9000)
    # Then only the stop of the reason's instant carries it
    assert down["reason_code"] == "E-HYD-12"
    assert "reason_code" not in running and "reason_code" not in idle


def test_a_reason_read_before_a_restart_still_belongs_to_its_instant():
    mapper = Mapper(parse(CONFIG))
    read(mapper, "StateReason", "JAM", 2000)
    restored = Mapper(parse(CONFIG))
    restored.restore(mapper.state())
    [down] = read(restored, "State", "DOWN", 2000)
    assert down["reason_code"] == "JAM"


@pytest.mark.parametrize("tag", ["State", "StateReason", "GoodCount", "Temp"])
def test_a_reading_without_a_value_makes_nothing(tag):
    mapper = Mapper(parse(CONFIG))
    assert read(mapper, tag, None, 0) == []
    assert mapper.state() == {}


def test_the_data_change_trigger_is_one_of_opc_uas():
    assert parse(CONFIG).opcua_data_change_trigger == "StatusValue"
    assert parse({**CONFIG, "opcua": {"data_change_trigger": "StatusValueTimestamp"}}).opcua_data_change_trigger \
        == "StatusValueTimestamp"
    with pytest.raises(ConfigError, match="opcua.data_change_trigger: must be one of StatusValue, StatusValueTimestamp, "
                                          "got 'Timestamp'"):
        parse({**CONFIG, "opcua": {"data_change_trigger": "Timestamp"}})


def test_a_reason_rule_takes_no_other_field():
    with pytest.raises(ConfigError, match=r"tags.StateReason.states: unknown field \(known: kind\)"):
        parse({**CONFIG, "tags": {"StateReason": {"kind": "reason", "states": {}}}})
