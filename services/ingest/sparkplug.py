"""Sparkplug B, pure: the protobuf wire format of its Payload, its topics, and a host application's view
of the edge nodes (births, deaths, sequence numbers, rebirth requests).

No I/O, no clock, stdlib only. The codec is hand-written for the subset of `sparkplug_b.proto` a host
needs (Payload.timestamp/metrics/seq/uuid/body; Metric.name/alias/timestamp/datatype/is_historical/
is_transient/is_null and the scalar value fields); any other field (metadata, properties, datasets,
templates) is skipped by its wire type, as protobuf requires. tests/unit/test_sparkplug.py checks the
codec against the protobuf runtime built from the same .proto description.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "spBv1.0"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"

# Sparkplug B DataType enumeration (the scalar ones)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID, BYTES = 9, 10, 11, 12, 13, 14, 15, 17
_INT_VALUE_TYPES = {INT8: 8, INT16: 16, INT32: 32, UINT8: 0, UINT16: 0, UINT32: 0}
_LONG_VALUE_TYPES = {INT64: 64, UINT64: 0, DATETIME: 0}
_STRING_TYPES = (STRING, TEXT, UUID)

MESSAGE_TYPES = ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD", "STATE")


class SparkplugError(ValueError):
    """A payload or topic that is not valid Sparkplug B."""


# --------------------------------------------------------------------------------------------
# The protobuf wire format


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise SparkplugError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise SparkplugError("varint longer than 10 bytes")


def _write_varint(value: int, out: bytearray) -> None:
    if value < 0:
        value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _fields(data: bytes) -> Iterable[tuple[int, int, Any]]:
    """(field number, wire type, raw value) of each field of a message: ints for varints and fixed
    widths, bytes for length-delimited fields. Unknown wire types are an error."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise SparkplugError("field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise SparkplugError("truncated 64-bit field")
            value = data[pos:pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > end:
                raise SparkplugError(f"field {number} claims {length} bytes, {end - pos} remain")
            value = data[pos:pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise SparkplugError("truncated 32-bit field")
            value = data[pos:pos + 4]
            pos += 4
        else:
            raise SparkplugError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None      # epoch milliseconds
    datatype: int | None = None
    value: Any = None                 # int, float, bool, str or bytes; None when is_null or absent
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp: int | None = None      # epoch milliseconds
    metrics: tuple[Metric, ...] = ()
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)


def _decode_metric(data: bytes) -> Metric:
    attrs: dict[str, Any] = {}
    raw_value: tuple[int, Any] | None = None
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            attrs["name"] = value.decode("utf-8", "replace")
        elif number == 2 and wire == 0:
            attrs["alias"] = value
        elif number == 3 and wire == 0:
            attrs["timestamp"] = value
        elif number == 4 and wire == 0:
            attrs["datatype"] = value
        elif number == 5 and wire == 0:
            attrs["is_historical"] = bool(value)
        elif number == 6 and wire == 0:
            attrs["is_transient"] = bool(value)
        elif number == 7 and wire == 0:
            attrs["is_null"] = bool(value)
        elif 10 <= number <= 16:
            raw_value = (number, value)
    if raw_value is not None and not attrs.get("is_null"):
        attrs["value"] = _metric_value(raw_value[0], raw_value[1], attrs.get("datatype"))
    return Metric(**attrs)


def _metric_value(number: int, raw: Any, datatype: int | None) -> Any:
    if number == 10:  # int_value (uint32): Int8/16/32 are two's complement in it
        bits = _INT_VALUE_TYPES.get(datatype or 0, 0)
        return _signed(raw, bits) if bits else raw & 0xFFFFFFFF
    if number == 11:  # long_value (uint64)
        bits = _LONG_VALUE_TYPES.get(datatype or 0, 0)
        return _signed(raw, bits) if bits else raw
    if number == 12:
        return struct.unpack("<f", raw)[0]
    if number == 13:
        return struct.unpack("<d", raw)[0]
    if number == 14:
        return bool(raw)
    if number == 15:
        return raw.decode("utf-8", "replace")
    return bytes(raw)  # 16: bytes_value


def decode(data: bytes) -> Payload:
    """A Sparkplug B Payload from its protobuf bytes; SparkplugError when malformed."""
    attrs: dict[str, Any] = {}
    metrics = []
    for number, wire, value in _fields(bytes(data)):
        if number == 1 and wire == 0:
            attrs["timestamp"] = value
        elif number == 2 and wire == 2:
            metrics.append(_decode_metric(value))
        elif number == 3 and wire == 0:
            attrs["seq"] = value
        elif number == 4 and wire == 2:
            attrs["uuid"] = value.decode("utf-8", "replace")
        elif number == 5 and wire == 2:
            attrs["body"] = bytes(value)
    return Payload(metrics=tuple(metrics), **attrs)


def _key(number: int, wire: int, out: bytearray) -> None:
    _write_varint((number << 3) | wire, out)


def _bytes_field(number: int, value: bytes, out: bytearray) -> None:
    _key(number, 2, out)
    _write_varint(len(value), out)
    out += value


def _infer_datatype(value: Any) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if isinstance(value, (bytes, bytearray)):
        return BYTES
    raise SparkplugError(f"no Sparkplug datatype for {type(value).__name__}")


def _encode_metric(metric: Metric) -> bytes:
    out = bytearray()
    if metric.name is not None:
        _bytes_field(1, metric.name.encode(), out)
    if metric.alias is not None:
        _key(2, 0, out)
        _write_varint(metric.alias, out)
    if metric.timestamp is not None:
        _key(3, 0, out)
        _write_varint(metric.timestamp, out)
    datatype = metric.datatype
    if datatype is None and metric.value is not None:
        datatype = _infer_datatype(metric.value)
    if datatype is not None:
        _key(4, 0, out)
        _write_varint(datatype, out)
    if metric.is_historical:
        _key(5, 0, out)
        _write_varint(1, out)
    if metric.is_transient:
        _key(6, 0, out)
        _write_varint(1, out)
    if metric.is_null or metric.value is None:
        _key(7, 0, out)
        _write_varint(1, out)
        return bytes(out)
    value = metric.value
    if datatype in _INT_VALUE_TYPES:
        _key(10, 0, out)
        _write_varint(int(value) & 0xFFFFFFFF, out)
    elif datatype in _LONG_VALUE_TYPES:
        _key(11, 0, out)
        _write_varint(int(value) & 0xFFFFFFFFFFFFFFFF, out)
    elif datatype == FLOAT:
        _key(12, 5, out)
        out += struct.pack("<f", float(value))
    elif datatype == DOUBLE:
        _key(13, 1, out)
        out += struct.pack("<d", float(value))
    elif datatype == BOOLEAN:
        _key(14, 0, out)
        _write_varint(1 if value else 0, out)
    elif datatype in _STRING_TYPES:
        _bytes_field(15, str(value).encode(), out)
    elif datatype == BYTES:
        _bytes_field(16, bytes(value), out)
    else:
        raise SparkplugError(f"datatype {datatype} is not encoded here")
    return bytes(out)


def encode(payload: Payload) -> bytes:
    """The protobuf bytes of a Payload (what an edge node publishes; also the bridge's NCMD)."""
    out = bytearray()
    if payload.timestamp is not None:
        _key(1, 0, out)
        _write_varint(payload.timestamp, out)
    for metric in payload.metrics:
        _bytes_field(2, _encode_metric(metric), out)
    if payload.seq is not None:
        _key(3, 0, out)
        _write_varint(payload.seq, out)
    if payload.uuid is not None:
        _bytes_field(4, payload.uuid.encode(), out)
    if payload.body is not None:
        _bytes_field(5, payload.body, out)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Topics


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    message_type: str
    node: str
    device: str | None = None


def parse_topic(topic: str) -> Topic:
    """`spBv1.0/<group>/<type>/<node>[/<device>]`; SparkplugError for anything else."""
    parts = topic.split("/")
    if len(parts) < 4 or len(parts) > 5 or parts[0] != NAMESPACE:
        raise SparkplugError(f"{topic!r} is not a Sparkplug B topic ({NAMESPACE}/group/type/node[/device])")
    _, group, message_type, node, *device = parts
    if message_type not in MESSAGE_TYPES:
        raise SparkplugError(f"{topic!r}: unknown message type {message_type!r}")
    if message_type.startswith("D") and not device:
        raise SparkplugError(f"{topic!r}: a {message_type} names a device")
    return Topic(group, message_type, node, device[0] if device else None)


def topic_of(group: str, message_type: str, node: str, device: str | None = None) -> str:
    return "/".join((NAMESPACE, group, message_type, node, *((device,) if device else ())))


def rebirth_request(group: str, node: str, timestamp_ms: int) -> tuple[str, bytes]:
    """(topic, payload) of the NCMD that asks an edge node to publish its births again."""
    payload = Payload(timestamp=timestamp_ms, metrics=(
        Metric(name=REBIRTH_METRIC, timestamp=timestamp_ms, datatype=BOOLEAN, value=True),))
    return topic_of(group, "NCMD", node), encode(payload)


# --------------------------------------------------------------------------------------------
# The host's view of the edge nodes


@dataclass(frozen=True, slots=True)
class MetricUpdate:
    """A metric value reported by a node (device None) or one of its devices."""
    group: str
    node: str
    device: str | None
    name: str
    value: Any
    timestamp_ms: int
    birth: bool                       # from a birth certificate (the current value, not a change)


@dataclass(frozen=True, slots=True)
class Offline:
    """A death certificate: the node (device None, with all its devices) or one device went offline."""
    group: str
    node: str
    device: str | None
    timestamp_ms: int
    bd_seq: int | None                # the node's birth/death sequence: part of the event's identity
    devices: tuple[str, ...] = ()     # for a node death: the devices it had


@dataclass(frozen=True, slots=True)
class Outcome:
    updates: tuple[MetricUpdate, ...] = ()
    offline: tuple[Offline, ...] = ()
    rebirth: tuple[str, str] | None = None   # (group, node) to send an NCMD Rebirth to
    problems: tuple[str, ...] = ()           # what was wrong (logged and counted by the caller)


@dataclass
class _Node:
    bd_seq: int | None = None
    seq: int | None = None            # the last sequence number seen
    online: bool = False
    aliases: dict[int, str] = field(default_factory=dict)
    devices: dict[str, dict[int, str]] = field(default_factory=dict)   # device -> its aliases
    rebirth_requested_ms: int | None = None


class HostState:
    """A Sparkplug host application's state of every edge node it heard, fed one message at a time.

    Sequence numbers run 0..255 per node across NBIRTH (which resets to 0), DBIRTH, NDATA, DDATA and
    DDEATH; a gap, a message from a node whose birth was not seen, or an alias without a birth asks
    for a rebirth (at most once per `rebirth_interval_ms` per node). Data is still used when its
    metrics can be named. NDEATH counts only when its bdSeq matches the birth's (a stale will message
    from an older session is ignored).
    """

    def __init__(self, rebirth_interval_ms: int = 5000) -> None:
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._rebirth_interval_ms = rebirth_interval_ms

    def node_online(self, group: str, node: str) -> bool:
        state = self._nodes.get((group, node))
        return bool(state and state.online)

    def handle(self, topic: Topic, payload: Payload, now_ms: int) -> Outcome:
        key = (topic.group, topic.node)
        node = self._nodes.setdefault(key, _Node())
        kind = topic.message_type
        problems: list[str] = []
        if kind == "NDEATH":
            return self._node_death(topic, node, payload, now_ms)
        if kind in ("NCMD", "DCMD", "STATE"):
            return Outcome()
        rebirth = False
        if kind == "NBIRTH":
            bd = payload.metric(BDSEQ_METRIC)
            node.bd_seq = int(bd.value) if bd is not None and isinstance(bd.value, int) else None
            node.seq = payload.seq
            node.online = True
            node.aliases = {m.alias: m.name for m in payload.metrics if m.alias is not None and m.name}
            node.devices = {}
            node.rebirth_requested_ms = None
        else:
            if not node.online:
                problems.append(f"{kind} from {topic.group}/{topic.node} before its NBIRTH")
                rebirth = True
            elif payload.seq is not None and node.seq is not None and payload.seq != (node.seq + 1) % 256:
                problems.append(f"sequence gap on {topic.group}/{topic.node}: expected {(node.seq + 1) % 256}, "
                                f"got {payload.seq}")
                rebirth = True
            if payload.seq is not None:
                node.seq = payload.seq
        device_aliases = node.aliases
        if topic.device is not None:
            if kind == "DBIRTH":
                node.devices[topic.device] = {m.alias: m.name for m in payload.metrics
                                              if m.alias is not None and m.name}
            elif topic.device not in node.devices and node.online and not rebirth:
                problems.append(f"{kind} from device {topic.device} of {topic.group}/{topic.node} before its DBIRTH")
                rebirth = True
            device_aliases = node.devices.get(topic.device, {})
        if kind == "DDEATH":
            node.devices.pop(topic.device, None)
            offline = Offline(topic.group, topic.node, topic.device, payload.timestamp or now_ms, node.bd_seq)
            return self._outcome(key, node, now_ms, rebirth, problems, offline=(offline,))
        updates = []
        birth = kind in ("NBIRTH", "DBIRTH")
        for metric in payload.metrics:
            name = metric.name or (device_aliases.get(metric.alias) if metric.alias is not None else None)
            if name is None:
                problems.append(f"metric alias {metric.alias} of {topic.group}/{topic.node} is unknown")
                rebirth = True
                continue
            if name == BDSEQ_METRIC or name.startswith("Node Control/") or metric.is_null:
                continue
            updates.append(MetricUpdate(topic.group, topic.node, topic.device, name, metric.value,
                                        metric.timestamp or payload.timestamp or now_ms, birth))
        return self._outcome(key, node, now_ms, rebirth, problems, updates=tuple(updates))

    def _outcome(self, key: tuple[str, str], node: _Node, now_ms: int, rebirth: bool, problems: list[str], *,
                 updates: tuple[MetricUpdate, ...] = (), offline: tuple[Offline, ...] = ()) -> Outcome:
        ask = None
        if rebirth and (node.rebirth_requested_ms is None
                        or now_ms - node.rebirth_requested_ms >= self._rebirth_interval_ms):
            node.rebirth_requested_ms = now_ms
            ask = key
        return Outcome(updates, offline, ask, tuple(problems))

    def _node_death(self, topic: Topic, node: _Node, payload: Payload, now_ms: int) -> Outcome:
        bd = payload.metric(BDSEQ_METRIC)
        bd_seq = int(bd.value) if bd is not None and isinstance(bd.value, int) else None
        if node.bd_seq is not None and bd_seq is not None and bd_seq != node.bd_seq:
            return Outcome(problems=(f"stale NDEATH of {topic.group}/{topic.node} (bdSeq {bd_seq}, "
                                     f"current {node.bd_seq}) ignored",))
        devices = tuple(sorted(node.devices))
        node.online = False
        node.seq = None
        node.devices = {}
        # the will message carries the timestamp of its connect; the node died now
        return Outcome(offline=(Offline(topic.group, topic.node, None, now_ms, bd_seq, devices),))
