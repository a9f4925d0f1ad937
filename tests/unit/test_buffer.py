"""The bridges' disk buffer: framing, order, the committed offset, bounds, torn records and restarts."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.buffer import DiskBuffer, frame, unframe


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_frames_read_back_in_order(payloads):
    data = b"".join(frame(p) for p in payloads)
    pos, out = 0, []
    while (record := unframe(data, pos)) is not None:
        out.append(record[0])
        pos = record[1]
    assert out == payloads and pos == len(data)


def test_a_torn_or_corrupt_record_is_not_read():
    data = frame(b"hello") + frame(b"world")
    assert unframe(data[:-1], len(frame(b"hello"))) is None
    corrupt = bytearray(data)
    corrupt[-1] ^= 0xFF
    assert unframe(bytes(corrupt), len(frame(b"hello"))) is None


def test_order_commit_and_restart(tmp_path):
    buffer = DiskBuffer(tmp_path)
    assert buffer.append_json([{"n": i} for i in range(5)]) == 0
    items, position = buffer.read_json(3)
    assert [i["n"] for i in items] == [0, 1, 2] and buffer.pending == 5
    buffer.commit(position, 3)
    assert buffer.pending == 2
    buffer.append_json([{"n": 5}])
    buffer.close()
    reopened = DiskBuffer(tmp_path)  # a restart: the committed offset and the rest are still there
    assert reopened.pending == 3
    items, position = reopened.read_json(10)
    assert [i["n"] for i in items] == [3, 4, 5]
    reopened.commit(position, 3)
    assert reopened.read_json(10)[0] == [] and reopened.pending == 0
    reopened.close()


def test_uncommitted_records_are_read_again_after_a_restart(tmp_path):
    buffer = DiskBuffer(tmp_path)
    buffer.append_json([{"n": 1}, {"n": 2}])
    buffer.read_json(2)  # sent, but Kafka never acknowledged: no commit
    buffer.close()
    assert [i["n"] for i in DiskBuffer(tmp_path).read_json(10)[0]] == [1, 2]


def test_bounded_appends_beyond_the_limit_are_dropped(tmp_path):
    buffer = DiskBuffer(tmp_path, max_events=3)
    assert buffer.append_json([{"n": i} for i in range(5)]) == 2
    assert buffer.append_json([{"n": 9}]) == 1
    items, position = buffer.read_json(10)
    assert [i["n"] for i in items] == [0, 1, 2]
    buffer.commit(position, 3)
    assert buffer.append_json([{"n": 10}]) == 0


def test_a_torn_tail_is_cut_on_open(tmp_path):
    buffer = DiskBuffer(tmp_path)
    buffer.append_json([{"n": 1}])
    buffer.close()
    segment = next(tmp_path.glob("seg-*.log"))
    with open(segment, "ab") as fh:
        fh.write(frame(b'{"n": 2}')[:-3])  # a crash in the middle of a write
    reopened = DiskBuffer(tmp_path)
    assert reopened.pending == 1
    reopened.append_json([{"n": 3}])
    assert [i["n"] for i in reopened.read_json(10)[0]] == [1, 3]


def test_segments_roll_and_read_ones_are_deleted(tmp_path):
    buffer = DiskBuffer(tmp_path, segment_bytes=64)
    for n in range(10):
        buffer.append_json([{"n": n, "pad": "x" * 40}])
    assert len(list(tmp_path.glob("seg-*.log"))) > 5
    seen = []
    while True:
        items, position = buffer.read_json(3)
        if not items:
            break
        seen += [i["n"] for i in items]
        buffer.commit(position, len(items))
    assert seen == list(range(10))
    assert len(list(tmp_path.glob("seg-*.log"))) <= 2
    buffer.close()
    assert DiskBuffer(tmp_path).pending == 0


def test_one_process_per_directory(tmp_path):
    buffer = DiskBuffer(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        DiskBuffer(tmp_path)
    buffer.close()
    DiskBuffer(tmp_path).close()
