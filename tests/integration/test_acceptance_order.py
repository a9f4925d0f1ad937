"""The acceptance order across topics against the real broker and database.

A worker learns a partition's end from its fetch responses, and a fetch response can predate a record
accepted before one that another partition's fetch brings. Here the plan partitions are paused in the
worker's consumer: its last fetch of them predates the order's release, as it would if the broker had
read them just before the release was written. The worker holds the operation's start, accepted after
the release, and must ask for the plan partitions' ends before it takes it.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

from services.common import kafka
from services.common.catalogue import Catalogue
from services.common.runtime import build_worker
from services.execution.app import build as build_execution
from tests.integration.conftest import assert_a_replay_equals, start_at_end
from tests.integration.test_consumer_loop import produce, query

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
CATALOGUE = Catalogue.load()


PLAN_TOPIC = CATALOGUE.topic_for("ProductionOrderReleased").name
OPERATOR_TOPIC = CATALOGUE.topic_for("OperationStarted").name


def scene(prepared, scratch) -> tuple[dict[tuple[str, int], int], str, list[dict]]:
    """A scratch schema whose positions stand at the input topics' ends, an order's id, and the events to
    produce: a product routed over one unit, the order released, and its operation started, accepted in
    that order a microsecond apart (the release on the plan topic, the start on the operator topic)."""
    ends = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:8]
    unit, order, product = f"acme.berlin.assembly.line1.press{run}", f"WO-{run}", f"P-{run}"
    accepted = iter(AT + timedelta(microseconds=i) for i in range(3))
    return ends, order, [
        {"type": "ProductDefined", "event_id": f"{run}-1", "occurred_at": AT, "recorded_at": next(accepted),
         "product_id": product, "name": "Bracket", "unit": None, "ideal_cycle_time_s": 2.0, "bom": [],
         "routing": [{"operation": "0010", "equipment_id": unit, "ideal_cycle_time_s": 1.5}]},
        {"type": "ProductionOrderReleased", "event_id": f"{run}-2", "occurred_at": AT, "recorded_at": next(accepted),
         "order_id": order, "product_id": product, "quantity": 100.0, "due_at": None},
        {"type": "OperationStarted", "event_id": f"{run}-3", "occurred_at": AT, "recorded_at": next(accepted),
         "order_id": order, "operation": "0010", "equipment_id": unit, "operator_id": None}]


async def test_an_operation_start_waits_for_the_release_its_worker_last_fetched_the_plan_topic_without(prepared, scratch):
    # Given a worker that has read its partitions to their ends
    ends, order, events = scene(prepared, scratch)
    plan = [TopicPartition(t, p) for (t, p) in ends if t == PLAN_TOPIC]
    worker = build_worker(scratch, lambda catalogue: build_execution(scratch, catalogue))
    task = asyncio.create_task(worker.loop.run())
    try:
        await asyncio.wait_for(worker.loop.assigned.wait(), 60)
        await asyncio.sleep(2.0)  # fetches showed every partition at its end
        # and whose next fetches of the plan topic come after the records below
        worker.consumer.pause(plan)
        produce(prepared, events[:2])
        # When the operation's start, accepted after the release, reaches the worker first
        produce(prepared, events[2:])
        operator_end = sum(kafka.end_offsets(prepared.kafka, [OPERATOR_TOPIC]).values())
        await asyncio.sleep(3.0)
        # Then the worker holds it back: the plan partitions' ends, asked for, lie past what it fetched
        assert not task.done()
        held = query(prepared, scratch.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s",
                     OPERATOR_TOPIC)[0][0]
        assert held < operator_end, "the operation's start was taken before the release"
        # And once the release arrives, both are folded in acceptance order
        worker.consumer.resume(plan)
        deadline = time.monotonic() + 60
        while query(prepared, scratch.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s",
                    OPERATOR_TOPIC)[0][0] < operator_end:
            assert not task.done() and time.monotonic() < deadline, "the worker did not catch up"
            await asyncio.sleep(0.2)
    finally:
        await worker.close(task)
    assert query(prepared, scratch.db_schema, "SELECT status FROM orders WHERE order_id = %s", order) == [("STARTED",)]
    assert query(prepared, scratch.db_schema, "SELECT count(*) FROM operation_state WHERE order_id = %s", order) == [(1,)]


async def test_two_workers_fold_in_one_acceptance_order_whatever_their_pace(prepared, scratch):
    # Given a backlog in which an order is released, then its operation started
    ends, order, events = scene(prepared, scratch)
    produce(prepared, events)
    operator_end = sum(kafka.end_offsets(prepared.kafka, [OPERATOR_TOPIC]).values())
    # and two workers of one service splitting the partitions: one the plan topic's, one all the others
    builds = [lambda catalogue: build_execution(scratch, catalogue)] * 2
    plan_worker, other_worker = (build_worker(scratch, build) for build in builds)
    plan_worker.loop.read_only(sorted(tp for tp in ends if tp[0] == PLAN_TOPIC))
    other_worker.loop.read_only(sorted(tp for tp in ends if tp[0] != PLAN_TOPIC))

    def folded(topic: str) -> int:
        return query(prepared, scratch.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s",
                     topic)[0][0]

    # When the worker of the operation's start runs alone first
    other = asyncio.create_task(other_worker.loop.run())
    plan = None
    try:
        await asyncio.wait_for(other_worker.loop.assigned.wait(), 60)
        await asyncio.sleep(3.0)
        # Then it holds the start back: the release, accepted before it, is not folded yet
        assert not other.done()
        assert folded(OPERATOR_TOPIC) < operator_end, "the operation's start was folded before its order's release"
        assert REGISTRY.get_sample_value("mom_held_by_other_workers", {"service": "execution"}) == 1
        # And once the other worker folds the release, the start follows
        plan = asyncio.create_task(plan_worker.loop.run())
        deadline = time.monotonic() + 60
        while folded(OPERATOR_TOPIC) < operator_end:
            assert not other.done() and not plan.done() and time.monotonic() < deadline, "the workers did not catch up"
            await asyncio.sleep(0.2)
    finally:
        await other_worker.close(other)
        await plan_worker.close(plan)
    assert query(prepared, scratch.db_schema, "SELECT status FROM orders WHERE order_id = %s", order) == [("STARTED",)]
    assert query(prepared, scratch.db_schema, "SELECT count(*) FROM operation_state WHERE order_id = %s", order) == [(1,)]
    assert query(prepared, scratch.db_schema, "SELECT count(*) FROM outbox WHERE event_type = 'TransitionRefused'") == [(0,)]
    # and the tables are those a replay by one worker gives
    await assert_a_replay_equals(prepared, scratch, build_execution, scratch.db_schema, ends)
