"""MaterialLost is a canonical input ingest accepts (schema-driven), and inventory's settings parse."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.catalogue import Catalogue
from services.common.settings import SettingsError
from services.ingest.translators import Accepted, Refused, Translator
from services.inventory.app import build
from services.inventory.events import CONSUMED, EMITTED
from services.inventory.settings import InventorySettings, parse_reorder_points

CATALOGUE = Catalogue.load()
INPUT_TYPES = [e for t in CATALOGUE.written_by("ingest") for e in t.events if e != "EventRejected"]
TRANSLATOR = Translator(CATALOGUE.schemas, INPUT_TYPES, max_future_s=300, time_zones={"UTC"})
NOW = datetime(2026, 11, 2, 6, 0, 5, tzinfo=UTC)


def lost(**changes) -> dict:
    return {"type": "MaterialLost", "event_id": "wh1-loss-0042", "occurred_at": "2026-11-02T06:00:00Z",
            "lot_id": "LOT-2026-0117", "quantity": 2.5, "kind": "storage_and_transport", **changes}


def test_ingest_accepts_a_material_loss_onto_the_operator_topic_keyed_by_lot():
    outcome = TRANSLATOR.translate(0, lost(), now=NOW, client="wh-terminal-3")
    assert isinstance(outcome, Accepted), outcome
    assert outcome.record["location_id"] is None and outcome.record["reason_code"] is None
    assert CATALOGUE.topic_for("MaterialLost").name == CATALOGUE.topic_for("MaterialMoved").name
    assert CATALOGUE.key_for("MaterialLost", outcome.record) == "LOT-2026-0117"


@pytest.mark.parametrize("changes, field, rule", [
    ({"kind": "theft"}, "kind", "allowed"),
    ({"quantity": 0}, "quantity", "exclusiveMinimum"),
    ({"equipment_id": "Not An Id"}, "equipment_id", "format"),
])
def test_ingest_refuses_a_bad_material_loss_naming_the_field(changes, field, rule):
    outcome = TRANSLATOR.translate(0, lost(**changes), now=NOW, client="wh-terminal-3")
    assert isinstance(outcome, Refused)
    assert (field, rule) in [(e["field"], e["rule"]) for e in outcome.errors]


def test_every_inventory_event_type_has_a_schema_and_emitted_ones_are_on_inventorys_topic():
    for cls in EMITTED:
        assert CATALOGUE.topic_for(cls.__name__).writer == "inventory"
    schema_fields = {f["name"] for f in CATALOGUE.schemas["MaterialTransactionRefused"]["fields"]}
    assert schema_fields >= {"subject_id", "attempted", "reason", "caused_by"}
    for cls in CONSUMED:
        if cls.__name__ in CATALOGUE.event_types:  # quality's types once published
            fields = {f["name"] for f in CATALOGUE.schemas[cls.__name__]["fields"]}
            assert set(cls.__dataclass_fields__) <= fields | {"correlation_id"}, cls.__name__


def test_the_service_reads_plan_operator_execution_and_quality_topics():
    from services.common.settings import KafkaSettings, Settings
    spec = build(Settings(service="inventory", kafka=KafkaSettings(bootstrap="x"), database_url="", registry_url=""),
                 CATALOGUE, InventorySettings())
    assert set(spec.input_topics) >= {CATALOGUE.topic_for(t).name
                                      for t in ("MaterialLotReceived", "MaterialMoved", "ProductionReported")}


def test_reorder_points_parse_from_the_environment():
    assert dict(parse_reorder_points("STEEL-S235=100, PAINT-RAL9005=20.5,")) == {"STEEL-S235": 100.0,
                                                                                 "PAINT-RAL9005": 20.5}
    assert dict(InventorySettings.from_env({}).reorder_points) == {}
    assert dict(InventorySettings.from_env({"MOM_INVENTORY_REORDER_POINTS": "A=1"}).reorder_points) == {"A": 1.0}


@pytest.mark.parametrize("text", ["STEEL", "=5", "STEEL=-1", "STEEL=lots"])
def test_bad_reorder_points_are_refused_naming_the_variable(text):
    with pytest.raises(SettingsError, match="MOM_INVENTORY_REORDER_POINTS"):
        parse_reorder_points(text)
