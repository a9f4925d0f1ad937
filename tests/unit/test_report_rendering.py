"""The report's presentation: every domain rendered, a missing domain shown as not available, and an
HTML page with its three inline SVG charts and no scripts or external files."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

from services import report_html
from services.report import ReportQuery, render

T0 = datetime(2026, 11, 3, 5, tzinfo=UTC)
MISSING = {"available": False, "reason": 'relation "quality.spc_points" does not exist'}


def oee_row(equipment_id: str, oee: float, **extra) -> dict:
    return {"equipment_id": equipment_id, "period": "shift", "label": "S1", "period_start": T0, "shift_id": "S1",
            "version": 1, "work_units": 2, "pq": 100, "gq": 98, "availability": 0.9, "effectiveness": 0.9,
            "quality_ratio": 0.98, "oee": oee, **extra}


def data(quality=None) -> dict:
    points = [{"point": i, "occurred_at": T0 + timedelta(minutes=i), "chart": "I", "value": 10 + (i % 3) * 0.1,
               "centre": 10.1, "lcl": 9.8, "ucl": 10.4, "limits_version": 1, "rules_fired": [1] if i == 4 else []}
              for i in range(1, 9)]
    return {
        "scope": "acme.hamburg", "period": "shift", "from": None, "to": None,
        "units": [oee_row("acme.hamburg.pumps.line1.press01", 0.72)],
        "lines": [oee_row("acme.hamburg.pumps.line1", 0.7)],
        "lines_by_hour": [oee_row("acme.hamburg.pumps.line1", 0.6 + h / 100, period_start=T0 + timedelta(hours=h))
                          for h in range(8)],
        "downtime_pareto": [{"reason_code": "JAM", "classification": "minor_stop", "stops": 9, "duration_s": 600.0,
                             "share": 0.6, "cumulative_share": 0.6},
                            {"reason_code": "E-HYD-12", "classification": "unplanned_stop", "stops": 1,
                             "duration_s": 400.0, "share": 0.4, "cumulative_share": 1.0}],
        "orders": [{"order_id": "WO-1042", "product_id": "P", "status": "STARTED", "quantity": 100.0, "good": 98,
                    "scrap": 2, "due_at": None, "progress": 0.98}],
        "wip": [],
        "quality": quality or {
            "spc_violations": {"available": True, "rows": [
                {"occurred_at": T0, "characteristic_id": "BORE-DIA", "point": 4, "equipment_id": "u", "value": 42.061,
                 "lcl": 41.97, "ucl": 42.03, "rules_fired": [1, 5]}]},
            "open_holds": {"available": True, "rows": [{"lot_id": "LOT-WO-1042", "held_at": T0, "nonconformance_id": "NC-1",
                                                         "equipment_id": "u", "order_id": "WO-1042"}]},
            "nonconformances": {"available": True, "rows": [{"status": "OPEN", "nonconformances": 1, "values_outside": 2}]},
            "fpy": {"available": True, "rows": []}, "capability": {"available": True, "rows": []},
            "control_chart": {"available": True, "rows": points, "plan_id": "IP", "characteristic_id": "BORE-DIA"}},
        "maintenance": {"open_work_orders": MISSING, "closed_work_orders": MISSING, "reliability": MISSING,
                        "pm_schedule": MISSING},
        "inventory": {"on_hand": {"available": True, "rows": [
            {"material_id": "STEEL", "unit": "kg", "quantity": 12.5, "available": 12.5, "held": 0.0, "lots": 1,
             "locations": 1}]}, "genealogy_trace": {"available": True, "rows": [], "lot_id": "LOT-WO-1042"}},
    }


def test_the_text_report_has_every_domain_and_names_what_is_not_available():
    text = render(data(), ReportQuery(scope="acme.hamburg"))
    for title in ("SPC rule violations", "open holds", "open work orders", "reliability per unit", "on-hand by material",
                  "genealogy: ancestors of LOT-WO-1042"):
        assert title in text
    assert "LOT-WO-1042" in text and "42.061" in text and "1,5" in text
    assert text.count("not available: relation \"quality.spc_points\" does not exist") == 4  # the maintenance parts


def test_the_html_page_has_three_charts_and_no_scripts_or_external_resources():
    page = report_html.render(data(), "Hamburg")
    assert page.count("<svg") == 3
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    for svg in page.split("<svg")[1:]:
        ElementTree.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")  # well-formed SVG
    assert "control chart BORE-DIA".lower() in page.lower() and 'fill="#d62728"' in page  # a red, violating point
    assert "Not available" in page


def test_a_domain_without_data_gives_a_message_not_a_chart():
    quality = {**data()["quality"], "control_chart": MISSING}
    page = report_html.render(data(quality), "Hamburg")
    assert page.count("<svg") == 2 and "No control chart" in page


def test_the_html_report_is_written_where_asked(tmp_path):
    path = report_html.write(data(), tmp_path / "out" / "report.html")
    assert path.read_text().startswith("<!doctype html>")
