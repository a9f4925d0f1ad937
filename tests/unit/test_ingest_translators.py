"""Ingest's pure translator: Given a client item, When it is translated, Then it is a record or errors."""
from __future__ import annotations

import io
from datetime import UTC, datetime

import fastavro
import pytest
from fastavro.schema import parse_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.catalogue import Catalogue
from services.ingest.translators import Accepted, Refused, Translator, parse_timestamp, to_micros

NOW = datetime(2026, 11, 2, 6, 0, 5, tzinfo=UTC)
PRESS = "acme.berlin.assembly.line1.press07"
LINE = "acme.berlin.assembly.line1"
CLIENT = "edge-berlin-01"

CATALOGUE = Catalogue.load()
INPUT_TYPES = [e for t in CATALOGUE.written_by("ingest") for e in t.events if e != "EventRejected"]
TRANSLATOR = Translator(CATALOGUE.schemas, INPUT_TYPES, max_future_s=300,
                        time_zones={"Europe/Berlin", "UTC", "America/Chicago"})


def envelope(event_type: str, event_id: str = "press07-000123", **body: object) -> dict:
    return {"type": event_type, "event_id": event_id, "occurred_at": "2026-11-02T06:00:00.000Z", **body}


VALID = {
    "EquipmentRegistered": envelope("EquipmentRegistered", equipment_id=PRESS, name="Press 07", parent_id=LINE,
                                    level="work_unit", time_zone="Europe/Berlin"),
    "ShiftScheduled": envelope("ShiftScheduled", shift_id="BER-2026-11-02-A", equipment_id=LINE,
                               starts_at="2026-11-02T06:00:00Z", ends_at="2026-11-02T14:00:00+00:00",
                               breaks=[{"starts_at": "2026-11-02T09:00:00Z", "ends_at": "2026-11-02T09:15:00Z"}]),
    "ProductDefined": envelope("ProductDefined", product_id="BRACKET-4711", name="Bracket", unit="pcs",
                               ideal_cycle_time_s=12.5,
                               bom=[{"material_id": "STEEL-S235", "quantity_per_unit": 0.42}],
                               routing=[{"operation": "0010", "equipment_id": PRESS, "ideal_cycle_time_s": 12}]),
    "ProductionOrderReleased": envelope("ProductionOrderReleased", order_id="WO-1042", product_id="BRACKET-4711",
                                        quantity=500, due_at="2026-11-05T14:00:00Z"),
    "InspectionPlanDefined": envelope("InspectionPlanDefined", plan_id="IP-BRACKET-4711-0010",
                                      product_id="BRACKET-4711", operation="0010",
                                      characteristics=[{"characteristic_id": "HOLE-DIA-1", "name": "Hole diameter 1",
                                                        "kind": "variable", "lsl": 9.95, "usl": 10.05, "target": 10.0,
                                                        "sigma": 0.01, "unit": "mm", "sample_size": 5,
                                                        "every_n_parts": 50}]),
    "MaintenancePlanDefined": envelope("MaintenancePlanDefined", plan_id="PM-PRESS07-OIL", equipment_id=PRESS,
                                       task="Change hydraulic oil", trigger={"kind": "runtime_hours", "hours": 500}),
    "MaterialLotReceived": envelope("MaterialLotReceived", lot_id="LOT-2026-0117", material_id="STEEL-S235",
                                    quantity=1200.0, unit="kg", location_id="WH1-A-03"),
    "MachineStateChanged": envelope("MachineStateChanged", equipment_id=PRESS, state="DOWN", reason_code="JAM"),
    "PartsProduced": envelope("PartsProduced", equipment_id=PRESS, good=12, reject=1, order_id="WO-1042"),
    "AlarmRaised": envelope("AlarmRaised", equipment_id=PRESS, alarm_code="HYD-LOW", severity="warning",
                            text="Hydraulic pressure low"),
    "AlarmCleared": envelope("AlarmCleared", equipment_id=PRESS, alarm_code="HYD-LOW"),
    "ProcessValueMeasured": envelope("ProcessValueMeasured", equipment_id=PRESS, parameter="hydraulic_pressure",
                                     value=182.4, unit="bar"),
    "OperationStarted": envelope("OperationStarted", order_id="WO-1042", operation="0010", equipment_id=PRESS,
                                 operator_id="OP-0231"),
    "OperationCompleted": envelope("OperationCompleted", order_id="WO-1042", operation="0010", equipment_id=PRESS),
    "OperatorSignedIn": envelope("OperatorSignedIn", operator_id="OP-0231", equipment_id=PRESS),
    "OperatorSignedOut": envelope("OperatorSignedOut", operator_id="OP-0231", equipment_id=PRESS),
    "DowntimeReasonAssigned": envelope("DowntimeReasonAssigned", equipment_id=PRESS, since="2026-11-02T05:42:10Z",
                                       reason_code="TOOL-CHANGE"),
    "ScrapReported": envelope("ScrapReported", equipment_id=PRESS, order_id="WO-1042", quantity=3,
                              reason_code="BURR", rework=True),
    "MaterialLoaded": envelope("MaterialLoaded", equipment_id=PRESS, order_id="WO-1042", lot_id="LOT-2026-0117",
                               quantity=250.0),
    "InspectionRecorded": envelope("InspectionRecorded", characteristic_id="HOLE-DIA-1",
                                   plan_id="IP-BRACKET-4711-0010", equipment_id=PRESS, order_id="WO-1042",
                                   lot_id="LOT-2026-0117", values=[10.01, 9.99, 10.0, 10.02, 9.98]),
    "MaintenanceWorkReported": envelope("MaintenanceWorkReported", work_order_id="MWO-0042", status="STARTED",
                                        technician_id="TECH-07"),
    "LotDispositioned": envelope("LotDispositioned", lot_id="LOT-2026-0117", disposition="RELEASE"),
    "MaterialMoved": envelope("MaterialMoved", lot_id="LOT-2026-0117", from_location="WH1-A-03",
                              to_location="LINE1-SUPPLY", quantity=250),
    "MaterialLost": envelope("MaterialLost", lot_id="LOT-2026-0117", quantity=2.5, kind="storage_and_transport",
                             location_id="WH1-A-03", reason_code="DAMAGED-IN-TRANSIT"),
}


