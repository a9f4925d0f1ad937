"""`python -m bench.replay_worker SERVICE SCHEMA START_FILE [WORKERS]`: time `mom replay`'s rebuild over a segment.

`mom replay` always starts at offset 0; the bench needs a given segment, so this runs the same
`services.common.replay.rebuild` with `start` (a JSON list of [topic, partition, offset]) into an empty
`SCHEMA`, its settle shared by WORKERS processes (default 1, as `mom replay --workers`), with the
worker settings in the environment (MOM_DATABASE_URL must be a role that may create schemas). Prints
one JSON line:
events and seconds from the first committed position to the last, the whole rebuild's seconds
(consumer group join included), and the seconds of the settle.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from importlib import import_module

from services.common.replay import rebuild
from services.common.runtime import settle_heap
from services.common.settings import Settings


def main(service: str, schema: str, start_file: str, workers: str = "1") -> dict:
    start = {(t, p): o for t, p, o in json.loads(open(start_file).read())}
    settings = Settings.from_env(service)
    make_spec = import_module(f"services.{service}.app").build
    seen: list[tuple[float, int, int]] = []  # (perf_counter, done, total) at every progress report

    def progress(done: int, total: int) -> None:
        seen.append((time.perf_counter(), done, total))

    settle_heap()  # a replay runs as a worker does
    rebuilt = asyncio.run(rebuild(settings, make_spec, os.environ["MOM_DATABASE_URL"], schema, start=start,
                                progress=progress, workers=int(workers)))
    whole = rebuilt.seconds
    base = sum(start.values())
    # the first report after the first commit, and the final one (rebuild reports `total` when done)
    first = next(((t, d) for t, d, _ in seen if d > base), None)
    last_t, total = seen[-1][0], seen[-1][2]
    if first is None or last_t <= first[0]:
        return {"events": total - base, "seconds": round(whole, 3), "rebuild_seconds": round(whole, 3),
                "events_per_s": round((total - base) / whole, 1), "settle_seconds": round(rebuilt.settle_seconds, 3)}
    events = total - first[1]
    return {"events": events, "seconds": round(last_t - first[0], 3), "rebuild_seconds": round(whole, 3),
            "events_per_s": round(events / (last_t - first[0]), 1), "segment_events": total - base,
            "settle_seconds": round(rebuilt.settle_seconds, 3)}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
