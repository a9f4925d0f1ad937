"""ERP exports as CSV, pure: text in, canonical plan events with their line numbers (or refusals) out.

A file's kind is told by its header (columns in any order, extra columns refused, `?` = optional):

| kind | columns | event |
|---|---|---|
| orders | order_id, product_id, quantity, due_at?, released_at? | ProductionOrderReleased |
| products | product_id, name, ideal_cycle_time_s, unit?, defined_at? | ProductDefined |
| bom | product_id, material_id, quantity_per_unit | lines of the product's ProductDefined.bom |
| routing | product_id, operation, equipment_id, ideal_cycle_time_s | steps of ProductDefined.routing |
| lots | lot_id, material_id, quantity, unit, location_id, received_at? | MaterialLotReceived |

BOM and routing lines join their product by product_id (from any file of the same import). A product
with a bad BOM or routing line is refused whole, so that no partial BOM is published. Times are
RFC 3339 (UTC when without an offset); a missing time is the import's `now`.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from services.ingest.erp.model import ParseResult, Row, RowError, event, number, parse_time, rfc3339

KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {   # kind -> (required, optional)
    "orders": (("order_id", "product_id", "quantity"), ("due_at", "released_at")),
    "products": (("product_id", "name", "ideal_cycle_time_s"), ("unit", "defined_at")),
    "bom": (("product_id", "material_id", "quantity_per_unit"), ()),
    "routing": (("product_id", "operation", "equipment_id", "ideal_cycle_time_s"), ()),
    "lots": (("lot_id", "material_id", "quantity", "unit", "location_id"), ("received_at",)),
}


def kind_of(header: list[str]) -> str | None:
    columns = set(header)
    for kind, (required, optional) in KINDS.items():
        if set(required) <= columns <= set(required) | set(optional):
            return kind
    return None


def _rows(name: str, text: str) -> tuple[str | None, list[tuple[int, dict[str, str]]], list[RowError]]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    errors: list[RowError] = []
    try:
        header = [column.strip().lower() for column in next(reader)]
    except StopIteration:
        return None, [], [RowError(name, 1, "the file is empty")]
    except csv.Error as exc:
        return None, [], [RowError(name, 1, f"not CSV: {exc}")]
    kind = kind_of(header)
    if kind is None:
        expected = "; ".join(f"{k}: {', '.join(r)}" + (f" (optional {', '.join(o)})" if o else "")
                             for k, (r, o) in KINDS.items())
        return None, [], [RowError(name, 1, f"unknown header {', '.join(header)}; expected one of {expected}")]
    rows = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(name, start, f"not CSV: {exc}"))
            break
        line = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            errors.append(RowError(name, start, f"{len(values)} columns, the header has {len(header)}"))
            continue
        rows.append((start, {column: value.strip() for column, value in zip(header, values, strict=True)}))
    return kind, rows, errors


def _required(row: dict[str, str], *columns: str) -> None:
    missing = [c for c in columns if not row.get(c)]
    if missing:
        raise ValueError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} empty")


def _order(row: dict[str, str], now: str) -> dict[str, Any]:
    _required(row, "order_id", "product_id", "quantity")
    body: dict[str, Any] = {"order_id": row["order_id"], "product_id": row["product_id"],
                            "quantity": number(row["quantity"], "quantity")}
    if row.get("due_at"):
        body["due_at"] = _time(row["due_at"], "due_at")
    occurred = _time(row["released_at"], "released_at") if row.get("released_at") else now
    return event("ProductionOrderReleased", row["order_id"], occurred, body)


def _lot(row: dict[str, str], now: str) -> dict[str, Any]:
    _required(row, "lot_id", "material_id", "quantity", "unit", "location_id")
    body = {"lot_id": row["lot_id"], "material_id": row["material_id"], "quantity": number(row["quantity"], "quantity"),
            "unit": row["unit"], "location_id": row["location_id"]}
    occurred = _time(row["received_at"], "received_at") if row.get("received_at") else now
    return event("MaterialLotReceived", row["lot_id"], occurred, body)


def _time(text: str, what: str) -> str:
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"{what} must be an RFC 3339 date-time like 2026-11-02T06:00:00Z, got {text!r}") from None


def parse(files: Iterable[tuple[str, str]], now: datetime) -> ParseResult:
    """Parse CSV files given as (name, text); good rows become events, bad rows RowErrors."""
    at = rfc3339(now)
    result = ParseResult()
    products: dict[str, tuple[str, int, dict[str, str]]] = {}
    boms: dict[str, list[dict[str, Any]]] = {}
    routings: dict[str, list[dict[str, Any]]] = {}
    broken: dict[str, str] = {}          # product_id -> the first bad line of its BOM or routing
    first_line: dict[str, tuple[str, int]] = {}   # product_id -> its first BOM or routing line
    for name, text in files:
        kind, rows, errors = _rows(name, text)
        result.errors.extend(errors)
        for line, row in rows:
            try:
                if kind == "orders":
                    result.rows.append(Row(name, line, _order(row, at)))
                elif kind == "lots":
                    result.rows.append(Row(name, line, _lot(row, at)))
                elif kind == "products":
                    _required(row, "product_id", "name", "ideal_cycle_time_s")
                    number(row["ideal_cycle_time_s"], "ideal_cycle_time_s")
                    if row.get("defined_at"):
                        _time(row["defined_at"], "defined_at")
                    if row["product_id"] in products:
                        first = products[row["product_id"]]
                        raise ValueError(f"product {row['product_id']} is already defined at {first[0]}:{first[1]}")
                    products[row["product_id"]] = (name, line, row)
                elif kind in ("bom", "routing") and row.get("product_id"):
                    first_line.setdefault(row["product_id"], (name, line))
                if kind == "bom":
                    _required(row, "product_id", "material_id", "quantity_per_unit")
                    boms.setdefault(row["product_id"], []).append(
                        {"material_id": row["material_id"],
                         "quantity_per_unit": number(row["quantity_per_unit"], "quantity_per_unit")})
                elif kind == "routing":
                    _required(row, "product_id", "operation", "equipment_id", "ideal_cycle_time_s")
                    routings.setdefault(row["product_id"], []).append(
                        {"operation": row["operation"], "equipment_id": row["equipment_id"],
                         "ideal_cycle_time_s": number(row["ideal_cycle_time_s"], "ideal_cycle_time_s")})
            except ValueError as exc:
                result.errors.append(RowError(name, line, str(exc)))
                if kind in ("bom", "routing") and row.get("product_id"):
                    broken.setdefault(row["product_id"], f"{kind} line {name}:{line}")
    for product_id, (name, line, row) in products.items():
        if product_id in broken:
            result.errors.append(RowError(name, line, f"product {product_id} refused: its {broken[product_id]} is invalid"))
            continue
        body: dict[str, Any] = {"product_id": product_id, "name": row["name"],
                                "ideal_cycle_time_s": number(row["ideal_cycle_time_s"], "ideal_cycle_time_s"),
                                "bom": boms.get(product_id, []), "routing": routings.get(product_id, [])}
        if row.get("unit"):
            body["unit"] = row["unit"]
        occurred = parse_time(row["defined_at"]) if row.get("defined_at") else at
        result.rows.append(Row(name, line, event("ProductDefined", product_id, occurred, body)))
    orphans = (set(boms) | set(routings)) - set(products)
    for product_id in sorted(orphans):
        name, line = first_line[product_id]
        result.errors.append(RowError(name, line, f"product {product_id} is not defined by a products file "
                                                  "of this import"))
    return result
