"""The local stack manager against real processes: Kafka, PostgreSQL, Apicurio Registry."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from services.common import localstack
from services.common.localstack import SERVICE_SCHEMAS, StackConfig

pytestmark = pytest.mark.integration


def _pids(config: StackConfig) -> dict[str, int]:
    pids = {p.stem: int(p.read_text()) for p in config.run_dir.glob("*.pid")}
    pids["postgres"] = int((config.pg_dir / "data" / "postmaster.pid").read_text().splitlines()[0])
    return pids


def test_up_is_idempotent(stack: StackConfig) -> None:
    before = _pids(stack)
    t0 = time.monotonic()
    result = localstack.up(stack)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"second up() took {elapsed:.1f} s"
    assert _pids(stack) == before
    assert result["kafka"]["running"] and result["database"]["running"]


def test_status_shape(stack: StackConfig, stack_status: dict) -> None:
    s = stack_status
    assert set(s) == {"kafka", "database", "registry", "ingest", "services"}
    assert s["kafka"] == {"bootstrap": f"127.0.0.1:{stack.kafka_port}", "running": True}
    db = s["database"]
    assert db["url"] == f"postgresql://mom@127.0.0.1:{stack.pg_port}/mom"
    assert db["running"] is True
    assert db["service_urls"] == {
        svc: f"postgresql://mom_{svc}@127.0.0.1:{stack.pg_port}/mom" for svc in SERVICE_SCHEMAS
    }
    assert db["analyst_url"] == f"postgresql://mom_analyst@127.0.0.1:{stack.pg_port}/mom"
    if stack.registry_enabled:
        assert s["registry"] == {
            "url": f"http://127.0.0.1:{stack.registry_port}/apis/ccompat/v7",
            "running": True,
        }
    else:
        assert s["registry"] == {"url": None, "running": False}
    assert s["ingest"]["url"] == f"http://127.0.0.1:{stack.ingest_port}"
    assert s["ingest"]["token"] == localstack.ingest_token(stack) and len(s["ingest"]["token"]) >= 32
    assert (stack.state_dir / "ingest-token").stat().st_mode & 0o777 == 0o600
    assert isinstance(s["ingest"]["running"], bool)  # other tests may run services on this stack
    assert set(s["services"]) == set(SERVICE_SCHEMAS)
    for svc, entry in s["services"].items():
        assert entry == {"metrics": f"http://127.0.0.1:{stack.service_ports[svc]}/metrics", "running": False}
    json.dumps(s)


def test_service_env(stack: StackConfig) -> None:
    env = localstack.service_env(stack, "quality")
    assert env["MOM_KAFKA_BOOTSTRAP"] == stack.bootstrap
    assert env["MOM_DATABASE_URL"] == f"postgresql://mom_quality@127.0.0.1:{stack.pg_port}/mom"
    assert env["MOM_HTTP_PORT"] == str(stack.service_ports["quality"])
    assert env["MOM_REGISTRY_URL"] == (stack.registry_url or "")
    assert "MOM_INGEST_TOKENS" not in env
    ingest = localstack.service_env(stack, "ingest")
    assert ingest["MOM_INGEST_TOKENS"] == localstack.ingest_token(stack)
    assert ingest["MOM_HTTP_PORT"] == str(stack.ingest_port)
    with pytest.raises(ValueError):
        localstack.up(stack, services=["no-such-service"])


def test_kafka_round_trip(stack: StackConfig) -> None:
    topic = f"localstack-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    try:
        producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True, "acks": "all"})
        for i in range(3):
            producer.produce(topic, key=b"k", value=f"v{i}".encode())
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": stack.bootstrap,
                "group.id": f"{topic}-group",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
        consumer.close()
        assert got == [b"v0", b"v1", b"v2"]
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


def test_kafka_does_not_auto_create_topics(stack: StackConfig) -> None:
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    topic = f"localstack-absent-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": stack.bootstrap, "message.timeout.ms": 3000})
    producer.produce(topic, b"x")
    producer.flush(10)
    assert topic not in admin.list_topics(timeout=10).topics


def test_postgres_schemas_and_roles(stack: StackConfig, stack_status: dict) -> None:
    with psycopg.connect(stack_status["database"]["url"], autocommit=True) as conn:
        owners = dict(
            conn.execute(
                "SELECT n.nspname, r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
                "WHERE n.nspname = ANY(%s)",
                (list(SERVICE_SCHEMAS),),
            ).fetchall()
        )
        assert owners == {svc: f"mom_{svc}" for svc in SERVICE_SCHEMAS}
        for svc in SERVICE_SCHEMAS:
            assert conn.execute("SELECT has_schema_privilege('mom_analyst', %s, 'USAGE')", (svc,)).fetchone()[
                0
            ]
    # Each service role can create in its own schema.
    with psycopg.connect(stack_status["database"]["service_urls"]["execution"], autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS execution._localstack_probe (id int)")
        conn.execute("DROP TABLE execution._localstack_probe")
    # The analyst reads, never writes.
    with psycopg.connect(stack_status["database"]["analyst_url"], autocommit=True) as conn:
        for svc in SERVICE_SCHEMAS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"CREATE TABLE {svc}._analyst_probe (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public._analyst_probe (id int)")


def _http(method: str, url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/vnd.schemaregistry.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def test_registry_registers_and_fetches_avro(stack: StackConfig, stack_status: dict) -> None:
    if not stack.registry_enabled:
        pytest.skip("MOM_REGISTRY=none")
    base = stack_status["registry"]["url"]
    assert isinstance(_http("GET", f"{base}/subjects"), list)
    subject = f"localstack-test-{uuid.uuid4().hex[:8]}-value"
    schema = {
        "type": "record",
        "name": "Probe",
        "namespace": "test.localstack",
        "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "long"}],
    }
    registered = _http("POST", f"{base}/subjects/{subject}/versions", {"schema": json.dumps(schema)})
    schema_id = registered["id"]
    assert isinstance(schema_id, int)
    assert subject in _http("GET", f"{base}/subjects")
    fetched = _http("GET", f"{base}/schemas/ids/{schema_id}")
    assert json.loads(fetched["schema"]) == schema
    latest = _http("GET", f"{base}/subjects/{subject}/versions/latest")
    assert latest["id"] == schema_id and latest["subject"] == subject
    # Registering the same schema again gives the same id.
    assert (
        _http("POST", f"{base}/subjects/{subject}/versions", {"schema": json.dumps(schema)})["id"]
        == schema_id
    )
    # Stored in PostgreSQL (database `registry`), so it survives a restart.
    registry_db = stack_status["database"]["url"].rsplit("/", 1)[0] + "/registry"
    with psycopg.connect(registry_db) as conn:
        assert (
            conn.execute("SELECT count(*) FROM artifacts WHERE artifactid = %s", (subject,)).fetchone()[0]
            == 1
        )


def test_down_leaves_foreign_processes_alone(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        scratch = StackConfig.from_env(
            {
                "MOM_STATE_DIR": str(tmp_path / "state"),
                "MOM_KAFKA_PORT": "39992",
                "MOM_KAFKA_CONTROLLER_PORT": "39993",
                "MOM_PG_PORT": "39994",
                "MOM_REGISTRY_PORT": "39995",
            }
        )
        localstack.down(scratch)  # no state dir at all
        assert sleeper.poll() is None
        scratch.run_dir.mkdir(parents=True)
        localstack.down(scratch)  # an empty state dir
        assert sleeper.poll() is None
        # A pid file whose pid now belongs to someone else (a recycled pid): not ours, not touched.
        (scratch.run_dir / "kafka.pid").write_text(f"{sleeper.pid}\n")
        (scratch.run_dir / "kafka.cmdline").write_bytes(b"java\0kafka.Kafka\0/elsewhere/server.properties")
        (scratch.run_dir / "execution.pid").write_text(f"{sleeper.pid}\n")
        localstack.down(scratch)
        time.sleep(0.5)
        assert sleeper.poll() is None
        assert not (scratch.run_dir / "kafka.pid").exists()  # the stale record is dropped
    finally:
        sleeper.kill()
        sleeper.wait()
