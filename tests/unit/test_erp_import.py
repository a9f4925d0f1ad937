"""ERP import parsers (CSV and B2MML): events, line numbers of refused rows, deterministic ids, and that
what they produce passes ingest's validation."""
from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.common.catalogue import Catalogue
from services.ingest.bridge_sink import SinkResult
from services.ingest.erp import b2mml, csv_import
from services.ingest.erp.importer import parse_files, run
from services.ingest.translators import Accepted, Translator

NOW = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "erp"
PLAN = ["ProductionOrderReleased", "ProductDefined", "MaterialLotReceived"]


def _types(result):
    return [(row.item["type"], row.line) for row in result.rows]


def test_csv_orders_and_lots_with_bad_rows_by_line():
    result = csv_import.parse([
        ("orders.csv", "order_id,product_id,quantity,due_at\nWO-1,P-1,10,2026-11-02T14:00:00Z\nWO-2,P-1,zero,\n"
                       "WO-3,,5,\nWO-4,P-1,3,tomorrow\nWO-5,P-1,7\n\nWO-6,P-1,1,2026-11-03T00:00:00\n"),
        ("lots.csv", "lot_id,material_id,quantity,unit,location_id\nL-1,M-1,100,kg,stores\nL-2,M-1,-1,kg,stores\n"),
    ], NOW)
    assert _types(result) == [("ProductionOrderReleased", 2), ("ProductionOrderReleased", 8), ("MaterialLotReceived", 2)]
    first = result.rows[0].item
    assert first["quantity"] == 10.0 and first["due_at"] == "2026-11-02T14:00:00.000Z"
    assert first["occurred_at"] == "2026-11-02T05:00:00.000Z" and first["source"] == "erp-import"
    assert result.rows[1].item["due_at"] == "2026-11-03T00:00:00.000Z"  # no offset: UTC
    errors = {(e.file, e.line): e.reason for e in result.errors}
    assert errors == {
        ("orders.csv", 3): "quantity must be a number, got 'zero'",
        ("orders.csv", 4): "product_id is empty",
        ("orders.csv", 5): "due_at must be an RFC 3339 date-time like 2026-11-02T06:00:00Z, got 'tomorrow'",
        ("orders.csv", 6): "3 columns, the header has 4",
        ("lots.csv", 3): "quantity must be greater than 0, got '-1'",
    }


def test_csv_products_join_boms_and_routings_and_refuse_a_product_with_a_bad_line():
    result = csv_import.parse([
        ("products.csv", "product_id,name,ideal_cycle_time_s\nP-1,Bracket,12\nP-2,Hinge,20\nP-3,Clamp,0\n"),
        ("bom.csv", "product_id,material_id,quantity_per_unit\nP-1,STEEL,0.5\nP-1,SCREW,4\nP-2,STEEL,x\nP-9,STEEL,1\n"),
        ("routing.csv", "product_id,operation,equipment_id,ideal_cycle_time_s\nP-1,0010,acme.berlin.press07,12\n"),
    ], NOW)
    assert _types(result) == [("ProductDefined", 2)]
    product = result.rows[0].item
    assert product["bom"] == [{"material_id": "STEEL", "quantity_per_unit": 0.5},
                              {"material_id": "SCREW", "quantity_per_unit": 4.0}]
    assert product["routing"] == [{"operation": "0010", "equipment_id": "acme.berlin.press07", "ideal_cycle_time_s": 12.0}]
    reasons = {(e.file, e.line): e.reason for e in result.errors}
    assert reasons[("bom.csv", 4)] == "quantity_per_unit must be a number, got 'x'"
    assert reasons[("products.csv", 3)] == "product P-2 refused: its bom line bom.csv:4 is invalid"
    assert reasons[("products.csv", 4)] == "ideal_cycle_time_s must be greater than 0, got '0'"
    assert reasons[("bom.csv", 5)] == "product P-9 is not defined by a products file of this import"


def test_unknown_header_names_the_expected_ones():
    result = csv_import.parse([("x.csv", "id,what\n1,2\n")], NOW)
    assert result.rows == [] and result.errors[0].line == 1 and "orders: order_id, product_id, quantity" in result.errors[0].reason


def test_ids_are_deterministic_and_change_with_content():
    text = "order_id,product_id,quantity\nWO-1,P-1,10\n"
    one = csv_import.parse([("a.csv", text)], NOW).rows[0].item
    again = csv_import.parse([("b.csv", text)], datetime(2026, 12, 1, tzinfo=UTC)).rows[0].item
    changed = csv_import.parse([("a.csv", text.replace("10", "11"))], NOW).rows[0].item
    assert one["event_id"] == again["event_id"] != changed["event_id"]
    assert one["event_id"].startswith("erp:ProductionOrderReleased:WO-1:")


