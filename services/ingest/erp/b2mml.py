"""ISA-95 B2MML XML, pure: ProductionSchedule, ProductDefinition and MaterialLot documents as plan events.

Namespaces are ignored (B2MML V0600 and V0700 both read), so are elements not listed here. Each
element becomes one event or one refusal with its line number:

- `ProductionSchedule/ProductionRequest` -> ProductionOrderReleased: `ID` the order;
  the product from `ProductProductionRuleID`, else the first `SegmentRequirement/MaterialProducedRequirement/
  MaterialDefinitionID`; quantity from that requirement's `Quantity/QuantityString`; `EndTime` the due time,
  `StartTime` (else the schedule's `PublishedDate`, else the import time) when it was released.
- `ProductDefinition` -> ProductDefined: `ID`, `Description` the name, `ProductSegment`s the routing
  (`ID` the operation, `EquipmentSpecification/EquipmentID` the unit, `Duration` (ISO 8601, e.g. PT30S)
  the ideal cycle time), `MaterialSpecification`s with `MaterialUse` Consumed the BOM
  (`MaterialDefinitionID`, `Quantity/QuantityString` per unit). The product's ideal cycle time is
  the parameter `ideal_cycle_time_s` (`Parameter/ID` + `Value/ValueString`), else its slowest segment.
- `MaterialLot` (anywhere, e.g. in a `MaterialInformation` or as the root) -> MaterialLotReceived:
  `ID`, `MaterialDefinitionID`, `Quantity/QuantityString` and `UnitOfMeasure`, `StorageLocation`,
  and `ReceivedTime`/`PublishedDate` if any.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.parsers import expat

from services.ingest.erp.model import ParseResult, Row, RowError, event, number, parse_time, rfc3339


@dataclass
class Element:
    tag: str                      # local name, without namespace
    line: int
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def find(self, path: str) -> Element | None:
        node: Element | None = self
        for step in path.split("/"):
            node = next((c for c in node.children if c.tag == step), None) if node else None
        return node

    def findall(self, tag: str) -> list[Element]:
        return [c for c in self.children if c.tag == tag]

    def text_of(self, path: str) -> str:
        node = self.find(path)
        return node.text.strip() if node is not None else ""

    def iter(self, tag: str) -> list[Element]:
        found = []
        stack = [self]
        while stack:
            node = stack.pop()
            if node.tag == tag:
                found.append(node)
            stack.extend(reversed(node.children))
        return found


def parse_xml(text: str) -> Element:
    """A tree of Elements with line numbers; ValueError with the line of a syntax error."""
    parser = expat.ParserCreate(namespace_separator="}")
    root: list[Element] = []
    stack: list[Element] = []

    def start(name: str, _attrs: dict[str, str]) -> None:
        element = Element(name.rsplit("}", 1)[-1], parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def data(chunk: str) -> None:
        if stack:
            stack[-1].text += chunk

    def no_entities(*_args: Any) -> None:
        raise ValueError("entity declarations are not accepted")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    parser.EntityDeclHandler = no_entities
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise ValueError(f"line {exc.lineno}: not well-formed XML: {expat.ErrorString(exc.code)}") from None
    return root[0]


_DURATION = re.compile(r"P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?\Z")


def duration_s(text: str) -> float:
    """Seconds of an ISO 8601 duration like PT30S or PT1M30S (a bare number is seconds); ValueError."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.match(text)
    if match is None or text in ("P", "PT"):
        raise ValueError(f"Duration must be an ISO 8601 duration like PT30S, got {text!r}")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _need(element: Element, path: str) -> str:
    value = element.text_of(path)
    if not value:
        raise ValueError(f"{element.tag} has no {path}")
    return value


def _time(text: str, what: str) -> str:
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"{what} must be an ISO 8601 date-time, got {text!r}") from None


def _request(request: Element, published: str) -> dict[str, Any]:
    order_id = _need(request, "ID")
    produced = next((m for s in request.iter("SegmentRequirement") for m in s.findall("MaterialProducedRequirement")),
                    None)
    product_id = request.text_of("ProductProductionRuleID") or (produced.text_of("MaterialDefinitionID") if produced else "")
    if not product_id:
        raise ValueError(f"ProductionRequest {order_id} names no product (ProductProductionRuleID or "
                         "MaterialProducedRequirement/MaterialDefinitionID)")
    quantity_text = produced.text_of("Quantity/QuantityString") if produced else ""
    if not quantity_text:
        raise ValueError(f"ProductionRequest {order_id} has no MaterialProducedRequirement/Quantity/QuantityString")
    body: dict[str, Any] = {"order_id": order_id, "product_id": product_id,
                            "quantity": number(quantity_text, "Quantity/QuantityString")}
    if request.text_of("EndTime"):
        body["due_at"] = _time(request.text_of("EndTime"), "EndTime")
    occurred = _time(request.text_of("StartTime"), "StartTime") if request.text_of("StartTime") else published
    return event("ProductionOrderReleased", order_id, occurred, body)


