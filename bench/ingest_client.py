"""Scenario `ingest`'s client, a separate process: POSTs ready-made JSON arrays over a few connections.

`python -m bench.ingest_client URL TOKEN --requests 200 --size 1000 --concurrency 4 --run 1` prints one
JSON object: accepted events, seconds from the first request sent to the last answer, HTTP statuses.
Bodies are built and serialised before the clock starts, so the figure is the server's, not the client's.

With `--rate R` (events/s) it sends open loop instead: request i leaves at its slot i * size / R, however
long earlier answers take, and its latency runs from that slot to the 202 (acceptance: the events are
on Kafka), so a slow server is not hidden by a client that waits for it. `latencies_ms` lists them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson

from bench.dataset import UNITS

STATES = ("RUNNING", "IDLE", "DOWN", "SETUP", "BLOCKED", "STARVED")


def bodies(run: str, requests: int, size: int) -> list[bytes]:
    rng = random.Random(run)
    start = datetime(2026, 11, 2, 6, 0, 0, tzinfo=UTC)
    out = []
    n = 0
    for _ in range(requests):
        items = []
        for _ in range(size):
            at = (start + timedelta(milliseconds=50 * n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            item = {"event_id": f"bench-ingest-{run}-{n:08d}", "occurred_at": at, "equipment_id": rng.choice(UNITS)}
            if rng.random() < 0.7:
                item.update(type="PartsProduced", good=rng.randint(1, 10), reject=0)
            else:
                item.update(type="MachineStateChanged", state=rng.choice(STATES))
            items.append(item)
            n += 1
        out.append(orjson.dumps(items))
    return out


async def main(args: argparse.Namespace) -> dict:
    payloads = bodies(args.run, args.requests, args.size)
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    statuses: Counter[int] = Counter()
    accepted = 0
    problems: list[str] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in payloads:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def sender() -> None:
            nonlocal accepted
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(args.url + "/v1/events", data=body, headers=headers) as response:
                    answer = await response.read()
                    statuses[response.status] += 1
                    if response.status == 202:
                        accepted += orjson.loads(answer).get("accepted", 0)
                    elif len(problems) < 3:
                        problems.append(f"{response.status}: {answer[:300]!r}")

        latencies: list[float] = []

        async def timed(body: bytes, slot: float) -> None:
            nonlocal accepted
            delay = slot - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with session.post(args.url + "/v1/events", data=body, headers=headers) as response:
                answer = await response.read()
                statuses[response.status] += 1
                if response.status == 202:
                    accepted += orjson.loads(answer).get("accepted", 0)
                    latencies.append((time.perf_counter() - slot) * 1000)
                elif len(problems) < 3:
                    problems.append(f"{response.status}: {answer[:300]!r}")

        started = time.perf_counter()
        if args.rate:
            interval = args.size / args.rate
            await asyncio.gather(*(timed(body, started + i * interval) for i, body in enumerate(payloads)))
        else:
            await asyncio.gather(*(sender() for _ in range(args.concurrency)))
        seconds = time.perf_counter() - started
    return {"accepted": accepted, "sent": args.requests * args.size, "seconds": seconds,
            "statuses": {str(k): v for k, v in statuses.items()}, "problems": problems, "latencies_ms": latencies}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--run", default="1")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s, open loop (default: as fast as answered)")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
