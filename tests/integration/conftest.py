"""Integration fixtures: topics applied, schemas migrated, a scratch execution schema per test."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from services.cli import prepare
from services.common import localstack
from services.common.avro import Codec, codec_for
from services.common.catalogue import Catalogue
from services.common.migrations import upgrade
from services.common.settings import REPO_ROOT, KafkaSettings, Settings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Prepared:
    config: localstack.StackConfig
    status: dict
    catalogue: Catalogue
    codec: Codec
    kafka: KafkaSettings
    superuser_url: str


@pytest.fixture(scope="session")
def prepared(stack: localstack.StackConfig) -> Prepared:
    """The test stack with every catalogued topic created and every service schema migrated."""
    status = localstack.status(stack)
    prepare(status)
    catalogue = Catalogue.load()
    return Prepared(
        config=stack, status=status, catalogue=catalogue,
        codec=codec_for(catalogue, status["registry"]["url"] or "", REPO_ROOT / "schemas"),
        kafka=KafkaSettings(bootstrap=status["kafka"]["bootstrap"]), superuser_url=status["database"]["url"],
    )


@pytest.fixture
def scratch(prepared: Prepared) -> Iterator[Settings]:
    """Worker settings with an empty execution schema of its own and a fresh consumer group.

    Each test reads the shared topics from the start, so its assertions look at its own equipment only.
    """
    schema = f"execution_{uuid.uuid4().hex[:10]}"
    upgrade(prepared.superuser_url, "execution", schema=schema)
    yield Settings(
        service="execution", kafka=prepared.kafka, database_url=prepared.superuser_url,
        registry_url=prepared.status["registry"]["url"] or "", batch_max_events=500,
        group_id=f"test.{schema}", db_schema=schema,
    )
    with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def start_at_end(prepared: Prepared, settings: Settings) -> dict[tuple[str, int], int]:
    """Seed a scratch schema's positions at the current end of execution's input topics, so a test
    processes only what it produces (the shared topics keep every earlier test's events)."""
    from services.common.kafka import end_offsets
    from services.common.replay import seed_positions
    from services.execution.app import build

    topics = build(settings, prepared.catalogue).input_topics
    ends = end_offsets(settings.kafka, topics)
    seed_positions(prepared.superuser_url, settings.db_schema, ends)
    return ends


async def assert_a_replay_equals(prepared, scratch, build, schema: str, start, *, workers: int = 1, **replay) -> None:
    """Rebuild a service (`build`, its app's build) from `start` into a scratch schema, by `workers`
    processes, in the replay's own batches or as `replay` sets them, and compare it with `schema` row
    for row."""
    from dataclasses import replace

    from services.common.replay import compare, rebuild

    target = f"{schema}_r"
    try:
        await rebuild(replace(scratch, **replay), build, prepared.superuser_url, target, start=start, workers=workers)
        differences = [(d.table, d.only_live, d.only_replay) for d in compare(prepared.superuser_url, schema, target)
                       if d.only_live or d.only_replay]
        assert differences == []
    finally:
        with psycopg.connect(prepared.superuser_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{target}" CASCADE')
