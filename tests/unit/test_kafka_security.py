"""Kafka security settings: MOM_KAFKA_* become librdkafka properties of every client kafka.py builds."""
from __future__ import annotations

from typing import Any

import pytest

from services.common import kafka
from services.common.settings import KafkaSettings, Settings, SettingsError

SCRAM_ENV = {
    "MOM_KAFKA_BOOTSTRAP": "kafka-0.kafka:9093,kafka-1.kafka:9093",
    "MOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "MOM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "MOM_KAFKA_SASL_USERNAME": "mom-execution",
    "MOM_KAFKA_SASL_PASSWORD": "s3cret-from-a-secret",
    "MOM_KAFKA_SSL_CA_LOCATION": "/etc/mom/kafka-ca/ca.crt",
}
EXPECTED = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "mom-execution",
    "sasl.password": "s3cret-from-a-secret",
    "ssl.ca.location": "/etc/mom/kafka-ca/ca.crt",
}


def test_environment_maps_to_librdkafka_properties() -> None:
    settings = KafkaSettings.from_env(SCRAM_ENV)
    assert settings.bootstrap == SCRAM_ENV["MOM_KAFKA_BOOTSTRAP"]
    assert dict(settings.client_config) == EXPECTED


def test_worker_settings_carry_the_security_settings() -> None:
    settings = Settings.from_env("execution", {**SCRAM_ENV, "MOM_DATABASE_URL": "postgresql://u@db/mom"})
    assert dict(settings.kafka.client_config) == EXPECTED


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert dict(KafkaSettings.from_env({}).client_config) == {}


def test_sasl_defaults_to_scram_sha_512_and_names_are_case_insensitive() -> None:
    settings = KafkaSettings.from_env({"MOM_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
                                       "MOM_KAFKA_SASL_USERNAME": "u", "MOM_KAFKA_SASL_PASSWORD": "p"})
    assert settings.client_config["security.protocol"] == "SASL_PLAINTEXT"
    assert settings.client_config["sasl.mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize("env, fragment", [
    ({"MOM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "MOM_KAFKA_SECURITY_PROTOCOL='TLS'"),
    ({"MOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "MOM_KAFKA_SASL_USERNAME": "u"}, "MOM_KAFKA_SASL_PASSWORD"),
    ({"MOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "MOM_KAFKA_SASL_MECHANISM": "GSSAPI",
      "MOM_KAFKA_SASL_USERNAME": "u", "MOM_KAFKA_SASL_PASSWORD": "p"}, "MOM_KAFKA_SASL_MECHANISM='GSSAPI'"),
    ({"MOM_KAFKA_SASL_USERNAME": "u", "MOM_KAFKA_SASL_PASSWORD": "p"}, "would not be used"),
])
def test_inconsistent_security_settings_are_refused_naming_the_variable(env: dict, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        KafkaSettings.from_env(env)
    assert fragment in str(caught.value)


def test_the_password_never_appears_in_a_repr() -> None:
    settings = KafkaSettings.from_env(SCRAM_ENV)
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in repr(Settings.from_env("execution", SCRAM_ENV))


class Recorder:
    configs: list[dict[str, Any]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        Recorder.configs.append(config)

    def list_topics(self, *_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("not connected")

    def close(self) -> None:
        pass


def test_every_client_built_by_kafka_py_gets_the_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    Recorder.configs = []
    for name in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(kafka, name, Recorder)
    settings = KafkaSettings.from_env(SCRAM_ENV)
    kafka.producer(settings)
    kafka.consumer(settings, "mom.execution")
    kafka.admin(settings)
    with pytest.raises(RuntimeError):
        kafka.end_offsets(settings, ["mom.machine.events"])  # the watermark probe
    assert len(Recorder.configs) == 4
    for config in Recorder.configs:
        assert {k: config.get(k) for k in EXPECTED} == EXPECTED
        assert config["bootstrap.servers"] == SCRAM_ENV["MOM_KAFKA_BOOTSTRAP"]


def test_overrides_cannot_silently_drop_security(monkeypatch: pytest.MonkeyPatch) -> None:
    Recorder.configs = []
    monkeypatch.setattr(kafka, "Consumer", Recorder)
    kafka.consumer(KafkaSettings.from_env(SCRAM_ENV), "g", **{"session.timeout.ms": 6000})
    assert Recorder.configs[0]["security.protocol"] == "SASL_SSL"
    assert Recorder.configs[0]["session.timeout.ms"] == 6000
