"""Kafka clients with the project's defaults, and `mom topics apply` from the catalogue."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from services.common.catalogue import Catalogue
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)


def _base(kafka: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": kafka.bootstrap, **kafka.client_config}


def producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer: acks=all, no reordering, no duplicates on retry."""
    config = {
        **_base(kafka),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        **overrides,
    }
    return Producer(config)


def transactional_producer(kafka: KafkaSettings, transactional_id: str) -> Producer:
    """A producer of Kafka transactions; a new one with the same id fences the one before it."""
    return producer(kafka, **{
        "transactional.id": transactional_id,
        "transaction.timeout.ms": 30000,  # how long a reader may wait on the open transaction of a dead leader
        "message.timeout.ms": 30000,      # may not exceed the transaction timeout
    })


def consumer(kafka: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer whose offsets Kafka never decides: positions live in the database.

    Auto-commit stays off; offsets are committed to Kafka only as a hint for lag monitoring.
    """
    config = {
        **_base(kafka),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.min.bytes": 1,
        "queued.min.messages": 20000,
        "partition.assignment.strategy": "range",  # eager: on_assign seeks every partition it gets
        **overrides,
    }
    return Consumer(config)


def ends_reader(kafka: KafkaSettings, group_id: str) -> Consumer:
    """A consumer that never subscribes, for a worker's loop to ask its partitions' ends (ListOffsets;
    under read_committed, the last stable offset) on connections of its own. The broker answers one
    connection's requests in order, so on the worker's consumer the question would wait behind the
    long-polling fetch, up to fetch.wait.max.ms (500 ms), on every batch of a quiet stream."""
    return Consumer({**_base(kafka), "group.id": group_id, "enable.auto.commit": False,
                     "isolation.level": "read_committed"})


def end_offsets(kafka: KafkaSettings, topics: Iterable[str], timeout_s: float = 30.0) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of the topics: where a reader that has read all stands."""
    probe = Consumer({**_base(kafka), "group.id": "mom.watermark-probe", "enable.auto.commit": False})
    deadline = time.monotonic() + timeout_s
    try:
        ends = {}
        for topic in topics:
            for partition in probe.list_topics(topic, timeout=timeout_s).topics[topic].partitions:
                ends[(topic, partition)] = _watermark(probe, TopicPartition(topic, partition), deadline)
        return ends
    finally:
        probe.close()


_LEADERLESS = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                         KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT})


def _watermark(probe: Consumer, partition: TopicPartition, deadline: float) -> int:
    """The high watermark, asked again while the partition has no leader yet (a topic just created, a
    broker just restarted) until the deadline."""
    while True:
        try:
            return probe.get_watermark_offsets(partition, timeout=max(deadline - time.monotonic(), 1.0))[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _LEADERLESS or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(_base(kafka))


def apply_topics(
    kafka: KafkaSettings, catalogue: Catalogue, *, replication_factor: int | None = None, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create missing topics, grow partition counts and set configs as the catalogue says. Idempotent.

    Returns what happened per topic ("created", "partitions 3->6", "config", "unchanged").
    Shrinking partitions is impossible in Kafka and is reported as an error, never attempted.
    """
    client = admin(kafka)
    existing = client.list_topics(timeout=timeout_s).topics
    outcome: dict[str, str] = {}
    to_create = []
    for topic in catalogue.topics.values():
        if topic.name not in existing:
            to_create.append(NewTopic(
                topic.name, num_partitions=topic.partitions,
                replication_factor=replication_factor or topic.replication_factor,
                config=dict(topic.config),
            ))
    for name, future in client.create_topics(to_create, request_timeout=timeout_s).items() if to_create else ():
        try:
            future.result()
            outcome[name] = "created"
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
            outcome[name] = "unchanged"
    grow = {}
    for topic in catalogue.topics.values():
        if topic.name in outcome:
            continue
        have = len(existing[topic.name].partitions)
        if have < topic.partitions:
            grow[topic.name] = NewPartitions(topic.partitions)
            outcome[topic.name] = f"partitions {have}->{topic.partitions}"
        elif have > topic.partitions:
            raise ValueError(
                f"topic {topic.name} has {have} partitions, the catalogue says {topic.partitions}: "
                "Kafka cannot shrink a topic; raise the catalogue's number instead"
            )
    if grow:
        for future in client.create_partitions(list(grow.values()), request_timeout=timeout_s).values():
            future.result()
    resources = [ConfigResource("topic", t.name, set_config=dict(t.config))
                 for t in catalogue.topics.values() if outcome.get(t.name) != "created" and t.config]
    if resources:
        described = client.describe_configs(resources)
        stale = []
        for resource, future in described.items():
            current = future.result()
            wanted = _wanted(catalogue, resource.name)
            if any(current.get(k) is None or current[k].value != v for k, v in wanted.items()):
                stale.append(ConfigResource("topic", resource.name, incremental_configs=[
                    _set_op(k, v) for k, v in wanted.items()
                ]))
        if stale:
            for resource, future in client.incremental_alter_configs(stale).items():
                future.result()
                outcome[resource.name] = (outcome.get(resource.name, "") + " config").strip()
    for name in catalogue.topics:
        outcome.setdefault(name, "unchanged")
    return outcome


def _wanted(catalogue: Catalogue, name: str) -> Mapping[str, str]:
    return {k: str(v) for k, v in catalogue.topics[name].config.items()}


def _set_op(key: str, value: str) -> ConfigEntry:
    return ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
