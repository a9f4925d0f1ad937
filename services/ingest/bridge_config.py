"""The bridges' mapping configuration, pure: a parsed YAML document -> frozen, validated rules.

Every error names its field by path (`tags.good.kind`, `equipment[2].sparkplug.node`), and all of
them are reported at once. See docs/connectivity.md for the format.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

KINDS = ("state", "counter", "analog", "reason")
DATA_CHANGE_TRIGGERS = ("StatusValue", "StatusValueTimestamp")
STATES = ("RUNNING", "IDLE", "SETUP", "DOWN", "BLOCKED", "STARVED", "PLANNED_STOP", "MAINTENANCE", "OFFLINE")
COUNTER_FIELDS = ("good", "reject")
DEFAULT_SOURCE = "ingest-bridge"
_EQUIPMENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*\Z")


class ConfigError(ValueError):
    """The configuration is invalid; `errors` lists every problem, each naming its field."""

    def __init__(self, errors: list[str], origin: str = "bridge config") -> None:
        self.errors = errors
        super().__init__(f"{origin}: " + "; ".join(errors))


@dataclass(frozen=True, slots=True)
class TagRule:
    tag: str
    kind: str                                    # state | counter | analog | reason
    states: Mapping[str, str] = field(default_factory=dict)   # state: raw value (as text) -> state
    counter_field: str = "good"                  # counter: which count of PartsProduced
    rollover: int | None = None                  # counter: the value at which it wraps to 0
    parameter: str = ""                          # analog: ProcessValueMeasured.parameter
    unit: str | None = None                      # analog


@dataclass(frozen=True, slots=True)
class SparkplugBinding:
    group: str
    node: str
    device: str | None


@dataclass(frozen=True, slots=True)
class Equipment:
    equipment_id: str
    mqtt_topic: str                              # JSON topics: <mqtt_topic>/<tag>
    sparkplug: SparkplugBinding | None
    opcua_nodes: Mapping[str, str]               # tag -> OPC UA node id
    tags: Mapping[str, TagRule]                  # this unit's own rules (override the global ones)


@dataclass(frozen=True)
class BridgeConfig:
    source: str = DEFAULT_SOURCE
    json_topics: tuple[str, ...] = ()            # MQTT subscriptions for plain JSON
    sparkplug_groups: tuple[str, ...] = ()       # Sparkplug groups subscribed (spBv1.0/<group>/#)
    qos: int = 1
    client_id: str = "mom-ingest-bridge"
    rebirth_interval_s: float = 5.0
    opcua_publishing_interval_ms: int = 200
    opcua_data_change_trigger: str = "StatusValue"   # StatusValueTimestamp: a new source timestamp is a new reading
    tags: Mapping[str, TagRule] = field(default_factory=dict)
    equipment: tuple[Equipment, ...] = ()

    def rule(self, equipment: Equipment | None, tag: str) -> TagRule | None:
        if equipment is not None and tag in equipment.tags:
            return equipment.tags[tag]
        return self.tags.get(tag)

    def by_topic(self) -> dict[str, Equipment]:
        return {e.mqtt_topic: e for e in self.equipment}

    def by_sparkplug(self) -> dict[tuple[str, str, str | None], Equipment]:
        return {(e.sparkplug.group, e.sparkplug.node, e.sparkplug.device): e
                for e in self.equipment if e.sparkplug is not None}


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown(self, value: Mapping[str, Any], known: tuple[str, ...], path: str) -> None:
        for key in value:
            if key not in known:
                self.fail(f"{path}.{key}" if path else str(key), f"unknown field (known: {', '.join(known)})")

    def string(self, value: Any, path: str, *, required: bool = True) -> str | None:
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
            self.fail(path, f"must be a non-empty string, got {value!r}")
            return None
        return str(value)

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(path, f"must be a list of strings, got {type(value).__name__}")
            return ()
        out = []
        for index, item in enumerate(value):
            text = self.string(item, f"{path}[{index}]")
            if text is not None:
                out.append(text)
        return tuple(out)

    def number(self, value: Any, path: str, default: float, *, minimum: float = 0, integer: bool = False) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
            self.fail(path, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
            return default
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value!r}")
            return default
        return int(value) if integer else float(value)


def _rule(check: _Checker, tag: str, spec: Any, path: str) -> TagRule | None:
    spec = check.mapping(spec, path)
    kind = spec.get("kind")
    if kind not in KINDS:
        check.fail(f"{path}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        return None
    known = {"state": ("kind", "states"), "counter": ("kind", "field", "rollover"),
             "analog": ("kind", "parameter", "unit"), "reason": ("kind",)}[kind]
    check.unknown(spec, known, path)
    if kind == "state":
        states = {}
        for raw, state in check.mapping(spec.get("states"), f"{path}.states").items():
            if state not in STATES:
                check.fail(f"{path}.states.{raw}", f"must be one of {', '.join(STATES)}, got {state!r}")
            else:
                states[str(raw)] = state
        return TagRule(tag, kind, states=MappingProxyType(states))
    if kind == "counter":
        counter_field = spec.get("field", "good")
        if counter_field not in COUNTER_FIELDS:
            check.fail(f"{path}.field", f"must be one of {', '.join(COUNTER_FIELDS)}, got {counter_field!r}")
        rollover = spec.get("rollover")
        if rollover is not None:
            rollover = int(check.number(rollover, f"{path}.rollover", 0, minimum=1, integer=True)) or None
        return TagRule(tag, kind, counter_field=counter_field, rollover=rollover)
    if kind == "reason":
        return TagRule(tag, kind)
    parameter = check.string(spec.get("parameter", tag), f"{path}.parameter")
    unit = check.string(spec.get("unit"), f"{path}.unit", required=False)
    return TagRule(tag, kind, parameter=parameter or tag, unit=unit)


def _rules(check: _Checker, value: Any, path: str) -> dict[str, TagRule]:
    rules = {}
    for tag, spec in check.mapping(value, path).items():
        rule = _rule(check, str(tag), spec, f"{path}.{tag}")
        if rule is not None:
            rules[str(tag)] = rule
    return rules


def _equipment(check: _Checker, index: int, spec: Any) -> Equipment | None:
    path = f"equipment[{index}]"
    spec = check.mapping(spec, path)
    check.unknown(spec, ("id", "mqtt_topic", "sparkplug", "opcua_nodes", "tags"), path)
    equipment_id = check.string(spec.get("id"), f"{path}.id")
    if equipment_id is not None and not _EQUIPMENT_ID.match(equipment_id):
        check.fail(f"{path}.id", f"must be a dotted ISA-95 equipment id like acme.berlin.assembly.line1.press07, "
                                 f"got {equipment_id!r}")
    topic = check.string(spec.get("mqtt_topic"), f"{path}.mqtt_topic", required=False)
    if topic is not None and any(c in topic for c in "+#"):
        check.fail(f"{path}.mqtt_topic", f"must be a topic without wildcards, got {topic!r}")
    binding = None
    if spec.get("sparkplug") is not None:
        sp = check.mapping(spec["sparkplug"], f"{path}.sparkplug")
        check.unknown(sp, ("group", "node", "device"), f"{path}.sparkplug")
        group = check.string(sp.get("group"), f"{path}.sparkplug.group")
        node = check.string(sp.get("node"), f"{path}.sparkplug.node")
        device = check.string(sp.get("device"), f"{path}.sparkplug.device", required=False)
        if group and node:
            binding = SparkplugBinding(group, node, device)
    nodes = {}
    for tag, node_id in check.mapping(spec.get("opcua_nodes"), f"{path}.opcua_nodes").items():
        text = check.string(node_id, f"{path}.opcua_nodes.{tag}")
        if text is not None:
            nodes[str(tag)] = text
    tags = _rules(check, spec.get("tags"), f"{path}.tags")
    if equipment_id is None:
        return None
    return Equipment(equipment_id, topic or equipment_id.replace(".", "/"), binding,
                     MappingProxyType(nodes), MappingProxyType(tags))


def parse(document: Any, origin: str = "bridge config") -> BridgeConfig:
    """Validate a parsed YAML/JSON document; ConfigError lists every problem with its field path."""
    check = _Checker()
    root = check.mapping(document, "(root)")
    check.unknown(root, ("source", "mqtt", "opcua", "tags", "equipment"), "")
    mqtt = check.mapping(root.get("mqtt"), "mqtt")
    check.unknown(mqtt, ("json_topics", "sparkplug_groups", "qos", "client_id", "rebirth_interval_s"), "mqtt")
    opcua = check.mapping(root.get("opcua"), "opcua")
    check.unknown(opcua, ("publishing_interval_ms", "data_change_trigger"), "opcua")
    trigger = opcua.get("data_change_trigger", "StatusValue")
    if trigger not in DATA_CHANGE_TRIGGERS:
        check.fail("opcua.data_change_trigger", f"must be one of {', '.join(DATA_CHANGE_TRIGGERS)}, got {trigger!r}")
    qos = int(check.number(mqtt.get("qos"), "mqtt.qos", 1, integer=True))
    if qos not in (0, 1, 2):
        check.fail("mqtt.qos", f"must be 0, 1 or 2, got {qos}")
    equipment_specs = root.get("equipment") or []
    if not isinstance(equipment_specs, list):
        check.fail("equipment", f"must be a list, got {type(equipment_specs).__name__}")
        equipment_specs = []
    equipment = []
    seen: set[str] = set()
    global_tags = root.get("tags") if isinstance(root.get("tags"), Mapping) else {}
    for index, spec in enumerate(equipment_specs):
        unit = _equipment(check, index, spec)
        if unit is None:
            continue
        if unit.equipment_id in seen:
            check.fail(f"equipment[{index}].id", f"{unit.equipment_id} is listed twice")
        seen.add(unit.equipment_id)
        for tag in unit.opcua_nodes:
            if tag not in unit.tags and tag not in global_tags:
                check.fail(f"equipment[{index}].opcua_nodes.{tag}", "has no rule in tags or equipment tags")
        equipment.append(unit)
    config = BridgeConfig(
        source=check.string(root.get("source", DEFAULT_SOURCE), "source") or DEFAULT_SOURCE,
        json_topics=check.strings(mqtt.get("json_topics"), "mqtt.json_topics"),
        sparkplug_groups=check.strings(mqtt.get("sparkplug_groups"), "mqtt.sparkplug_groups"),
        qos=qos,
        client_id=check.string(mqtt.get("client_id", "mom-ingest-bridge"), "mqtt.client_id") or "mom-ingest-bridge",
        rebirth_interval_s=check.number(mqtt.get("rebirth_interval_s"), "mqtt.rebirth_interval_s", 5.0),
        opcua_publishing_interval_ms=int(check.number(opcua.get("publishing_interval_ms"),
                                                      "opcua.publishing_interval_ms", 200, minimum=10, integer=True)),
        opcua_data_change_trigger=trigger if trigger in DATA_CHANGE_TRIGGERS else "StatusValue",
        tags=MappingProxyType(_rules(check, root.get("tags"), "tags")),
        equipment=tuple(equipment),
    )
    if check.errors:
        raise ConfigError(check.errors, origin)
    return config
