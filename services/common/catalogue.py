"""The event catalogue: topics from schemas/topics.yaml and event schemas from schemas/<context>/*.avsc."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMAS_DIR = REPO_ROOT / "schemas"
TOPICS_FILE = "topics.yaml"
ENVELOPE_CONTEXT = "common"
RELEASED_DIR = "released"  # snapshots of the last release (services/common/compat.py); not current schemas
NAMESPACE_PREFIX = "mom."

_TOPIC_FIELDS = ("writer", "doc", "partitions", "replication_factor", "config", "key", "events")


class CatalogueError(ValueError):
    """The catalogue is inconsistent, or a lookup names something it does not hold."""


@dataclass(frozen=True)
class Topic:
    name: str
    writer: str
    doc: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]
    key: str | Mapping[str, str]
    events: tuple[str, ...]

    def key_field(self, event_type: str) -> str:
        """The field of `event_type` whose value is the Kafka key on this topic."""
        if isinstance(self.key, str):
            return self.key
        try:
            return self.key[event_type]
        except KeyError:
            raise CatalogueError(f"topic {self.name} has no key for event type {event_type!r}") from None


@dataclass(frozen=True)
class Catalogue:
    topics: Mapping[str, Topic]
    schemas: Mapping[str, dict]  # event type -> the raw schema JSON
    envelope: dict = field(default_factory=dict)  # schemas/common/Envelope.avsc
    schema_paths: Mapping[str, Path] = field(default_factory=dict)  # event type -> its .avsc file
    _topic_of: dict[str, Topic] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # the first topic that lists an event type carries it
        topic_of: dict[str, Topic] = {}
        for topic in self.topics.values():
            for event_type in topic.events:
                topic_of.setdefault(event_type, topic)
        object.__setattr__(self, "_topic_of", topic_of)

    @classmethod
    def load(cls, root: Path | None = None) -> Catalogue:
        """Read and cross-check a schemas directory (default: the repository's `schemas/`)."""
        root = Path(root) if root is not None else DEFAULT_SCHEMAS_DIR
        schemas, paths, envelope = _load_schemas(root)
        topics = _load_topics(root / TOPICS_FILE)
        _check(topics, schemas)
        return cls(
            topics=MappingProxyType(topics),
            schemas=MappingProxyType(schemas),
            envelope=envelope,
            schema_paths=MappingProxyType(paths),
        )

    def topic_for(self, event_type: str) -> Topic:
        topic = self._topic_of.get(event_type)
        if topic is None:
            raise CatalogueError(f"event type {event_type!r} is on no topic of the catalogue")
        return topic

    def written_by(self, service: str) -> tuple[Topic, ...]:
        return tuple(topic for topic in self.topics.values() if topic.writer == service)

    def key_for(self, event_type: str, record: Mapping) -> str:
        """The Kafka key of `record`, an event of type `event_type`."""
        key_field = self.topic_for(event_type).key_field(event_type)
        value = record.get(key_field)
        if not isinstance(value, str):
            raise CatalogueError(
                f"{event_type}.{key_field} is the key and must be a string, got {type(value).__name__}"
            )
        return value

    @property
    def event_types(self) -> tuple[str, ...]:
        """Every catalogued event type, in topic order."""
        return tuple(event for topic in self.topics.values() for event in topic.events)


def _load_schemas(root: Path) -> tuple[dict[str, dict], dict[str, Path], dict]:
    if not root.is_dir():
        raise CatalogueError(f"schemas directory {root} does not exist")
    schemas: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    envelope: dict = {}
    for path in sorted(root.glob("*/*.avsc")):
        context = path.parent.name
        if context == RELEASED_DIR:
            continue
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogueError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise CatalogueError(f"{path}: the top level must be an Avro record")
        name = schema.get("name")
        if name != path.stem:
            raise CatalogueError(f"{path}: record name {name!r} differs from the file name {path.stem!r}")
        if schema.get("namespace") != NAMESPACE_PREFIX + context:
            raise CatalogueError(
                f"{path}: namespace {schema.get('namespace')!r} must be {NAMESPACE_PREFIX + context!r}"
            )
        if context == ENVELOPE_CONTEXT:
            if name == "Envelope":
                envelope = schema
                continue
            raise CatalogueError(f"{path}: the {ENVELOPE_CONTEXT} context holds only Envelope.avsc")
        if name in schemas:
            raise CatalogueError(f"event type {name} has two schemas: {paths[name]} and {path}")
        schemas[name] = schema
        paths[name] = path
    return schemas, paths, envelope


def _load_topics(path: Path) -> dict[str, Topic]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("topics"), dict):
        raise CatalogueError(f"{path}: expected a mapping with a 'topics' mapping")
    return {name: _topic(name, spec) for name, spec in document["topics"].items()}


