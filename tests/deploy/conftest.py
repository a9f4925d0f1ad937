"""Fixtures of the deployment checks: the pinned helm and promtool (see deploytools.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deploytools import helm_binary, promtool_binary  # noqa: E402


@pytest.fixture(scope="session")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="session")
def promtool() -> Path:
    return promtool_binary()
