"""`mom report` against the real stack: the Vorne shift sent through ingest, read back from the analyst views."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from services.report import ReportQuery, run
from tests.e2e.test_oee_published_examples import post, running, vorne_shift, wait_for_row  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture(scope="module")
def vorne(running):  # noqa: F811 (the fixture imported above)
    """Given the published Vorne shift on a fresh site, closed in kpi.oee."""
    run_id = uuid.uuid4().hex[:8]
    site = f"acme{run_id}.berlin"
    post(running, vorne_shift(site, run_id))
    unit = f"{site}.assembly.line1.press07"
    row = wait_for_row(running, "SELECT 1 FROM kpi.oee WHERE equipment_id = %s AND period = 'shift' AND version >= 1",
                       (unit,))
    assert row is not None, "the shift was not closed in kpi.oee"
    wait_for_row(running, "SELECT 1 FROM execution.downtime_pareto WHERE equipment_id = %s", (unit,))
    return {"status": running, "site": site, "unit": unit, "shift": f"S-{run_id}-A", "order": f"WO-{run_id}"}


def test_the_text_report_shows_the_published_oee_and_availability(vorne):
    text = run(ReportQuery(scope=vorne["unit"]), url=vorne["status"]["database"]["analyst_url"])
    unit_line = next(line for line in text.splitlines() if vorne["shift"] in line and vorne["unit"] in line)
    assert "74.8 %" in unit_line  # OEE
    assert "88.8 %" in unit_line  # availability
    assert "86.1 %" in unit_line and "97.8 %" in unit_line  # performance, quality
    assert "JAM" in text and "47.0" in text  # the Pareto: one 47-minute stop
    assert vorne["order"] in text


def test_the_json_report_carries_the_same_numbers(vorne):
    data = json.loads(run(ReportQuery(scope=vorne["site"]), as_json=True, url=vorne["status"]["database"]["analyst_url"]))
    [unit] = [u for u in data["units"] if u["shift_id"] == vorne["shift"]]
    assert unit["equipment_id"] == vorne["unit"]
    assert round(unit["oee"], 4) == 0.7479
    assert round(unit["availability"], 4) == 0.8881
    assert round(unit["effectiveness"], 4) == 0.8611
    assert round(unit["quality_ratio"], 4) == 0.9780
    assert (unit["pq"], unit["gq"], unit["sq"]) == (19271, 18848, 423)
    [line] = [r for r in data["lines"] if r["shift_id"] == vorne["shift"]]
    assert line["equipment_id"] == f"{vorne['site']}.assembly.line1" and abs(line["oee"] - unit["oee"]) < 1e-12
    [jam] = [r for r in data["downtime_pareto"] if r["reason_code"] == "JAM"]
    assert (jam["stops"], jam["duration_s"]) == (1, 47 * 60)
    [order] = data["orders"]
    assert (order["order_id"], order["good"], order["quantity"]) == (vorne["order"], 18848, 20000)
    assert [w["operation"] for w in data["wip"]] == ["0010"]


def test_a_range_without_the_shift_reports_no_periods(vorne):
    query = ReportQuery(scope=vorne["unit"], period="hour", end=datetime(2000, 1, 1, tzinfo=UTC))
    data = json.loads(run(query, as_json=True, url=vorne["status"]["database"]["analyst_url"]))
    assert data["units"] == [] and data["lines"] == [] and data["downtime_pareto"] == []
