"""Alert rules and the Prometheus configuration, checked by promtool; every alert has a runbook entry."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from deploytools import REPO_ROOT  # noqa: E402

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def _alerts() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules(promtool: Path) -> None:
    result = _promtool(promtool, "check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules(promtool: Path) -> None:
    result = _promtool(promtool, "test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config_of_the_compose_prometheus(promtool: Path) -> None:
    result = _promtool(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_alerts_exist_and_each_is_unit_tested() -> None:
    names = {rule["alert"] for rule in _alerts()}
    assert {"MomConsumerLagGrowing", "MomDeadLetters", "MomNoProgress", "MomOutboxBacklog"} <= names
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yaml").read_text()))
    assert tested == names


def test_every_alert_has_a_runbook_entry_it_links_to() -> None:
    text = OPERATIONS.read_text()
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#{2,4} (.+)$", text, flags=re.M)}
    for rule in _alerts():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert anchor in headings, f"docs/operations.md has no runbook heading for {rule['alert']}"
        assert rule["labels"]["severity"] in ("warning", "critical")
