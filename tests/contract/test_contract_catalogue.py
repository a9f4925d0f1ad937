"""The topic catalogue: one writer per topic, one topic per event type, keys that exist; broken catalogues fail loudly."""

import json
import re
from pathlib import Path

import pytest
import yaml

from services.common.catalogue import REPO_ROOT, Catalogue, CatalogueError

# The services of ARCHITECTURE.md §1; a topic written by anything else is a typo.
SERVICES = {"ingest", "execution", "quality", "maintenance", "inventory"}
CANONICAL_INPUT = {
    "plan": ["EquipmentRegistered", "ShiftScheduled", "ProductDefined", "ProductionOrderReleased",
             "InspectionPlanDefined", "MaintenancePlanDefined", "MaterialLotReceived"],
    "machine": ["MachineStateChanged", "PartsProduced", "AlarmRaised", "AlarmCleared", "ProcessValueMeasured"],
    "operator": ["OperationStarted", "OperationCompleted", "OperatorSignedIn", "OperatorSignedOut",
                 "DowntimeReasonAssigned", "ScrapReported", "MaterialLoaded", "InspectionRecorded",
                 "MaintenanceWorkReported", "LotDispositioned", "MaterialMoved"],
}


def _topics_yaml(schemas: Path) -> dict:
    return yaml.safe_load((schemas / "topics.yaml").read_text())


