"""The bridges' configuration (errors naming their field) and the mapping of tag readings to events."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.bridge_config import ConfigError, parse
from services.ingest.bridge_mapping import Mapper, Reading, counter_delta, event_id, rfc3339_ms
from services.ingest.translators import Accepted, Refused, Translator

PRESS = "acme.berlin.assembly.line1.press07"
CONFIG = {
    "source": "berlin-gateway",
    "mqtt": {"json_topics": ["acme/#"], "sparkplug_groups": ["acme"]},
    "tags": {
        "state": {"kind": "state", "states": {1: "RUNNING", 2: "IDLE", 3: "DOWN"}},
        "good": {"kind": "counter", "field": "good", "rollover": 65536},
        "reject": {"kind": "counter", "field": "reject"},
        "temperature": {"kind": "analog", "parameter": "temperature", "unit": "degC"},
    },
    "equipment": [{"id": PRESS, "sparkplug": {"group": "acme", "node": "line1", "device": "press07"},
                   "opcua_nodes": {"good": "ns=2;s=press07.GoodCount"},
                   "tags": {"Oil": {"kind": "analog", "parameter": "oil_pressure", "unit": "bar"}}}],
}
T0 = 1_793_000_000_000  # 2026-10-27


def _mapper(**overrides):
    return Mapper(parse({**CONFIG, **overrides}))


def _reading(tag, value, offset_ms=0, **kw):
    return Reading("mqtt", PRESS, tag, value, T0 + offset_ms, **kw)


def test_config_defaults_and_lookups():
    config = parse(CONFIG)
    assert config.source == "berlin-gateway" and config.qos == 1
    unit = config.equipment[0]
    assert unit.mqtt_topic == "acme/berlin/assembly/line1/press07"
    assert config.by_sparkplug()[("acme", "line1", "press07")] is unit
    assert config.rule(unit, "Oil").parameter == "oil_pressure"
    assert config.rule(None, "Oil") is None and config.rule(None, "good").rollover == 65536


def test_config_errors_name_every_bad_field():
    bad = {
        "mqtt": {"qos": 3, "colour": "red"},
        "tags": {"state": {"kind": "state", "states": {"1": "RUNNING", "9": "EXPLODED"}},
                 "good": {"kind": "counter", "field": "scrap"},
                 "x": {"kind": "gauge"}},
        "equipment": [{"id": "Press 07"}, {"sparkplug": {"group": "acme"}},
                      {"id": "a.b", "opcua_nodes": {"nope": "ns=2;s=x"}}],
    }
    with pytest.raises(ConfigError) as caught:
        parse(bad, "plant.yaml")
    errors = caught.value.errors
    text = str(caught.value)
    assert text.startswith("plant.yaml: ")
    for fragment in ("mqtt.qos: must be 0, 1 or 2", "mqtt.colour: unknown field",
                     "tags.state.states.9: must be one of RUNNING", "tags.good.field: must be one of good, reject",
                     "tags.x.kind: must be one of state, counter, analog", "equipment[0].id: must be a dotted",
                     "equipment[1].id: is required", "equipment[1].sparkplug.node: is required",
                     "equipment[2].opcua_nodes.nope: has no rule"):
        assert any(fragment in e for e in errors), (fragment, errors)


def test_state_tags_map_values_and_emit_only_changes():
    mapper = _mapper()
    first = mapper.map(_reading("state", 1))
    assert first == [{"type": "MachineStateChanged", "event_id": f"mqtt:{PRESS}:state:{T0}:RUNNING",
                      "occurred_at": rfc3339_ms(T0), "source": "berlin-gateway", "equipment_id": PRESS,
                      "state": "RUNNING"}]
    assert mapper.map(_reading("state", 1.0, 10)) == []          # same state
    down = mapper.map(_reading("state", "down", 20, reason_code="E-HYD-12"))
    assert down[0]["state"] == "DOWN" and down[0]["reason_code"] == "E-HYD-12"
    assert mapper.map(_reading("unmapped", 5)) == []


def test_counters_become_deltas_with_resets_and_rollover():
    mapper = _mapper()
    assert mapper.map(_reading("good", 100)) == []                     # the baseline
    assert mapper.map(_reading("good", 100, 1)) == []                  # nothing counted
    e = mapper.map(_reading("good", 112, 2))[0]
    assert (e["type"], e["good"], e["reject"], e["event_id"]) == ("PartsProduced", 12, 0, f"mqtt:{PRESS}:good:{T0 + 2}:112")
    assert mapper.map(_reading("good", 7, 3))[0]["good"] == 7          # reset to 0, counted 7
    mapper.map(_reading("good", 65530, 4))
    assert mapper.map(_reading("good", 4, 5))[0]["good"] == 10         # wrapped at 65536
    mapper.map(_reading("reject", 0, 6))
    r = mapper.map(_reading("reject", 2, 7))[0]
    assert (r["good"], r["reject"]) == (0, 2)


def test_counter_memory_survives_a_restart():
    mapper = _mapper()
    mapper.map(_reading("good", 40))
    restarted = _mapper()
    restarted.restore(mapper.state())
    assert restarted.map(_reading("good", 45, 1))[0]["good"] == 5


def test_redelivery_gives_the_same_ids():
    one, two = _mapper(), _mapper()
    readings = [_reading("good", 1), _reading("good", 5, 1), _reading("temperature", 71.5, 2), _reading("state", 2, 3)]
    assert [e for r in readings for e in one.map(r)] == [e for r in readings for e in two.map(r)]


def test_analog_and_offline():
    mapper = _mapper()
    analog = mapper.map(_reading("temperature", 71.5))[0]
    assert (analog["type"], analog["parameter"], analog["value"], analog["unit"]) == (
        "ProcessValueMeasured", "temperature", 71.5, "degC")
    offline = mapper.offline("sparkplug", PRESS, T0, "ndeath-bd3", "NDEATH")
    assert offline["state"] == "OFFLINE" and offline["event_id"] == f"sparkplug:{PRESS}:offline:ndeath-bd3"
    assert mapper.map(_reading("state", 1, 5))[0]["state"] == "RUNNING"  # back from OFFLINE


def test_events_pass_ingest_validation_and_bad_values_are_refused_by_it():
    schemas = __import__("services.common.catalogue", fromlist=["Catalogue"]).Catalogue.load().schemas
    translator = Translator(schemas, ["MachineStateChanged", "PartsProduced", "ProcessValueMeasured"])
    mapper = _mapper()
    now = datetime.fromtimestamp(T0 / 1000 + 1, UTC)
    good = [*mapper.map(_reading("state", 3)), *mapper.map(_reading("good", 0)), *mapper.map(_reading("good", 3, 1)),
            *mapper.map(_reading("temperature", 20, 2))]
    assert all(isinstance(o, Accepted) for o in translator.translate_all(good, now=now, client="bridge"))
    bad = [*mapper.map(_reading("state", 42, 3)), *mapper.map(_reading("temperature", "hot", 4)),
           *mapper.map(_reading("reject", "many", 5))]
    outcomes = translator.translate_all(bad, now=now, client="bridge")
    assert all(isinstance(o, Refused) for o in outcomes)
    assert outcomes[0].errors[0]["field"] == "state"


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_counter_delta_is_never_negative(last, value):
    delta = counter_delta(last, value, None)
    assert delta >= 0 and (delta == value - last if value >= last else delta == value)


def test_long_ids_are_hashed_to_fit():
    the_id = event_id("opcua", "x" * 300, "tag", 1)
    assert len(the_id) <= 200 and the_id.startswith("opcua:") and the_id == event_id("opcua", "x" * 300, "tag", 1)
