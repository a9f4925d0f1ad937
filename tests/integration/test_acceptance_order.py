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

from services.common import kafka
from services.common.runtime import build_worker
from services.execution.app import build as build_execution
from tests.integration.conftest import start_at_end
from tests.integration.test_consumer_loop import produce, query

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


async def test_an_operation_start_waits_for_the_release_its_worker_last_fetched_the_plan_topic_without(prepared, scratch):
    # Given a worker that has read its partitions to their ends
    ends = start_at_end(prepared, scratch)
    run = uuid.uuid4().hex[:8]
    unit, order, product = f"acme.berlin.assembly.line1.press{run}", f"WO-{run}", f"P-{run}"
    plan_topic = prepared.catalogue.topic_for("ProductionOrderReleased").name
    operator_topic = prepared.catalogue.topic_for("OperationStarted").name
    plan = [TopicPartition(t, p) for (t, p) in ends if t == plan_topic]
    worker = build_worker(scratch, lambda catalogue: build_execution(scratch, catalogue))
    task = asyncio.create_task(worker.loop.run())
    try:
        await asyncio.wait_for(worker.loop.assigned.wait(), 60)
        await asyncio.sleep(2.0)  # fetches showed every partition at its end
        # and whose next fetches of the plan topic come after the records below
        worker.consumer.pause(plan)
        accepted = iter(AT + timedelta(microseconds=i) for i in range(100))
        produce(prepared, [
            {"type": "ProductDefined", "event_id": f"{run}-1", "occurred_at": AT, "recorded_at": next(accepted),
             "product_id": product, "name": "Bracket", "unit": None, "ideal_cycle_time_s": 2.0, "bom": [],
             "routing": [{"operation": "0010", "equipment_id": unit, "ideal_cycle_time_s": 1.5}]},
            {"type": "ProductionOrderReleased", "event_id": f"{run}-2", "occurred_at": AT, "recorded_at": next(accepted),
             "order_id": order, "product_id": product, "quantity": 100.0, "due_at": None},
        ])
        # When the operation's start, accepted after the release, reaches the worker first
        produce(prepared, [
            {"type": "OperationStarted", "event_id": f"{run}-3", "occurred_at": AT, "recorded_at": next(accepted),
             "order_id": order, "operation": "0010", "equipment_id": unit, "operator_id": None}])
        operator_end = sum(kafka.end_offsets(prepared.kafka, [operator_topic]).values())
        await asyncio.sleep(3.0)
        # Then the worker holds it back: the plan partitions' ends, asked for, lie past what it fetched
        assert not task.done()
        held = query(prepared, scratch.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s",
                     operator_topic)[0][0]
        assert held < operator_end, "the operation's start was taken before the release"
        # And once the release arrives, both are folded in acceptance order
        worker.consumer.resume(plan)
        deadline = time.monotonic() + 60
        while query(prepared, scratch.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s",
                    operator_topic)[0][0] < operator_end:
            assert not task.done() and time.monotonic() < deadline, "the worker did not catch up"
            await asyncio.sleep(0.2)
    finally:
        await worker.close(task)
    assert query(prepared, scratch.db_schema, "SELECT status FROM orders WHERE order_id = %s", order) == [("STARTED",)]
    assert query(prepared, scratch.db_schema, "SELECT count(*) FROM operation_state WHERE order_id = %s", order) == [(1,)]