def _write_topics_yaml(schemas: Path, document: dict) -> None:
    (schemas / "topics.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def _topic_of(document: dict, event_type: str) -> str:
    return next(name for name, spec in document["topics"].items() if event_type in spec["events"])


def test_every_topic_has_exactly_one_writer_and_it_is_a_service(catalogue):
    for topic in catalogue.topics.values():
        assert isinstance(topic.writer, str) and topic.writer in SERVICES, topic.name


def test_every_event_type_is_on_exactly_one_topic(catalogue):
    seen = [event for topic in catalogue.topics.values() for event in topic.events]
    assert len(seen) == len(set(seen))
    assert set(seen) == set(catalogue.schemas)


def test_the_eight_topics_of_the_architecture_with_their_writers(catalogue):
    writers = {name: topic.writer for name, topic in catalogue.topics.items()}
    assert sorted(writers.values()) == sorted(
        ["ingest"] * 4 + ["execution", "quality", "maintenance", "inventory"]
    )
    for service in ("execution", "quality", "maintenance", "inventory"):
        (own,) = catalogue.written_by(service)
        assert own.name.split(".")[1] == service


def test_canonical_input_events_are_catalogued_under_their_context_and_written_by_ingest(catalogue):
    for context, event_types in CANONICAL_INPUT.items():
        for event_type in event_types:
            assert catalogue.schemas[event_type]["namespace"] == f"mom.{context}"
            assert catalogue.topic_for(event_type).writer == "ingest"
    assert catalogue.topic_for("EventRejected").key_field("EventRejected") == "source"
    assert catalogue.topic_for("DowntimeEnded").writer == "execution"


def test_key_fields_exist_and_are_required_strings(catalogue):
    for topic in catalogue.topics.values():
        for event_type in topic.events:
            key_field = topic.key_field(event_type)
            fields = {f["name"]: f for f in catalogue.schemas[event_type]["fields"]}
            assert fields[key_field]["type"] == "string", (event_type, key_field)
            assert "default" not in fields[key_field], (event_type, key_field)


def test_machine_events_are_keyed_by_equipment(catalogue):
    topic = catalogue.topic_for("MachineStateChanged")
    record = {"equipment_id": "acme.berlin.assembly.line1.press07", "state": "RUNNING"}
    assert catalogue.key_for("MachineStateChanged", record) == "acme.berlin.assembly.line1.press07"
    assert all(topic.key_field(e) == "equipment_id" for e in topic.events)


def test_plan_events_are_keyed_by_the_entity_they_define(catalogue):
    assert catalogue.key_for("ProductionOrderReleased", {"order_id": "WO-1042"}) == "WO-1042"
    assert catalogue.key_for("MaterialLotReceived", {"lot_id": "LOT-2026-0117"}) == "LOT-2026-0117"


def test_key_for_a_record_without_its_key_is_an_error(catalogue):
    with pytest.raises(CatalogueError, match="equipment_id"):
        catalogue.key_for("PartsProduced", {"good": 3})


def test_an_event_type_on_no_topic_is_an_error(catalogue):
    with pytest.raises(CatalogueError, match="on no topic"):
        catalogue.topic_for("TeleportationHappened")


def test_topic_configs_are_strings_and_keep_events_forever(catalogue):
    for topic in catalogue.topics.values():
        assert topic.config["retention.ms"] == "-1", topic.name
        assert all(isinstance(v, str) for v in topic.config.values())
        assert topic.partitions >= 1 and topic.replication_factor >= 1


def test_no_topic_name_literal_in_code_outside_the_catalogue(catalogue):
    pattern = re.compile("|".join(re.escape(name) for name in catalogue.topics))
    offenders = []
    for folder in ("services", "simulator"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "topic names belong in schemas/topics.yaml only:\n" + "\n".join(offenders)


# Broken catalogues: each is refused with an error that names the problem.

def test_a_topic_listing_an_unknown_event_type_is_refused(schemas_copy):
    document = _topics_yaml(schemas_copy)
    document["topics"][_topic_of(document, "PartsProduced")]["events"].append("PartsTeleported")
    _write_topics_yaml(schemas_copy, document)
    with pytest.raises(CatalogueError, match="unknown event type PartsTeleported"):
        Catalogue.load(schemas_copy)


def test_an_event_type_on_two_topics_is_refused(schemas_copy):
    document = _topics_yaml(schemas_copy)
    execution = _topic_of(document, "DowntimeStarted")
    document["topics"][execution]["events"].append("MachineStateChanged")
    document["topics"][execution]["key"]["MachineStateChanged"] = "equipment_id"
    _write_topics_yaml(schemas_copy, document)
    with pytest.raises(CatalogueError, match="MachineStateChanged is on two topics"):
        Catalogue.load(schemas_copy)


def test_a_missing_schema_is_refused(schemas_copy):
    (schemas_copy / "machine" / "AlarmCleared.avsc").unlink()
    with pytest.raises(CatalogueError, match="AlarmCleared"):
        Catalogue.load(schemas_copy)


def test_a_schema_on_no_topic_is_refused(schemas_copy):
    document = _topics_yaml(schemas_copy)
    document["topics"][_topic_of(document, "AlarmCleared")]["events"].remove("AlarmCleared")
    _write_topics_yaml(schemas_copy, document)
    with pytest.raises(CatalogueError, match="on no topic: AlarmCleared"):
        Catalogue.load(schemas_copy)


def test_a_key_field_the_event_does_not_have_is_refused(schemas_copy):
    document = _topics_yaml(schemas_copy)
    document["topics"][_topic_of(document, "PartsProduced")]["key"] = "order_id"
    _write_topics_yaml(schemas_copy, document)
    # order_id exists on PartsProduced but is optional; on MachineStateChanged it does not exist at all
    with pytest.raises(CatalogueError, match="key field"):
        Catalogue.load(schemas_copy)


def test_an_optional_key_field_is_refused(schemas_copy):
    document = _topics_yaml(schemas_copy)
    document["topics"][_topic_of(document, "InspectionRecorded")]["key"]["InspectionRecorded"] = "equipment_id"
    _write_topics_yaml(schemas_copy, document)
    with pytest.raises(CatalogueError, match="InspectionRecorded.equipment_id must be a required string"):
        Catalogue.load(schemas_copy)


def test_a_key_mapping_that_misses_an_event_type_is_refused(schemas_copy):
    document = _topics_yaml(schemas_copy)
    del document["topics"][_topic_of(document, "ShiftScheduled")]["key"]["ShiftScheduled"]
    _write_topics_yaml(schemas_copy, document)
    with pytest.raises(CatalogueError, match="missing \\['ShiftScheduled'\\]"):
        Catalogue.load(schemas_copy)


@pytest.mark.parametrize("attribute, value, message", [
    ("partitions", 0, "partitions must be a positive integer"),
    ("config", {"retention.ms": -1}, "config must map names to string values"),
    ("writer", "", "writer must be a non-empty string"),
])
def test_malformed_topic_attributes_are_refused(schemas_copy, attribute, value, message):
    document = _topics_yaml(schemas_copy)
    document["topics"][_topic_of(document, "PartsProduced")][attribute] = value
    _write_topics_yaml(schemas_copy, document)
    with pytest.raises(CatalogueError, match=message):
        Catalogue.load(schemas_copy)


def test_a_schema_whose_record_name_differs_from_its_file_is_refused(schemas_copy):
    path = schemas_copy / "machine" / "AlarmCleared.avsc"
    schema = json.loads(path.read_text())
    schema["name"] = "AlarmReset"
    path.write_text(json.dumps(schema))
    with pytest.raises(CatalogueError, match="differs from the file name"):
        Catalogue.load(schemas_copy)


def test_topics_yaml_that_is_not_yaml_is_refused(schemas_copy):
    (schemas_copy / "topics.yaml").write_text("topics: [unclosed\n")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        Catalogue.load(schemas_copy)


def test_released_snapshots_are_not_current_schemas(schemas_copy):
    # a snapshot of an event type removed since the release must not resurrect it
    (schemas_copy / "released" / "machine" / "AlarmRetired.avsc").write_text(json.dumps(
        {"type": "record", "name": "AlarmRetired", "namespace": "mom.machine", "doc": "x", "fields": []}
    ))
    assert "AlarmRetired" not in Catalogue.load(schemas_copy).schemas
