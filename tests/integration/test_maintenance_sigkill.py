"""PreventiveMaintenanceDue is published exactly once per threshold, though the worker is killed with
SIGKILL just before and just after the crossing (model: the SIGKILL test of the consumer loop)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.test_consumer_loop import produce, query, read_topic
from tests.integration.test_maintenance_domain import maintenance_scratch, start_at_end  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, tzinfo=UTC)
HOURS = 4000          # closed hours reported, 2 s of runtime each
RUNTIME_S = 2.0       # so the 1-hour plan falls due at the 1800th and the 3600th report


def reports(unit: str) -> list[dict]:
    events = [{"type": "MaintenancePlanDefined", "event_id": f"{unit}-plan", "occurred_at": T0 - timedelta(hours=1),
               "plan_id": f"MP-{unit}", "equipment_id": unit, "task": "Change hydraulic filter",
               "trigger": {"kind": "runtime_hours", "interval_s": None, "hours": 1.0, "cycles": None}}]
    for i in range(HOURS):
        start = T0 + timedelta(hours=i)
        events.append({"type": "RuntimeAccumulated", "event_id": f"{unit}:runtime:{i}", "occurred_at": start + timedelta(hours=1),
                       "equipment_id": unit, "period_start": start, "period_end": start + timedelta(hours=1),
                       "runtime_s": RUNTIME_S, "cycles": 1, "total_runtime_s": RUNTIME_S * (i + 1), "total_cycles": i + 1})
    return events


def worker_env(prepared, settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "MOM_KAFKA_BOOTSTRAP": prepared.kafka.bootstrap, "MOM_DATABASE_URL": settings.database_url,
            "MOM_REGISTRY_URL": settings.registry_url, "MOM_HTTP_PORT": "0", "MOM_HTTP_HOST": "127.0.0.1",
            "MOM_GROUP_ID": settings.group_id, "MOM_DB_SCHEMA": settings.db_schema, "MOM_BATCH_MAX_EVENTS": "40",
            **extra}


def test_a_due_is_published_exactly_once_across_sigkills_around_its_crossing(prepared, maintenance_scratch):  # noqa: F811
    settings = maintenance_scratch
    start = start_at_end(prepared, settings)
    unit = f"acme.berlin.assembly.line1.press{uuid.uuid4().hex[:8]}"
    produce(prepared, reports(unit))
    topic = prepared.catalogue.topic_for("RuntimeAccumulated").name
    env = worker_env(prepared, settings)
    begun = sum(o for (t, _), o in start.items() if t == topic)

    def processed() -> int:
        rows = query(prepared, settings.db_schema, "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE topic = %s", topic)
        return rows[0][0] - begun

    def dues() -> int:
        return query(prepared, settings.db_schema, "SELECT count(*) FROM pm_dues WHERE plan_id = %s", f"MP-{unit}")[0][0]

    def run_until(done, timeout_s: float = 60.0) -> None:
        worker = subprocess.Popen([sys.executable, "-m", "services.maintenance"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            while not done():
                assert time.monotonic() < deadline and worker.poll() is None, "the worker made no progress"
                time.sleep(0.01)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()

    # When the worker is killed just before the first crossing (the 1800th report) ...
    run_until(lambda: processed() >= 1700)
    assert processed() < 1800 and dues() == 0, "the kill came too late to prove anything"
    # ... and just after it, before or while the outbox relay publishes
    run_until(lambda: dues() >= 1)
    assert processed() < HOURS
    # And then runs to the end
    run_until(lambda: processed() >= HOURS and dues() >= 2)
    worker = subprocess.Popen([sys.executable, "-m", "services.maintenance"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # a last clean run lets the relay drain what the last kill left in the outbox
        deadline = time.monotonic() + 60
        while query(prepared, settings.db_schema, "SELECT count(*) FROM outbox")[0][0]:
            assert time.monotonic() < deadline and worker.poll() is None, "the outbox was not drained"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(30)
    # Then each threshold's PreventiveMaintenanceDue is on the topic exactly once
    published = [i for i in read_topic(prepared, prepared.catalogue.topic_for("PreventiveMaintenanceDue").name, unit)
                 if ":due:" in i]
    assert published == [f"MP-{unit}:r1:due:1", f"MP-{unit}:r1:due:2"]
    assert query(prepared, settings.db_schema, "SELECT due_index, due_runtime_h FROM pm_dues WHERE plan_id = %s ORDER BY 1",
                 f"MP-{unit}") == [(1, 1.0), (2, 2.0)]


def test_a_kill_after_the_relay_transaction_committed_and_before_the_delete_sends_nothing_again(
        prepared, maintenance_scratch):  # noqa: F811
    settings = maintenance_scratch
    start_at_end(prepared, settings)
    unit = f"acme.berlin.assembly.line1.press{uuid.uuid4().hex[:8]}"
    produce(prepared, reports(unit)[:1900])  # the plan and 1,899 reports: the first due and no second

    def outbox() -> int:
        return query(prepared, settings.db_schema, "SELECT count(*) FROM outbox")[0][0]

    # The worker kills itself right after its relay's first Kafka transaction committed
    hooked = subprocess.run([sys.executable, "-m", "services.maintenance"], timeout=180,
                            env=worker_env(prepared, settings, MOM_FAULT_KILL_AFTER_PUBLISH="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert hooked.returncode == -signal.SIGKILL
    left = outbox()
    assert left >= 1, "the kill came before the transaction: nothing to prove"
    worker = subprocess.Popen([sys.executable, "-m", "services.maintenance"], env=worker_env(prepared, settings),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the next leader finds the published rows by the transaction's marker and deletes them
        deadline = time.monotonic() + 60
        while outbox():
            assert time.monotonic() < deadline and worker.poll() is None, "the outbox was not emptied"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(30)
    topic = prepared.catalogue.topic_for("PreventiveMaintenanceDue").name
    published = read_topic(prepared, topic, unit)
    assert len(published) == len(set(published)), "an event went out twice"
    assert [i for i in published if ":due:" in i] == [f"MP-{unit}:r1:due:1"]
