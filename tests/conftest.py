"""Shared fixtures: the real local stack (Kafka, PostgreSQL, registry) for integration tests.

The tests' stack has its own state dir (``<repo>/.mom/test``, or ``MOM_TEST_STATE_DIR``) and its
own ports (Kafka 29092/29093, PostgreSQL 25432, registry 28081, ingest 28000, services
28101-28104), so it runs beside a developer's ``mom up`` stack. Each port can be overridden by
the same variables as the real stack's (``MOM_KAFKA_PORT``, ``MOM_PG_PORT``, ...).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping

import pytest

from services.common import localstack

TEST_DEFAULTS = {
    "MOM_KAFKA_PORT": "29092",
    "MOM_KAFKA_CONTROLLER_PORT": "29093",
    "MOM_PG_PORT": "25432",
    "MOM_REGISTRY_PORT": "28081",
    "MOM_INGEST_PORT": "28000",
    "MOM_EXECUTION_PORT": "28101",
    "MOM_QUALITY_PORT": "28102",
    "MOM_MAINTENANCE_PORT": "28103",
    "MOM_INVENTORY_PORT": "28104",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs the real Kafka broker and PostgreSQL (the `stack` fixture)"
    )


def test_stack_config(env: Mapping[str, str] = os.environ) -> localstack.StackConfig:
    """The StackConfig the tests use: test ports and state dir, each overridable from the environment."""
    merged = {**TEST_DEFAULTS, **{k: v for k, v in env.items() if k.startswith("MOM_")}}
    merged["MOM_STATE_DIR"] = env.get("MOM_TEST_STATE_DIR") or str(localstack.REPO_ROOT / ".mom" / "test")
    return localstack.StackConfig.from_env(merged)


test_stack_config.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def stack() -> Iterator[localstack.StackConfig]:
    """The running test stack (no services).

    Stopped at the end only if a test session started it, and only by the last test session
    still using it: several pytest runs in one checkout share ``.mom/test``. Each holds a shared
    lock on ``<state>/.test-users`` while it runs; the one that can take it exclusively at the
    end is the last. ``<state>/.started-by-tests`` marks a stack that tests started (a stack
    that was up before, e.g. a developer's, is left running).
    """
    config = test_stack_config()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    marker = config.state_dir / ".started-by-tests"
    users = open(config.state_dir / ".test-users", "w")  # noqa: SIM115 - held for the session
    fcntl.flock(users, fcntl.LOCK_SH)
    try:
        before = localstack.status(config)
        already_up = (
            before["kafka"]["running"]
            and before["database"]["running"]
            and (before["registry"]["running"] or not config.registry_enabled)
        )
        if not already_up:
            marker.touch()
        localstack.up(config)
        yield config
    finally:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another test session still uses the stack: it stops it when done
        else:
            if marker.exists():
                localstack.down(config)
                marker.unlink(missing_ok=True)
        users.close()


@pytest.fixture
def stack_status(stack: localstack.StackConfig) -> dict:
    """status() of the test stack, taken when the test starts."""
    return localstack.status(stack)
