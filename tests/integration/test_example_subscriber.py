"""The outside subscriber example decodes what the services write, in both framings, without `services`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from services.common.avro import SingleObjectCodec
from services.common.settings import REPO_ROOT

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "subscriber.py"


@pytest.fixture
def private_topic(prepared):
    """A topic of this test's own, so the example reads exactly the two events the test writes."""
    admin = AdminClient({"bootstrap.servers": prepared.kafka.bootstrap})
    name = f"test.example-subscriber.{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


def test_the_example_prints_each_event_decoded_from_either_framing(prepared, private_topic):
    # Given a state change in Avro single-object encoding and a part count in the deployment's codec
    # (the Confluent wire format when the test stack runs the registry)
    press = f"acme.berlin.assembly.line1.press{uuid.uuid4().hex[:6]}"
    recorded = datetime(2026, 11, 2, 6, 0, 1, tzinfo=UTC)
    state_changed = {
        "event_id": f"{press}-000123", "occurred_at": datetime(2026, 11, 2, 6, 0, tzinfo=UTC),
        "recorded_at": recorded, "source": "edge-berlin-01", "correlation_id": None,
        "equipment_id": press, "state": "DOWN", "reason_code": "E-HYD-12",
    }
    parts_produced = {
        "event_id": f"{press}-000124", "occurred_at": datetime(2026, 11, 2, 6, 1, 30, 250000, tzinfo=UTC),
        "recorded_at": recorded, "source": "edge-berlin-01", "correlation_id": "WO-1042/10",
        "equipment_id": press, "good": 12, "reject": 1, "order_id": "WO-1042",
    }
    single_object = SingleObjectCodec(prepared.catalogue, REPO_ROOT / "schemas")
    producer = Producer({"bootstrap.servers": prepared.kafka.bootstrap, "enable.idempotence": True})
    producer.produce(private_topic, single_object.encode("MachineStateChanged", state_changed), press.encode())
    producer.produce(private_topic, prepared.codec.encode("PartsProduced", parts_produced), press.encode())
    assert producer.flush(30) == 0

    # When the example subscribes from the beginning, outside this project's packages
    command = [sys.executable, str(EXAMPLE), "--bootstrap", prepared.kafka.bootstrap, "--topic", private_topic,
               "--from-beginning", "--max-events", "2", "--timeout", "60"]
    if prepared.status["registry"]["url"]:
        command += ["--registry", prepared.status["registry"]["url"]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd="/", env=env)

    # Then it printed both events, fields intact, one JSON line each, in log order
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["event_type"] for line in lines] == ["MachineStateChanged", "PartsProduced"]
    assert [line["offset"] for line in lines] == [0, 1]
    assert {line["key"] for line in lines} == {press}
    first, second = (line["event"] for line in lines)
    assert first == {
        "event_id": f"{press}-000123", "occurred_at": "2026-11-02T06:00:00Z",
        "recorded_at": "2026-11-02T06:00:01Z", "source": "edge-berlin-01", "correlation_id": None,
        "equipment_id": press, "state": "DOWN", "reason_code": "E-HYD-12",
    }
    assert second == {
        "event_id": f"{press}-000124", "occurred_at": "2026-11-02T06:01:30.250000Z",
        "recorded_at": "2026-11-02T06:00:01Z", "source": "edge-berlin-01", "correlation_id": "WO-1042/10",
        "equipment_id": press, "good": 12, "reject": 1, "order_id": "WO-1042",
    }


def test_the_example_imports_nothing_of_this_project():
    source = EXAMPLE.read_text()
    assert "import services" not in source and "from services" not in source