def _definition(definition: Element, published: str) -> dict[str, Any]:
    product_id = _need(definition, "ID")
    routing = []
    for segment in definition.findall("ProductSegment"):
        operation = _need(segment, "ID")
        equipment_id = segment.text_of("EquipmentSpecification/EquipmentID")
        if not equipment_id:
            raise ValueError(f"ProductSegment {operation} has no EquipmentSpecification/EquipmentID")
        cycle = duration_s(_need(segment, "Duration"))
        if cycle <= 0:
            raise ValueError(f"ProductSegment {operation}: Duration must be greater than 0")
        routing.append({"operation": operation, "equipment_id": equipment_id, "ideal_cycle_time_s": cycle})
    bom = []
    for spec in definition.iter("MaterialSpecification"):
        if spec.text_of("MaterialUse") not in ("", "Consumed"):
            continue
        material = _need(spec, "MaterialDefinitionID")
        bom.append({"material_id": material,
                    "quantity_per_unit": number(_need(spec, "Quantity/QuantityString"),
                                                f"MaterialSpecification {material} Quantity/QuantityString")})
    cycle_text = next((p.text_of("Value/ValueString") for p in definition.iter("Parameter")
                       if p.text_of("ID") == "ideal_cycle_time_s"), "")
    if cycle_text:
        cycle = number(cycle_text, "Parameter ideal_cycle_time_s")
    elif routing:
        cycle = max(step["ideal_cycle_time_s"] for step in routing)
    else:
        raise ValueError(f"ProductDefinition {product_id} has no ideal cycle time (Parameter ideal_cycle_time_s "
                         "or a ProductSegment Duration)")
    body: dict[str, Any] = {"product_id": product_id, "name": definition.text_of("Description") or product_id,
                            "ideal_cycle_time_s": cycle, "bom": bom, "routing": routing}
    unit = definition.text_of("BillOfMaterialsUnitOfMeasure") or definition.text_of("UnitOfMeasure")
    if unit:
        body["unit"] = unit
    occurred = _time(definition.text_of("PublishedDate"), "PublishedDate") if definition.text_of("PublishedDate") \
        else published
    return event("ProductDefined", product_id, occurred, body)


def _lot(lot: Element, published: str) -> dict[str, Any]:
    lot_id = _need(lot, "ID")
    unit = lot.text_of("Quantity/UnitOfMeasure") or lot.text_of("UnitOfMeasure")
    if not unit:
        raise ValueError(f"MaterialLot {lot_id} has no Quantity/UnitOfMeasure")
    location = lot.text_of("StorageLocation") or lot.text_of("Location/EquipmentID")
    if not location:
        raise ValueError(f"MaterialLot {lot_id} has no StorageLocation")
    body = {"lot_id": lot_id, "material_id": _need(lot, "MaterialDefinitionID"),
            "quantity": number(_need(lot, "Quantity/QuantityString"), "Quantity/QuantityString"),
            "unit": unit, "location_id": location}
    stamp = lot.text_of("ReceivedTime") or lot.text_of("PublishedDate")
    return event("MaterialLotReceived", lot_id, _time(stamp, "ReceivedTime") if stamp else published, body)


def parse(name: str, text: str, now: datetime) -> ParseResult:
    """One B2MML document: every ProductionRequest, ProductDefinition and MaterialLot in it."""
    result = ParseResult()
    try:
        root = parse_xml(text)
    except ValueError as exc:
        match = re.match(r"line (\d+): (.*)", str(exc))
        result.errors.append(RowError(name, int(match.group(1)) if match else 1, match.group(2) if match else str(exc)))
        return result
    published = rfc3339(now)
    if root.text_of("PublishedDate"):
        try:
            published = parse_time(root.text_of("PublishedDate"))
        except ValueError:
            result.errors.append(RowError(name, root.find("PublishedDate").line,  # type: ignore[union-attr]
                                          "PublishedDate is not an ISO 8601 date-time"))
    makers = (("ProductionRequest", _request), ("ProductDefinition", _definition), ("MaterialLot", _lot))
    found = 0
    for tag, make in makers:
        for element in root.iter(tag):
            found += 1
            try:
                result.rows.append(Row(name, element.line, make(element, published)))
            except ValueError as exc:
                result.errors.append(RowError(name, element.line, str(exc)))
    if not found:
        result.errors.append(RowError(name, root.line, f"{root.tag} holds no ProductionRequest, ProductDefinition "
                                                       "or MaterialLot"))
    return result