def _topic(name: Any, spec: Any) -> Topic:
    if not isinstance(name, str) or not name:
        raise CatalogueError(f"topic name {name!r} must be a non-empty string")
    if not isinstance(spec, dict):
        raise CatalogueError(f"topic {name}: expected a mapping")
    missing = [key for key in _TOPIC_FIELDS if key not in spec]
    unknown = sorted(set(spec) - set(_TOPIC_FIELDS))
    if missing or unknown:
        raise CatalogueError(f"topic {name}: missing {missing}, unknown {unknown}")
    for attribute in ("writer", "doc"):
        if not isinstance(spec[attribute], str) or not spec[attribute].strip():
            raise CatalogueError(f"topic {name}: {attribute} must be a non-empty string")
    for attribute in ("partitions", "replication_factor"):
        value = spec[attribute]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CatalogueError(f"topic {name}: {attribute} must be a positive integer, got {value!r}")
    config = spec["config"]
    if not isinstance(config, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in config.items()
    ):
        raise CatalogueError(f"topic {name}: config must map names to string values (quote numbers)")
    events = spec["events"]
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise CatalogueError(f"topic {name}: events must be a list of event type names")
    if len(set(events)) != len(events):
        raise CatalogueError(f"topic {name}: an event type is listed twice")
    key = spec["key"]
    if isinstance(key, dict):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in key.items()):
            raise CatalogueError(f"topic {name}: key mapping must map event types to field names")
        if set(key) != set(events):
            raise CatalogueError(
                f"topic {name}: key mapping must name exactly the topic's events; "
                f"missing {sorted(set(events) - set(key))}, extra {sorted(set(key) - set(events))}"
            )
        key = MappingProxyType(dict(key))
    elif not isinstance(key, str) or not key:
        raise CatalogueError(f"topic {name}: key must be a field name or a mapping event type -> field name")
    return Topic(
        name=name,
        writer=spec["writer"],
        doc=" ".join(spec["doc"].split()),
        partitions=spec["partitions"],
        replication_factor=spec["replication_factor"],
        config=MappingProxyType(dict(config)),
        key=key,
        events=tuple(events),
    )


def _check(topics: Mapping[str, Topic], schemas: Mapping[str, dict]) -> None:
    home: dict[str, str] = {}
    for topic in topics.values():
        for event_type in topic.events:
            if event_type in home:
                raise CatalogueError(f"event type {event_type} is on two topics: {home[event_type]} and {topic.name}")
            home[event_type] = topic.name
            if event_type not in schemas:
                raise CatalogueError(
                    f"topic {topic.name} lists unknown event type {event_type}: no schemas/<context>/{event_type}.avsc"
                )
            _check_key_field(topic, event_type, schemas[event_type])
    orphans = sorted(set(schemas) - set(home))
    if orphans:
        raise CatalogueError(f"schemas for event types on no topic: {', '.join(orphans)}")


def _check_key_field(topic: Topic, event_type: str, schema: dict) -> None:
    key_field = topic.key_field(event_type)
    fields = {f.get("name"): f for f in schema.get("fields", [])}
    if key_field not in fields:
        raise CatalogueError(f"topic {topic.name}: key field {key_field!r} is not a field of {event_type}")
    if fields[key_field].get("type") != "string":
        raise CatalogueError(
            f"topic {topic.name}: key field {event_type}.{key_field} must be a required string, "
            f"is {json.dumps(fields[key_field].get('type'))}"
        )