def translate(item: object) -> Accepted | Refused:
    return TRANSLATOR.translate(0, item, now=NOW, client=CLIENT)


def refused(item: object) -> list[tuple[str, str]]:
    outcome = translate(item)
    assert isinstance(outcome, Refused), f"expected a refusal, got {outcome}"
    for error in outcome.errors:
        assert set(error) == {"field", "rule", "message"} and error["message"]
    return [(e["field"], e["rule"]) for e in outcome.errors]


def with_(event_type: str, **changes: object) -> dict:
    item = dict(VALID[event_type])
    for name, value in changes.items():
        if value is DROP:
            item.pop(name)
        else:
            item[name] = value
    return item


DROP = object()


# --------------------------------------------------------------------------------------------
# Valid events


def test_every_canonical_input_type_has_a_valid_example():
    assert sorted(VALID) == sorted(INPUT_TYPES)


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_valid_event_becomes_a_record_its_schema_can_write(event_type):
    # Given a valid item of the type, When it is translated
    outcome = translate(VALID[event_type])
    # Then it is accepted, stamped by ingest, and fastavro writes it with the type's schema
    assert isinstance(outcome, Accepted), outcome
    assert outcome.event_type == event_type and outcome.event_id == "press07-000123"
    record = outcome.record
    assert record["recorded_at"] == to_micros(NOW)  # item 0; item i is stamped i microseconds later
    assert record["occurred_at"] == to_micros(datetime(2026, 11, 2, 6, tzinfo=UTC))
    assert record["source"] == CLIENT and record["correlation_id"] is None
    schema = parse_schema(CATALOGUE.schemas[event_type], named_schemas={})
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    out.seek(0)
    read = fastavro.schemaless_reader(out, schema)
    assert read["event_id"] == "press07-000123"


def test_optional_fields_default_and_timestamps_become_micros():
    # Given a shift without breaks and a product without bom/routing
    shift = translate(with_("ShiftScheduled", breaks=DROP))
    product = translate(with_("ProductDefined", bom=DROP, routing=DROP, unit=DROP))
    # Then the defaults apply and timestamps are epoch microseconds
    assert shift.record["breaks"] == [] and product.record["bom"] == [] and product.record["unit"] is None
    assert shift.record["ends_at"] == to_micros(datetime(2026, 11, 2, 14, tzinfo=UTC))
    assert translate(with_("ScrapReported", rework=DROP)).record["rework"] is False


def test_client_may_set_source_and_correlation_id():
    outcome = translate(with_("MachineStateChanged", source="erp", correlation_id="SAP-TX-88121"))
    assert outcome.record["source"] == "erp" and outcome.record["correlation_id"] == "SAP-TX-88121"


def test_integral_float_is_accepted_for_a_long_and_int_for_a_double():
    outcome = translate(with_("PartsProduced", good=12.0))
    assert outcome.record["good"] == 12 and type(outcome.record["good"]) is int
    moved = translate(with_("MaterialMoved", quantity=250))
    assert moved.record["quantity"] == 250.0 and type(moved.record["quantity"]) is float


