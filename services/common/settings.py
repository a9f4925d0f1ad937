"""Frozen settings read once from the environment; every service builds on these."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: must be an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: must be a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def sqlalchemy_url(url: str) -> str:
    """Turn a libpq URL into the SQLAlchemy URL of the async psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise SettingsError(f"MOM_DATABASE_URL={url!r}: must start with postgresql://")


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True, repr=False)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:19092"
    client_config: Mapping[str, str] = field(default_factory=dict)  # security settings, passed to every client

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSettings:
        extra: dict[str, str] = {}
        for name, key in (
            ("MOM_KAFKA_SECURITY_PROTOCOL", "security.protocol"),
            ("MOM_KAFKA_SASL_MECHANISM", "sasl.mechanism"),
            ("MOM_KAFKA_SASL_USERNAME", "sasl.username"),
            ("MOM_KAFKA_SASL_PASSWORD", "sasl.password"),
            ("MOM_KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
        ):
            if env.get(name):
                extra[key] = env[name]
        protocol = extra.get("security.protocol", "PLAINTEXT").upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(f"MOM_KAFKA_SECURITY_PROTOCOL={protocol!r}: must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if "security.protocol" in extra:
            extra["security.protocol"] = protocol
        if protocol.startswith("SASL_"):
            mechanism = extra.setdefault("sasl.mechanism", "SCRAM-SHA-512").upper()
            if mechanism not in SASL_MECHANISMS:
                raise SettingsError(f"MOM_KAFKA_SASL_MECHANISM={mechanism!r}: must be one of {', '.join(SASL_MECHANISMS)}")
            extra["sasl.mechanism"] = mechanism
            missing = [n for n, k in (("MOM_KAFKA_SASL_USERNAME", "sasl.username"),
                                      ("MOM_KAFKA_SASL_PASSWORD", "sasl.password")) if k not in extra]
            if missing:
                raise SettingsError(f"MOM_KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
        elif "sasl.mechanism" in extra or "sasl.username" in extra:
            raise SettingsError("MOM_KAFKA_SASL_* is set but MOM_KAFKA_SECURITY_PROTOCOL is not SASL_SSL or "
                                "SASL_PLAINTEXT: the credentials would not be used")
        return cls(bootstrap=env.get("MOM_KAFKA_BOOTSTRAP", cls.bootstrap), client_config=extra)

    def __repr__(self) -> str:  # the password never reaches a log line
        shown = {k: ("***" if k == "sasl.password" else v) for k, v in self.client_config.items()}
        return f"KafkaSettings(bootstrap={self.bootstrap!r}, client_config={shown!r})"


# The most events one batch takes when a worker works through a backlog (MOM_BATCH_MAX_EVENTS), by service.
# Execution pays a cost per touched work unit and period once per batch whatever the batch's size, so
# larger batches pay off there: 20,000 against 10,000 gave 25 % more throughput in its benchmark for
# about 30 MB more resident memory (docs/performance.md). A caught-up worker's batches are smaller anyway.
BATCH_MAX_EVENTS = {"execution": 20000}
BATCH_MAX_EVENTS_DEFAULT = 10000


@dataclass(frozen=True)
class Settings:
    """What every worker process needs; a service may extend it with its own frozen settings."""

    service: str
    kafka: KafkaSettings
    database_url: str                 # libpq form; see sqlalchemy_url()
    registry_url: str                 # empty: Avro single-object encoding, no registry
    http_host: str = "0.0.0.0"       # health, readiness and metrics; a pod's probes reach it from outside
    http_port: int = 8080
    batch_max_events: int = 10000     # most events folded into one transaction
    batch_max_wait_s: float = 0.05    # how long a batch may wait to fill up
    batch_max_idle_s: float = 0.5     # how long a lagging partition may hold the others back (see ordering.py)
    log_level: str = "INFO"
    schemas_dir: Path = REPO_ROOT / "schemas"
    group_id: str = ""                # Kafka consumer group; default mom.<service>
    session_timeout_ms: int = 10000   # how soon a dead worker's partitions move to a live one
    db_schema: str = ""               # PostgreSQL schema the service writes; default its name

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = env.get("MOM_DATABASE_URL", "postgresql://mom@127.0.0.1:15432/mom")
        sqlalchemy_url(database_url)  # validate early, with the variable's name in the message
        return cls(
            service=service,
            kafka=KafkaSettings.from_env(env),
            database_url=database_url,
            registry_url=env.get("MOM_REGISTRY_URL", ""),
            http_host=env.get("MOM_HTTP_HOST", "0.0.0.0"),
            http_port=env_int(env, "MOM_HTTP_PORT", 8080),
            batch_max_events=env_int(env, "MOM_BATCH_MAX_EVENTS", BATCH_MAX_EVENTS.get(service, BATCH_MAX_EVENTS_DEFAULT),
                                     minimum=1),
            batch_max_wait_s=env_float(env, "MOM_BATCH_MAX_WAIT_MS", 50.0) / 1000.0,
            batch_max_idle_s=env_float(env, "MOM_BATCH_MAX_IDLE_MS", 500.0) / 1000.0,
            log_level=env.get("MOM_LOG_LEVEL", "INFO").upper(),
            schemas_dir=Path(env.get("MOM_SCHEMAS_DIR", str(REPO_ROOT / "schemas"))),
            group_id=env.get("MOM_GROUP_ID", f"mom.{service}"),
            session_timeout_ms=env_int(env, "MOM_KAFKA_SESSION_TIMEOUT_MS", 10000, minimum=1000),
            db_schema=env.get("MOM_DB_SCHEMA", service),
        )
