"""Grafana dashboards: valid, and reading only metrics the services export and views analysts may read."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deploytools import REPO_ROOT  # noqa: E402

DASHBOARDS = sorted((REPO_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
SUFFIXES = ("_bucket", "_count", "_sum")


def exported_metrics() -> set[str]:
    """Metric names declared with prometheus_client anywhere under services/."""
    names = set()
    for path in (REPO_ROOT / "services").rglob("*.py"):
        names |= set(re.findall(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(mom_[a-z0-9_]+)\"", path.read_text()))
    return names


def targets(dashboard: dict) -> list[dict]:
    return [t for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_two_dashboards_with_unique_uids() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert sorted(uids) == ["mom-plant", "mom-service-health"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_are_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_service_health_reads_only_exported_metrics_and_covers_the_five_signals() -> None:
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/mom-service-health.json").read_text())
    exprs = [t["expr"] for t in targets(dashboard)]
    used = {m for e in exprs for m in re.findall(r"\b(mom_[a-z0-9_]+)", e)}
    exported = exported_metrics()
    unknown = {m for m in used if m not in exported and not any(m.endswith(s) and m[: -len(s)] in exported for s in SUFFIXES)}
    assert not unknown, f"not exported by any service: {unknown}"
    text = " ".join(exprs)
    for signal in ("mom_events_processed_total", "mom_consumer_lag_events", "mom_arrival_latency_seconds_bucket",
                   "mom_events_failed_total", "mom_outbox_backlog_events"):
        assert signal in text


def plant_queries() -> list[str]:
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/mom-plant.json").read_text())
    variables = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return [t["rawSql"] for t in targets(dashboard)] + variables


def test_plant_dashboard_reads_oee_by_line_and_hour_and_the_downtime_pareto() -> None:
    queries = plant_queries()
    assert any("kpi.oee_rollup" in q and "period = 'hour'" in q and "level = 'work_center'" in q for q in queries)
    assert any("execution.downtime" in q and "ORDER BY 2 DESC" in q for q in queries)
