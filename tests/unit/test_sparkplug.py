"""The hand-written Sparkplug B codec against the protobuf runtime, and the host's view of edge nodes."""
from __future__ import annotations

import math

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import sparkplug as sp

F = descriptor_pb2.FieldDescriptorProto


def _sparkplug_message_class():
    """Payload of sparkplug_b.proto (the fields a host reads, plus a nested PropertySet to skip)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="sparkplug_b.proto", package="org.eclipse.tahu.protobuf",
                                             syntax="proto2")
    payload = fdp.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    props = payload.nested_type.add(name="PropertySet")
    props.field.add(name="keys", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    for name, number, kind in (("name", 1, F.TYPE_STRING), ("alias", 2, F.TYPE_UINT64), ("timestamp", 3, F.TYPE_UINT64),
                               ("datatype", 4, F.TYPE_UINT32), ("is_historical", 5, F.TYPE_BOOL),
                               ("is_transient", 6, F.TYPE_BOOL), ("is_null", 7, F.TYPE_BOOL)):
        metric.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
    metric.field.add(name="properties", number=9, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                     type_name=".org.eclipse.tahu.protobuf.Payload.PropertySet")
    metric.oneof_decl.add(name="value")
    for name, number, kind in (("int_value", 10, F.TYPE_UINT32), ("long_value", 11, F.TYPE_UINT64),
                               ("float_value", 12, F.TYPE_FLOAT), ("double_value", 13, F.TYPE_DOUBLE),
                               ("boolean_value", 14, F.TYPE_BOOL), ("string_value", 15, F.TYPE_STRING),
                               ("bytes_value", 16, F.TYPE_BYTES)):
        metric.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL, oneof_index=0)
    payload.field.add(name="timestamp", number=1, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    payload.field.add(name="metrics", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=".org.eclipse.tahu.protobuf.Payload.Metric")
    payload.field.add(name="seq", number=3, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    payload.field.add(name="uuid", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    payload.field.add(name="body", number=5, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload"))


PB = _sparkplug_message_class()


def test_decodes_what_the_protobuf_runtime_encodes():
    message = PB(timestamp=1_762_063_200_000, seq=7, uuid="u-1", body=b"\x00\x01")
    message.metrics.add(name="State", alias=1, timestamp=1_762_063_200_001, datatype=sp.STRING, string_value="RUNNING")
    message.metrics.add(name="Good", datatype=sp.UINT32, int_value=4_000_000_000)
    message.metrics.add(name="Offset", datatype=sp.INT32, int_value=(-5) & 0xFFFFFFFF)
    message.metrics.add(name="Total", datatype=sp.INT64, long_value=(-9) & 0xFFFFFFFFFFFFFFFF)
    message.metrics.add(name="Temp", datatype=sp.FLOAT, float_value=21.5)
    message.metrics.add(name="Pressure", datatype=sp.DOUBLE, double_value=3.25)
    message.metrics.add(name="Ok", datatype=sp.BOOLEAN, boolean_value=True)
    message.metrics.add(name="Gone", datatype=sp.DOUBLE, is_null=True)
    with_props = message.metrics.add(name="WithProps", datatype=sp.INT32, int_value=3)
    with_props.properties.keys.append("engUnit")  # a field the codec skips
    payload = sp.decode(message.SerializeToString())
    assert (payload.timestamp, payload.seq, payload.uuid, payload.body) == (1_762_063_200_000, 7, "u-1", b"\x00\x01")
    values = {m.name: m.value for m in payload.metrics}
    assert values == {"State": "RUNNING", "Good": 4_000_000_000, "Offset": -5, "Total": -9, "Temp": 21.5,
                      "Pressure": 3.25, "Ok": True, "Gone": None, "WithProps": 3}
    assert payload.metric("State").alias == 1 and payload.metric("State").timestamp == 1_762_063_200_001
    assert payload.metric("Gone").is_null


def test_the_protobuf_runtime_reads_what_the_codec_encodes():
    data = sp.encode(sp.Payload(timestamp=10, seq=255, metrics=(
        sp.Metric(name="bdSeq", datatype=sp.UINT64, value=3),
        sp.Metric(name="Speed", alias=4, datatype=sp.INT16, value=-300),
        sp.Metric(name="Label", value="press"),
        sp.Metric(name="Flag", value=False),
        sp.Metric(name="Nothing", datatype=sp.DOUBLE, is_null=True),
    )))
    message = PB()
    message.ParseFromString(data)
    assert message.timestamp == 10 and message.seq == 255
    by_name = {m.name: m for m in message.metrics}
    assert by_name["bdSeq"].long_value == 3
    assert by_name["Speed"].int_value == (-300) & 0xFFFFFFFF and by_name["Speed"].alias == 4
    assert by_name["Label"].string_value == "press" and by_name["Label"].datatype == sp.STRING
    assert by_name["Flag"].HasField("boolean_value") and by_name["Flag"].boolean_value is False
    assert by_name["Nothing"].is_null


_values = st.one_of(
    st.tuples(st.just(sp.INT32), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just(sp.UINT32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(sp.INT64), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just(sp.UINT64), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(sp.DOUBLE), st.floats(allow_nan=False)),
    st.tuples(st.just(sp.BOOLEAN), st.booleans()),
    st.tuples(st.just(sp.STRING), st.text(max_size=30)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), _values), max_size=6),
       st.integers(0, 255), st.integers(0, 2**50))
def test_round_trip_through_both_codecs(metrics, seq, timestamp):
    payload = sp.Payload(timestamp=timestamp, seq=seq, metrics=tuple(
        sp.Metric(name=name, datatype=datatype, value=value) for name, (datatype, value) in metrics))
    data = sp.encode(payload)
    assert sp.decode(data) == payload
    message = PB()
    message.ParseFromString(data)
    assert sp.decode(message.SerializeToString()) == payload


def test_float_is_single_precision():
    payload = sp.decode(sp.encode(sp.Payload(metrics=(sp.Metric(name="t", datatype=sp.FLOAT, value=0.1),))))
    assert math.isclose(payload.metrics[0].value, 0.1, rel_tol=1e-6) and payload.metrics[0].value != 0.1


@pytest.mark.parametrize("data", [b"\x08", b"\x12\x05ab", b"\x0b", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])
def test_malformed_payloads_are_refused(data):
    with pytest.raises(sp.SparkplugError):
        sp.decode(data)


def test_topics():
    assert sp.parse_topic("spBv1.0/acme/DDATA/line1/press07") == sp.Topic("acme", "DDATA", "line1", "press07")
    assert sp.parse_topic("spBv1.0/acme/NBIRTH/line1") == sp.Topic("acme", "NBIRTH", "line1", None)
    for bad in ("spBv1.0/acme/DDATA/line1", "spAv1.0/acme/NDATA/n", "spBv1.0/acme/XDATA/n", "acme/berlin"):
        with pytest.raises(sp.SparkplugError):
            sp.parse_topic(bad)
    topic, data = sp.rebirth_request("acme", "line1", 99)
    assert topic == "spBv1.0/acme/NCMD/line1"
    assert sp.decode(data).metric(sp.REBIRTH_METRIC).value is True


# The host's view -----------------------------------------------------------------------------


def _birth(seq=0, bd=1, metrics=()):
    return sp.Payload(timestamp=1000, seq=seq, metrics=(sp.Metric(name="bdSeq", datatype=sp.UINT64, value=bd), *metrics))


def _msg(host, kind, payload, device=None, now=5000):
    return host.handle(sp.Topic("acme", kind, "line1", device), payload, now)


def test_births_data_and_aliases():
    host = sp.HostState()
    out = _msg(host, "NBIRTH", _birth())
    assert out.rebirth is None and out.updates == ()
    out = _msg(host, "DBIRTH", sp.Payload(timestamp=1001, seq=1, metrics=(
        sp.Metric(name="State", alias=1, value="IDLE"), sp.Metric(name="Good", alias=2, datatype=sp.UINT32, value=10))),
        device="press07")
    assert [(u.name, u.value, u.birth) for u in out.updates] == [("State", "IDLE", True), ("Good", 10, True)]
    out = _msg(host, "DDATA", sp.Payload(timestamp=1002, seq=2, metrics=(
        sp.Metric(alias=2, timestamp=1500, datatype=sp.UINT32, value=12),)), device="press07")
    assert [(u.device, u.name, u.value, u.timestamp_ms, u.birth) for u in out.updates] == [
        ("press07", "Good", 12, 1500, False)]
    assert out.rebirth is None and out.problems == ()


def test_a_sequence_gap_asks_for_a_rebirth_once_per_interval_but_keeps_the_data():
    host = sp.HostState(rebirth_interval_ms=1000)
    _msg(host, "NBIRTH", _birth())
    out = _msg(host, "NDATA", sp.Payload(seq=5, metrics=(sp.Metric(name="Temp", value=1.5),)), now=5000)
    assert out.rebirth == ("acme", "line1") and "sequence gap" in out.problems[0]
    assert [u.value for u in out.updates] == [1.5]
    out = _msg(host, "NDATA", sp.Payload(seq=9, metrics=()), now=5500)
    assert out.rebirth is None  # asked 500 ms ago
    out = _msg(host, "NDATA", sp.Payload(seq=20, metrics=()), now=6100)
    assert out.rebirth == ("acme", "line1")
    out = _msg(host, "NBIRTH", _birth(bd=2), now=6200)
    assert out.rebirth is None
    assert _msg(host, "NDATA", sp.Payload(seq=1), now=6300).rebirth is None


def test_sequence_wraps_at_256():
    host = sp.HostState()
    _msg(host, "NBIRTH", _birth())
    for seq in [*range(1, 256), 0, 1]:
        assert _msg(host, "NDATA", sp.Payload(seq=seq)).rebirth is None


def test_data_before_birth_and_unknown_aliases_ask_for_a_rebirth():
    host = sp.HostState()
    out = _msg(host, "DDATA", sp.Payload(seq=3, metrics=(sp.Metric(name="State", value="RUNNING"),)), device="press07")
    assert out.rebirth == ("acme", "line1") and [u.name for u in out.updates] == ["State"]
    host = sp.HostState()
    _msg(host, "NBIRTH", _birth())
    out = _msg(host, "NDATA", sp.Payload(seq=1, metrics=(sp.Metric(alias=42, value=1),)))
    assert out.rebirth == ("acme", "line1") and out.updates == ()


def test_death_certificates():
    host = sp.HostState()
    _msg(host, "NBIRTH", _birth(bd=4))
    _msg(host, "DBIRTH", sp.Payload(seq=1, metrics=(sp.Metric(name="State", value="IDLE"),)), device="press07")
    _msg(host, "DBIRTH", sp.Payload(seq=2, metrics=(sp.Metric(name="State", value="IDLE"),)), device="press08")
    out = _msg(host, "DDEATH", sp.Payload(timestamp=3000, seq=3), device="press08")
    assert out.offline == (sp.Offline("acme", "line1", "press08", 3000, 4),)
    stale = _msg(host, "NDEATH", sp.Payload(metrics=(sp.Metric(name="bdSeq", value=3),)))
    assert stale.offline == () and "stale" in stale.problems[0]
    out = _msg(host, "NDEATH", sp.Payload(metrics=(sp.Metric(name="bdSeq", value=4),)), now=9000)
    assert out.offline == (sp.Offline("acme", "line1", None, 9000, 4, ("press07",)),)
    assert not host.node_online("acme", "line1")
