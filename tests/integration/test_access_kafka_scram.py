"""Kafka access control against a real broker that only speaks SASL/SCRAM-SHA-512.

A second, separate single-node KRaft broker (the project's own Kafka jars, as `mom up` runs them)
is started for this module with one SASL_PLAINTEXT listener. Its SCRAM users are written into the
storage when it is formatted (`kafka-storage format --add-scram`), with passwords made up here, so
no secret is kept anywhere. Every client comes from services/common/kafka.py, configured by the
MOM_KAFKA_* variables as a deployment sets them: with the right credentials the admin client creates
the catalogue's topics and a producer and a consumer exchange a message; without credentials, or
with a wrong password, the broker refuses the client.

Ports: MOM_SCRAM_KAFKA_PORT (29192) and MOM_SCRAM_CONTROLLER_PORT (29193).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import string
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaException

from services.common import kafka, localstack
from services.common.catalogue import Catalogue
from services.common.settings import KafkaSettings

pytestmark = pytest.mark.integration

NAME = "kafka-scram"
MECHANISM = "SCRAM-SHA-512"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ScramBroker:
    bootstrap: str
    username: str
    password: str

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "MOM_KAFKA_BOOTSTRAP": self.bootstrap,
            "MOM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "MOM_KAFKA_SASL_MECHANISM": MECHANISM,
            "MOM_KAFKA_SASL_USERNAME": self.username,
            "MOM_KAFKA_SASL_PASSWORD": self.password,
        }
        env.update(overrides)
        return {k: v for k, v in env.items() if v}


def _properties(template: str, port: int, controller_port: int, data: str, admin_password: str) -> str:
    """The project's broker template, with its PLAINTEXT client listener swapped for SASL_PLAINTEXT."""
    text = string.Template(template).substitute(kafka_port=port, controller_port=controller_port, log_dirs=data)
    replaced = {
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
    }
    for key, value in replaced.items():
        text, count = re.subn(rf"^{re.escape(key)}=.*$", f"{key}={value}", text, flags=re.M)
        assert count == 1, f"{key} not found once in the broker template"
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" '
            f'password="{admin_password}";')
    return text + "\n".join([
        "",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}",
        "",
    ])


