"""The benchmark's own local stack: its own state dir and ports, so it never meets a developer's or the tests'.

The ports sit below 32768, outside the kernel's ephemeral range, so an outgoing connection never holds one.
"""
from __future__ import annotations

import os

from services.common import localstack
from services.common.settings import REPO_ROOT

BENCH_ENV = {
    "MOM_STATE_DIR": str(REPO_ROOT / ".mom" / "bench"),
    "MOM_KAFKA_PORT": "24092",
    "MOM_KAFKA_CONTROLLER_PORT": "24093",
    "MOM_PG_PORT": "24432",
    "MOM_REGISTRY": "none",
    "MOM_REGISTRY_PORT": "24081",
    "MOM_INGEST_PORT": "24000",
    "MOM_EXECUTION_PORT": "24101",
    "MOM_QUALITY_PORT": "24102",
    "MOM_MAINTENANCE_PORT": "24103",
    "MOM_INVENTORY_PORT": "24104",
}


def config(env: dict[str, str] | None = None) -> localstack.StackConfig:
    """The bench stack. `MOM_BENCH_<NAME>` overrides the bench's `MOM_<NAME>` (e.g. `MOM_BENCH_KAFKA_PORT`,
    `MOM_BENCH_STATE_DIR`), so two benchmark runs can use two stacks side by side."""
    env = dict(os.environ if env is None else env)
    overrides = {f"MOM_{k[len('MOM_BENCH_'):]}": v for k, v in env.items() if k.startswith("MOM_BENCH_")}
    return localstack.StackConfig.from_env({**env, **BENCH_ENV, **overrides})


def start() -> tuple[localstack.StackConfig, dict, bool]:
    """Bring the bench stack up (idempotent); returns (config, status, whether this call started Kafka or PostgreSQL)."""
    from services.cli import prepare

    cfg = config()
    before = localstack.status(cfg)
    was_running = before["kafka"]["running"] and before["database"]["running"]
    status = localstack.up(cfg, services=(), after_infra=prepare)
    return cfg, status, not was_running


def stop(cfg: localstack.StackConfig) -> None:
    localstack.down(cfg)