SCHEDULE = """<?xml version="1.0"?>
<b2mml:ProductionSchedule xmlns:b2mml="http://www.mesa.org/xml/B2MML-V0600">
  <b2mml:PublishedDate>2026-11-02T04:00:00Z</b2mml:PublishedDate>
  <b2mml:ProductionRequest>
    <b2mml:ID>WO-7</b2mml:ID>
    <b2mml:EndTime>2026-11-02T14:00:00+01:00</b2mml:EndTime>
    <b2mml:SegmentRequirement>
      <b2mml:MaterialProducedRequirement>
        <b2mml:MaterialDefinitionID>P-1</b2mml:MaterialDefinitionID>
        <b2mml:Quantity><b2mml:QuantityString>120</b2mml:QuantityString></b2mml:Quantity>
      </b2mml:MaterialProducedRequirement>
    </b2mml:SegmentRequirement>
  </b2mml:ProductionRequest>
  <b2mml:ProductionRequest>
    <b2mml:ID>WO-8</b2mml:ID>
  </b2mml:ProductionRequest>
</b2mml:ProductionSchedule>
"""


def test_b2mml_schedule():
    result = b2mml.parse("s.xml", SCHEDULE, NOW)
    assert _types(result) == [("ProductionOrderReleased", 4)]
    order = result.rows[0].item
    assert (order["order_id"], order["product_id"], order["quantity"], order["due_at"], order["occurred_at"]) == (
        "WO-7", "P-1", 120.0, "2026-11-02T13:00:00.000Z", "2026-11-02T04:00:00.000Z")
    assert [(e.line, e.reason) for e in result.errors] == [
        (14, "ProductionRequest WO-8 names no product (ProductProductionRuleID or "
             "MaterialProducedRequirement/MaterialDefinitionID)")]


def test_b2mml_product_definition_and_lots_from_the_examples():
    result = parse_files(sorted(EXAMPLES.glob("*.xml")), NOW)
    items = {row.item["type"]: row.item for row in result.rows}
    product = items["ProductDefined"]
    assert product["routing"] == [
        {"operation": "0010", "equipment_id": "acme.berlin.assembly.line1.press07", "ideal_cycle_time_s": 15.0},
        {"operation": "0020", "equipment_id": "acme.berlin.assembly.line1.weld02", "ideal_cycle_time_s": 60.0}]
    assert product["bom"] == [{"material_id": "STEEL-SHEET-2MM", "quantity_per_unit": 0.5}]
    assert product["ideal_cycle_time_s"] == 60.0 and product["unit"] == "pcs"
    lot = items["MaterialLotReceived"]
    assert (lot["lot_id"], lot["quantity"], lot["unit"], lot["location_id"]) == ("LOT-S-0002", 800.0, "kg", "acme.berlin.stores")
    assert sorted((Path(e.file).name, e.line) for e in result.errors) == [("material-lots.xml", 10), ("schedule.xml", 18)]


def test_b2mml_malformed_and_hostile_xml():
    broken = b2mml.parse("x.xml", "<ProductionSchedule>\n<ProductionRequest>\n</ProductionSchedule>", NOW)
    assert broken.rows == [] and broken.errors[0].line == 3 and "not well-formed" in broken.errors[0].reason
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><MaterialLot><ID>&a;</ID></MaterialLot>'
    assert b2mml.parse("b.xml", bomb, NOW).rows == []
    assert b2mml.duration_s("PT1M30S") == 90 and b2mml.duration_s("12.5") == 12.5
    with pytest.raises(ValueError):
        b2mml.duration_s("soon")


def test_every_example_event_passes_ingest_validation():
    catalogue = Catalogue.load()
    translator = Translator(catalogue.schemas, PLAN)
    result = parse_files(sorted(EXAMPLES.iterdir()), NOW)
    assert len(result.rows) == 9 and len(result.errors) == 4
    outcomes = translator.translate_all([row.item for row in result.rows], now=datetime(2026, 11, 2, 6, tzinfo=UTC),
                                        client="erp")
    assert all(isinstance(o, Accepted) for o in outcomes), [o for o in outcomes if not isinstance(o, Accepted)]


class RecordingSink:
    def __init__(self):
        self.items = []

    async def submit(self, items):
        self.items += items
        results = [{"index": i, "status": "rejected" if it.get("order_id") == "WO-2002" else "accepted",
                    "errors": [{"message": "made up"}]} for i, it in enumerate(items)]
        return SinkResult(accepted=sum(r["status"] == "accepted" for r in results), results=results)

    async def close(self):
        pass


def test_run_reports_refused_rows_with_lines_and_sends_the_good_ones():
    sink, out, err = RecordingSink(), io.StringIO(), io.StringIO()
    code = asyncio.run(asyncio.to_thread(run, [str(p) for p in sorted(EXAMPLES.glob("*.csv"))], sink=sink, out=out, err=err))
    assert code == 1
    assert [i["type"] for i in sink.items][:2] == ["ProductDefined", "ProductDefined"]  # products go first
    assert out.getvalue().strip() == "5 events sent, 3 rows refused"
    assert "orders.csv:3: refused by ingest: made up" in err.getvalue()
    assert "lots.csv:4: quantity must be a number, got 'lots'" in err.getvalue()