def test_fraction_of_a_timestamp_is_truncated_to_microseconds():
    assert parse_timestamp("2026-11-02T06:00:00.1234567Z") == to_micros(datetime(2026, 11, 2, 6, tzinfo=UTC)) + 123456
    assert parse_timestamp("2026-11-02T06:00:00.5+00:00") == to_micros(datetime(2026, 11, 2, 6, tzinfo=UTC)) + 500000


# --------------------------------------------------------------------------------------------
# Each rule, with its field path


def test_missing_required_field():
    assert refused(with_("MachineStateChanged", state=DROP)) == [("state", "required")]


def test_missing_envelope_fields():
    assert refused(with_("MachineStateChanged", event_id=DROP, occurred_at=DROP)) == [
        ("event_id", "required"), ("occurred_at", "required")]


def test_wrong_type():
    assert refused(with_("PartsProduced", good="12")) == [("good", "type")]


def test_boolean_is_not_a_number_and_number_not_a_boolean():
    assert refused(with_("PartsProduced", good=True)) == [("good", "type")]
    assert refused(with_("ProcessValueMeasured", value=False)) == [("value", "type")]
    assert refused(with_("ScrapReported", rework=1)) == [("rework", "type")]


def test_fractional_float_is_not_a_long():
    assert refused(with_("PartsProduced", reject=1.5)) == [("reject", "type")]


def test_long_out_of_64_bit_range():
    assert refused(with_("PartsProduced", good=2**63)) == [("good", "type")]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(value):
    assert refused(with_("ProcessValueMeasured", value=value)) == [("value", "type")]
    assert refused(with_("PartsProduced", good=value)) == [("good", "type")]


def test_null_only_for_optional_fields():
    assert refused(with_("MachineStateChanged", state=None)) == [("state", "type")]
    assert isinstance(translate(with_("MachineStateChanged", reason_code=None)), Accepted)


def test_value_not_allowed():
    assert refused(with_("MachineStateChanged", state="RUNNING_FAST")) == [("state", "allowed")]
    assert refused(with_("AlarmCleared", severity="fatal")) == [("severity", "allowed")]


@pytest.mark.parametrize("equipment_id", ["ACME.Berlin", "acme..press07", ".acme", "acme.berlin.", "", "acme/press07"])
def test_equipment_id_format(equipment_id):
    assert refused(with_("MachineStateChanged", equipment_id=equipment_id)) == [("equipment_id", "format")]


def test_time_zone_format():
    assert refused(with_("EquipmentRegistered", time_zone="Mars/Olympus_Mons")) == [("time_zone", "format")]
    assert refused(with_("EquipmentRegistered", time_zone="CET+1 ")) == [("time_zone", "format")]


def test_minimum():
    assert refused(with_("PartsProduced", good=-1)) == [("good", "minimum")]


def test_exclusive_minimum():
    assert refused(with_("MaterialLotReceived", quantity=0)) == [("quantity", "exclusiveMinimum")]
    assert refused(with_("ScrapReported", quantity=0)) == [("quantity", "exclusiveMinimum")]


def test_min_items():
    assert refused(with_("InspectionPlanDefined", characteristics=[])) == [("characteristics", "minItems")]
    assert refused(with_("InspectionRecorded", values=[])) == [("values", "minItems")]


def test_unknown_field():
    assert refused(with_("MachineStateChanged", speed=42)) == [("speed", "unknown_field")]


def test_recorded_at_is_set_by_ingest_only():
    assert refused(with_("MachineStateChanged", recorded_at="2026-11-02T06:00:00Z")) == [("recorded_at", "unknown_field")]


def test_unknown_field_in_a_nested_record():
    trigger = {"kind": "cycles", "cycles": 10000, "every": "day"}
    assert refused(with_("MaintenancePlanDefined", trigger=trigger)) == [("trigger.every", "unknown_field")]


@pytest.mark.parametrize("event_type", ["PressExploded", "EventRejected", "DowntimeStarted"])
def test_unknown_type(event_type):
    assert refused(envelope(event_type, equipment_id=PRESS)) == [("type", "unknown_type")]


def test_type_missing_or_not_a_string():
    assert refused({k: v for k, v in VALID["MachineStateChanged"].items() if k != "type"}) == [("type", "required")]
    assert refused(with_("MachineStateChanged", type=7)) == [("type", "type")]


def test_future_timestamp_beyond_the_allowed_skew():
    # Given NOW = 06:00:05 and a 300 s allowance, When an event claims 06:05:06
    assert refused(with_("MachineStateChanged", occurred_at="2026-11-02T06:05:06Z")) == [("occurred_at", "future_timestamp")]
    # Then one within the allowance is accepted
    assert isinstance(translate(with_("MachineStateChanged", occurred_at="2026-11-02T06:05:05Z")), Accepted)