@pytest.fixture(scope="module")
def scram_broker(stack: localstack.StackConfig) -> Iterator[ScramBroker]:
    base = stack  # its Kafka classpath (resolved once by Maven) and its state dir
    port = int(os.environ.get("MOM_SCRAM_KAFKA_PORT") or 29192)
    controller_port = int(os.environ.get("MOM_SCRAM_CONTROLLER_PORT") or 29193)
    config = localstack.StackConfig(state_dir=base.state_dir / "scram", kafka_port=port,
                                    controller_port=controller_port, registry_enabled=False)
    localstack._ensure_dirs(config)
    localstack._stop_all(config, [NAME], localstack.KAFKA_STOP_GRACE)  # a broker left by an interrupted run
    kdir = config.state_dir / "kafka"
    if kdir.exists():
        subprocess.run(["rm", "-rf", str(kdir)], check=True)
    data, klogs = kdir / "data", kdir / "logs"
    for folder in (data, klogs):
        folder.mkdir(parents=True)
    localstack._require_free(port, "the SCRAM test broker")
    localstack._require_free(controller_port, "the SCRAM test broker's controller")
    admin_password, user_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    user = "mom-service"
    classpath = os.pathsep.join(localstack._maven_resolve(
        localstack.DEPLOY_DIR / "kafka" / "pom.xml", base.state_dir / "kafka", "classpath"))
    props = kdir / "server.properties"
    props.write_text(_properties((localstack.DEPLOY_DIR / "kafka" / "server.properties.template").read_text(),
                                 port, controller_port, str(data), admin_password))
    java = localstack._java()
    jvm = [f"-Dlog4j2.configurationFile={localstack.DEPLOY_DIR / 'kafka' / 'log4j2.yaml'}",
           f"-Dkafka.logs.dir={klogs}", "-Djava.awt.headless=true", f"-Dmom.state={config.state_dir}"]
    cluster_id = localstack.random_cluster_id()
    formatted = subprocess.run(
        [java, "-Xmx256m", *jvm, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
         "-t", cluster_id, "-c", str(props),
         "--add-scram", f"{MECHANISM}=[name=admin,password={admin_password}]",
         "--add-scram", f"{MECHANISM}=[name={user},password={user_password}]"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    localstack._spawn(config, NAME, [java, "-Xmx384m", "-Xms128m", "-XX:+UseG1GC", *jvm, "-cp", classpath,
                                     "kafka.Kafka", str(props)], env=os.environ, cwd=kdir)
    broker = ScramBroker(f"127.0.0.1:{port}", user, user_password)
    try:
        _wait_ready(config, broker, klogs / "server.log")
        yield broker
    finally:
        localstack._stop_all(config, [NAME], localstack.KAFKA_STOP_GRACE)


def _wait_ready(config: localstack.StackConfig, broker: ScramBroker, server_log) -> None:
    client = kafka.admin(KafkaSettings.from_env(broker.env()))
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if localstack._our_pid(config, NAME) is None:
            pytest.fail(f"the SCRAM broker exited:\n{localstack._tail(server_log)}")
        try:
            client.list_topics(timeout=3)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.5)
    pytest.fail(f"the SCRAM broker did not answer in {START_TIMEOUT_S:.0f} s: {last}\n{localstack._tail(server_log)}")


def _quiet() -> logging.Logger:
    logger = logging.getLogger("tests.scram.librdkafka")
    logger.setLevel(logging.CRITICAL)
    return logger


def test_clients_with_credentials_create_topics_produce_and_consume(scram_broker: ScramBroker) -> None:
    settings = KafkaSettings.from_env(scram_broker.env())
    assert settings.client_config["security.protocol"] == "SASL_PLAINTEXT"
    catalogue = Catalogue.load()
    outcome = kafka.apply_topics(settings, catalogue)  # the admin client of `mom topics apply`
    assert set(outcome) == set(catalogue.topics)
    assert kafka.apply_topics(settings, catalogue) == {name: "unchanged" for name in catalogue.topics}

    topic = next(iter(catalogue.topics))
    key = f"scram-{uuid.uuid4().hex}"
    producer = kafka.producer(settings)
    delivered: list[object] = []
    producer.produce(topic, b"hello", key, on_delivery=lambda err, msg: delivered.append(err or msg))
    assert producer.flush(30) == 0
    assert len(delivered) == 1 and not isinstance(delivered[0], Exception) and delivered[0].error() is None
    partition, offset = delivered[0].partition(), delivered[0].offset()

    ends = kafka.end_offsets(settings, [topic])
    assert ends[(topic, partition)] >= offset + 1

    consumer = kafka.consumer(settings, f"test.scram.{uuid.uuid4().hex[:8]}")
    try:
        from confluent_kafka import TopicPartition
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 30
        got = None
        while got is None and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                got = message
        assert got is not None and got.key() == key.encode() and got.value() == b"hello"
    finally:
        consumer.close()


def test_client_without_credentials_is_refused(scram_broker: ScramBroker) -> None:
    settings = KafkaSettings.from_env({"MOM_KAFKA_BOOTSTRAP": scram_broker.bootstrap})
    assert "security.protocol" not in settings.client_config
    client = kafka.admin(settings)
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    producer = kafka.producer(settings, **{"message.timeout.ms": 3000, "logger": _quiet()})
    errors: list[object] = []
    producer.produce("mom.machine.events", b"x", "k", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert len(errors) == 1 and errors[0] is not None, "a message got through without credentials"


def test_client_with_a_wrong_password_is_refused_as_such(scram_broker: ScramBroker) -> None:
    reported: list[str] = []
    settings = KafkaSettings.from_env(scram_broker.env(MOM_KAFKA_SASL_PASSWORD="not-the-password"))
    client = kafka.admin(KafkaSettings(settings.bootstrap, {
        **settings.client_config, "error_cb": lambda err: reported.append(str(err)), "logger": _quiet()}))
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    deadline = time.monotonic() + 10
    while not reported and time.monotonic() < deadline:
        client.poll(0.5)  # error_cb is served by poll()
    assert any("Authentication failed" in message or "SASL" in message for message in reported), reported
