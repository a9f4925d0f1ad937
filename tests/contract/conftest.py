"""Fixtures of the contract tests: the repository's catalogue, and a scratch copy of schemas/ to break."""

import shutil
from pathlib import Path

import pytest

from services.common.catalogue import DEFAULT_SCHEMAS_DIR, Catalogue


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture
def schemas_copy(tmp_path: Path) -> Path:
    """A copy of the repository's schemas/ that a test may edit freely."""
    target = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, target)
    return target
