"""Compatibility with the last release, both directions; and proof that the check can fail."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from services.common import compat
from services.common.catalogue import Catalogue

ENVELOPE = Catalogue.load().envelope["fields"]


def _event(*body: dict) -> dict:
    return {"type": "record", "name": "PartsProduced", "namespace": "mom.machine", "doc": "test",
            "fields": copy.deepcopy(ENVELOPE) + list(body)}


EQUIPMENT = {"name": "equipment_id", "type": "string", "doc": "work unit"}
GOOD = {"name": "good", "type": "long", "doc": "good parts"}
ORDER = {"name": "order_id", "type": ["null", "string"], "default": None, "doc": "order"}
SHIFT = {"name": "shift_id", "type": "string", "doc": "shift"}


def _directions(current: dict, released: dict) -> set[str]:
    return {problem.direction for problem in compat.check_pair(current, released)}


def test_current_schemas_are_compatible_with_the_released_snapshot():
    problems = compat.check()
    assert not problems, "\n".join(map(str, problems))


def test_every_released_event_type_is_still_catalogued():
    released = {p.stem for p in (compat.DEFAULT_SCHEMAS_DIR / "released").glob("*/*.avsc")}
    assert released - {"Envelope"} <= set(Catalogue.load().schemas)


def test_adding_an_optional_field_is_compatible_both_ways():
    assert compat.check_pair(_event(EQUIPMENT, GOOD, ORDER), _event(EQUIPMENT, GOOD)) == []


def test_a_removed_field_without_default_breaks_old_readers():
    # the old reader needs `good`, the new writer no longer writes it
    assert _directions(_event(EQUIPMENT), _event(EQUIPMENT, GOOD)) == {compat.FORWARD}


def test_a_type_change_from_long_to_string_breaks_both_directions():
    as_string = dict(GOOD, type="string")
    assert _directions(_event(EQUIPMENT, as_string), _event(EQUIPMENT, GOOD)) == {compat.BACKWARD, compat.FORWARD}


def test_a_new_required_field_without_default_breaks_new_readers():
    # the new reader needs `shift_id`, old data has none and there is no default to fill in
    assert _directions(_event(EQUIPMENT, GOOD, SHIFT), _event(EQUIPMENT, GOOD)) == {compat.BACKWARD}


def test_making_a_required_field_optional_breaks_old_readers():
    optional_good = dict(GOOD, type=["null", "long"], default=None)
    assert _directions(_event(EQUIPMENT, optional_good), _event(EQUIPMENT, GOOD)) == {compat.FORWARD}


def test_removing_an_allowed_value_is_refused():
    state = {"name": "state", "type": "string", "doc": "state", "allowed": ["RUNNING", "DOWN"]}
    narrowed = dict(state, allowed=["RUNNING"])
    (problem,) = compat.check_pair(_event(EQUIPMENT, narrowed), _event(EQUIPMENT, state))
    assert problem.direction == "allowed" and "DOWN" in problem.detail
    assert compat.check_pair(_event(EQUIPMENT, state), _event(EQUIPMENT, narrowed)) == []


def _edit(schemas: Path, relative: str, change) -> None:
    path = schemas / relative
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def test_the_command_names_each_incompatible_event_type_and_direction(schemas_copy, capsys):
    _edit(schemas_copy, "machine/PartsProduced.avsc",
          lambda s: next(f for f in s["fields"] if f["name"] == "good").update(type="string"))
    _edit(schemas_copy, "operator/ScrapReported.avsc",
          lambda s: s["fields"].append({"name": "shift_id", "type": "string", "doc": "x"}))
    assert compat.main(["--schemas", str(schemas_copy)]) == 1
    err = capsys.readouterr().err
    assert "PartsProduced: backward" in err and "PartsProduced: forward" in err
    assert "ScrapReported: backward" in err and "ScrapReported: forward" not in err
    assert "2 incompatible event type(s): PartsProduced, ScrapReported" in err


def test_a_removed_event_type_is_incompatible(schemas_copy):
    (schemas_copy / "machine" / "AlarmCleared.avsc").unlink()
    topics = schemas_copy / "topics.yaml"
    topics.write_text(topics.read_text().replace(", AlarmCleared,", ","))
    assert [(p.event_type, p.direction) for p in compat.check(schemas_copy)] == [("AlarmCleared", "removed")]


def test_a_new_event_type_without_a_release_is_fine_and_release_snapshots_it(schemas_copy):
    new = {"type": "record", "name": "DowntimeRevised", "namespace": "mom.execution", "doc": "test",
           "fields": copy.deepcopy(ENVELOPE) + [EQUIPMENT]}
    (schemas_copy / "execution" / "DowntimeRevised.avsc").write_text(json.dumps(new))
    topics = schemas_copy / "topics.yaml"
    catalogue = yaml.safe_load(topics.read_text())
    execution = next(t for t in catalogue["topics"].values() if "DowntimeStarted" in t["events"])
    execution["events"].append("DowntimeRevised")
    execution["key"]["DowntimeRevised"] = "equipment_id"
    topics.write_text(yaml.safe_dump(catalogue))
    assert compat.check(schemas_copy) == []
    assert compat.main(["--schemas", str(schemas_copy), "--release"]) == 0
    assert (schemas_copy / "released" / "execution" / "DowntimeRevised.avsc").exists()
    assert (schemas_copy / "released" / "README.md").exists()


def test_release_refuses_an_incompatible_change_unless_told(schemas_copy):
    _edit(schemas_copy, "machine/PartsProduced.avsc",
          lambda s: next(f for f in s["fields"] if f["name"] == "good").update(type="string"))
    assert compat.main(["--schemas", str(schemas_copy), "--release"]) == 1
    assert compat.main(["--schemas", str(schemas_copy), "--release", "--allow-incompatible"]) == 0
    assert compat.check(schemas_copy) == []


@pytest.mark.parametrize("relative", ["machine/PartsProduced.avsc", "common/Envelope.avsc"])
def test_the_released_snapshot_is_a_verbatim_copy(relative):
    root = compat.DEFAULT_SCHEMAS_DIR
    assert json.loads((root / "released" / relative).read_text()) == json.loads((root / relative).read_text())