def test_too_old():
    assert refused(with_("MachineStateChanged", occurred_at="1999-12-31T23:59:59Z")) == [("occurred_at", "too_old")]


@pytest.mark.parametrize("text", ["2026-11-02 06:00:00Z", "2026-11-02T06:00:00", "2026-11-02T07:00:00+01:00",
                                  "2026-02-30T06:00:00Z", "2026-11-02T24:00:00Z", "2026-11-02", "yesterday",
                                  "2026-11-02T06:00:60Z", "2026-11-02T06:00:00.Z"])
def test_bad_timestamp_string(text):
    assert refused(with_("MachineStateChanged", occurred_at=text)) == [("occurred_at", "format")]
    assert refused(with_("DowntimeReasonAssigned", since=text)) == [("since", "format")]


def test_timestamp_must_be_a_string():
    assert refused(with_("MachineStateChanged", occurred_at=1793599200000000)) == [("occurred_at", "type")]


def test_event_id_length():
    assert refused(with_("MachineStateChanged", event_id="")) == [("event_id", "minLength")]
    assert refused(with_("MachineStateChanged", event_id="x" * 201)) == [("event_id", "maxLength")]
    assert isinstance(translate(with_("MachineStateChanged", event_id="x" * 200)), Accepted)


def test_nested_path_in_a_list():
    bom = [{"material_id": "STEEL-S235", "quantity_per_unit": 0.42},
           {"material_id": "PAINT-RAL9005", "quantity_per_unit": 0.01},
           {"material_id": "SCREW-M6", "quantity_per_unit": -2}]
    assert refused(with_("ProductDefined", bom=bom)) == [("bom[2].quantity_per_unit", "exclusiveMinimum")]
    steps = [{"operation": "0010", "equipment_id": "Press 07", "ideal_cycle_time_s": 12}]
    assert refused(with_("ProductDefined", routing=steps)) == [("routing[0].equipment_id", "format")]
    breaks = [{"starts_at": "09:00", "ends_at": "2026-11-02T09:15:00Z"}]
    assert refused(with_("ShiftScheduled", breaks=breaks)) == [("breaks[0].starts_at", "format")]
    assert refused(with_("InspectionRecorded", values=[10.0, "n/a"])) == [("values[1]", "type")]
    assert refused(with_("ProductDefined", bom=["STEEL-S235"])) == [("bom[0]", "type")]


def test_several_errors_of_one_item_are_all_reported():
    # Given a machine report with four independent mistakes
    item = with_("PartsProduced", event_id=DROP, equipment_id="Press 07", good=-3, reject="none", shift="A")
    # Then each is reported, with its own field and rule
    assert refused(item) == [("event_id", "required"), ("equipment_id", "format"), ("good", "minimum"),
                             ("reject", "type"), ("shift", "unknown_field")]


def test_errors_of_envelope_are_reported_even_for_an_unknown_type():
    assert refused({"type": "PressExploded", "occurred_at": "soon"}) == [
        ("type", "unknown_type"), ("event_id", "required"), ("occurred_at", "format")]


@pytest.mark.parametrize("item", [[], "MachineStateChanged", 42, None, True])
def test_an_item_that_is_not_an_object(item):
    assert refused(item) == [("", "type")]


def test_refusal_keeps_the_claimed_type_and_event_id():
    outcome = translate(with_("MachineStateChanged", state="EXPLODED"))
    assert outcome.event_type == "MachineStateChanged" and outcome.event_id == "press07-000123"


# --------------------------------------------------------------------------------------------
# Properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(sorted({f["name"] for s in CATALOGUE.schemas.values() for f in s["fields"]} | {"type"}))


@st.composite
def items(draw):
    """Mostly near-valid events with arbitrary values in their fields, sometimes anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    item = dict(VALID[draw(st.sampled_from(sorted(VALID)))])
    for name, value in draw(st.dictionaries(field_names, json_values, max_size=4)).items():
        item[name] = value
    for name in draw(st.lists(st.sampled_from(sorted(item)), max_size=2)):
        item.pop(name, None)
    return item


@settings(max_examples=400, deadline=None)
@given(items())
def test_arbitrary_json_never_raises(item):
    outcome = translate(item)
    if isinstance(outcome, Refused):
        assert outcome.errors
        assert all(set(e) == {"field", "rule", "message"} for e in outcome.errors)
    else:
        schema = parse_schema(CATALOGUE.schemas[outcome.event_type], named_schemas={})
        fastavro.schemaless_writer(io.BytesIO(), schema, outcome.record)
