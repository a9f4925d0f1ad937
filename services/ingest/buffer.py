"""The bridges' disk buffer: an append-only segment log with a committed read offset, both fsync'd.

Every event a bridge makes is appended (and fsync'd) before the bridge acknowledges its input; a
forwarder reads from the committed offset, sends, and commits the offset only once ingest's producer
path has them acknowledged by Kafka. So a restart, a crash or a Kafka outage loses nothing and keeps
the order; what is resent after a crash between sending and committing has the same event ids.

Layout of the directory: `seg-<00000001>.log` files of records `<length u32><crc32 u32><payload>`, and
`offset.json` = {"segment": n, "position": bytes}. A record torn by a crash at the end of the last
segment is cut off on open. Bounded: at most `max_events` unsent records; appends beyond are dropped
(and counted by the caller). Segments wholly read are deleted.

`frame`/`unframe` are the pure part.
"""
from __future__ import annotations

import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

_HEADER = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def unframe(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """(payload, next position) of the record at `pos`, or None when it is incomplete or corrupt."""
    if pos + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, pos)
    start = pos + _HEADER.size
    if length > MAX_RECORD or start + length > len(data):
        return None
    payload = data[start:start + length]
    if zlib.crc32(payload) != crc:
        return None
    return payload, start + length


@dataclass(frozen=True, slots=True)
class Position:
    segment: int
    position: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskBuffer:
    """See the module's doc. Not thread-safe: one bridge process owns one directory."""

    def __init__(self, directory: Path, *, max_events: int = 1_000_000, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_events = max_events
        self.segment_bytes = segment_bytes
        self._lock_file = open(self.directory / "lock", "w")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"the bridge buffer {self.directory} is in use by another process") from None
        self._committed = self._read_offset()
        self._recover()
        self.pending = self._count_pending()

    def close(self) -> None:
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    # Files ------------------------------------------------------------------------------------

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"seg-{number:08d}.log"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem[4:]) for p in self.directory.glob("seg-*.log"))

    def _read_offset(self) -> Position:
        try:
            data = orjson.loads((self.directory / "offset.json").read_bytes())
            return Position(int(data["segment"]), int(data["position"]))
        except FileNotFoundError:
            segments = self._segments()
            return Position(segments[0] if segments else 1, 0)

    def _recover(self) -> None:
        """Cut a torn record off the end of the last segment; start one if there is none."""
        segments = self._segments()
        if not segments:
            self._segment_path(max(self._committed.segment, 1)).touch()
            segments = self._segments()
        self._active = segments[-1]
        path = self._segment_path(self._active)
        data = path.read_bytes()
        pos = 0
        while (record := unframe(data, pos)) is not None:
            pos = record[1]
        if pos != len(data):
            with open(path, "r+b") as fh:
                fh.truncate(pos)
                fh.flush()
                os.fsync(fh.fileno())
        self._active_size = pos
        for number in segments:  # segments wholly behind the committed offset
            if number < self._committed.segment:
                self._segment_path(number).unlink(missing_ok=True)

    def _count_pending(self) -> int:
        count = 0
        for number in self._segments():
            if number < self._committed.segment:
                continue
            data = self._segment_path(number).read_bytes()
            pos = self._committed.position if number == self._committed.segment else 0
            while (record := unframe(data, pos)) is not None:
                count += 1
                pos = record[1]
        return count

    # Writing ----------------------------------------------------------------------------------

    def append(self, payloads: list[bytes]) -> int:
        """Append and fsync what fits; returns how many were dropped because the buffer is full."""
        room = max(self.max_events - self.pending, 0)
        kept, dropped = payloads[:room], len(payloads) - min(room, len(payloads))
        if not kept:
            return dropped
        if self._active_size >= self.segment_bytes:
            self._active += 1
            self._active_size = 0
        path = self._segment_path(self._active)
        data = b"".join(frame(p) for p in kept)
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if self._active_size == 0:
            _fsync_dir(self.directory)
        self._active_size += len(data)
        self.pending += len(kept)
        return dropped

    def append_json(self, items: list[dict]) -> int:
        return self.append([orjson.dumps(item) for item in items])

    # Reading ----------------------------------------------------------------------------------

    def read(self, limit: int) -> tuple[list[bytes], Position]:
        """Up to `limit` records from the committed offset, and the position after them."""
        out: list[bytes] = []
        position = self._committed
        for number in self._segments():
            if number < position.segment:
                continue
            data = self._segment_path(number).read_bytes()
            pos = position.position if number == position.segment else 0
            position = Position(number, pos)
            while len(out) < limit and (record := unframe(data, pos)) is not None:
                out.append(record[0])
                pos = record[1]
                position = Position(number, pos)
            if len(out) >= limit:
                break
        return out, position

    def read_json(self, limit: int) -> tuple[list[dict], Position]:
        payloads, position = self.read(limit)
        return [orjson.loads(p) for p in payloads], position

    def commit(self, position: Position, count: int) -> None:
        """Record that everything before `position` (`count` records) has been delivered."""
        tmp = self.directory / "offset.json.tmp"
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({"segment": position.segment, "position": position.position}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / "offset.json")
        _fsync_dir(self.directory)
        self._committed = position
        self.pending = max(self.pending - count, 0)
        for number in self._segments():
            if number < position.segment:
                self._segment_path(number).unlink(missing_ok=True)
        if self.pending == 0 and position.segment == self._active and self._active_size >= self.segment_bytes:
            self._active += 1  # start a fresh segment; the read one goes at the next commit
            self._active_size = 0
            self._segment_path(self._active).touch()
