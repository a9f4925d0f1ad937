"""One service worker process timed over a stream of its own, in a scratch schema.

Every service scenario shares this: migrate a scratch schema, seed its positions at the start of the
segment to read (by default the current end of the service's input topics, so only this run's events
count), produce the stream, start `python -m services.<service>` on that schema, and time it from its
first committed position to the last while sampling its resident memory. A query then reads what the
projection holds; optionally the tail of the segment is replayed (`services.common.replay.rebuild`,
what `mom replay` runs) into a second, empty schema, before both are dropped.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import psycopg

from services.common import kafka as mom_kafka
from services.common import localstack
from services.common.kafka import end_offsets
from services.common.migrations import upgrade
from services.common.replay import seed_positions
from services.common.settings import REPO_ROOT

Offsets = dict[tuple[str, int], int]


@dataclass(frozen=True)
class Workload:
    """A service's benchmark stream and how to check what its projection made of it.

    `events(run, n, expected)` yields (event type, record) and fills `expected` as it goes; `check(found,
    expected)` compares the row `query` (with `{schema}`) returned against it: (ok, text)."""
    service: str
    events: Callable[[str, int, dict], Iterable[tuple[str, dict]]]
    query: str
    check: Callable[[tuple, dict], tuple[bool, str]]
    describe: str
    env: Mapping[str, str] = field(default_factory=dict)
    per_event: tuple[str, int] | None = None  # e.g. ("values", 5): a second rate, in the workload's own unit


@dataclass(frozen=True)
class Timed:
    events: int       # events processed from the first committed position to the last
    seconds: float
    found: tuple      # the row the query returned
    rss_mb: dict      # start, at first commit, at 20 %, peak, end, flat
    wall_s: float     # from process start to the last commit
    replays: dict[int, dict] = field(default_factory=dict)  # worker processes -> the replay's result
    cpu_s: float | None = None  # the worker's CPU seconds over `seconds`
    stack_cpu_s: dict[str, float] = field(default_factory=dict)  # machine, postgres, kafka: CPU seconds over `seconds`

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


PACE_TICK_S = 0.002  # a paced producer sleeps at least this long, then sends every message that fell due


def encoded(ctx, events: Iterable[tuple[str, dict]], topic: str | None = None) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) of each (event type, record): its catalogue topic (or `topic`), keyed as the
    catalogue says, encoded by the stack's codec."""
    for event_type, record in events:
        yield (topic or ctx.catalogue.topic_for(event_type).name, ctx.catalogue.key_for(event_type, record).encode(),
               ctx.codec.encode(event_type, record))


def produce(ctx, events: Iterable[tuple[str, dict]], on_delivery=None, topic: str | None = None, **overrides) -> int:
    """Each (event type, record) to its catalogue topic (or to `topic`), keyed as the catalogue says; returns the count."""
    return produce_messages(ctx, encoded(ctx, events, topic), on_delivery, **overrides)


def produce_messages(ctx, messages: Iterable[tuple[str, bytes, bytes]], on_delivery=None, rate: float | None = None,
                     **overrides) -> int:
    """Each (topic, key, value); returns the count. With `rate`, message i is sent no earlier than i / rate
    seconds after the first, the due ones together every PACE_TICK_S or so: a sleep per message would
    cost the feeder, which shares the machine with the worker it measures, several times the CPU."""
    producer = mom_kafka.producer(ctx.kafka, **overrides)
    began = time.perf_counter()
    count = 0
    for topic, key, value in messages:
        if rate is not None:
            wait = began + count / rate - time.perf_counter()
            if wait > 0:
                producer.poll(0)
                time.sleep(max(wait, PACE_TICK_S))
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("producing the benchmark stream: messages left undelivered after 120 s")
    return count


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _stat_cpu_s(stat: str) -> float:
    """User plus system CPU seconds from the text of a /proc/<pid>/stat (fields 14 and 15, after the name)."""
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds the process has used so far (/proc/<pid>/stat), or None once it is gone."""
    try:
        return _stat_cpu_s(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None


def machine_cpu_s() -> dict[str, float]:
    """CPU seconds used so far: by the whole machine (every core, /proc/stat), by the stack's PostgreSQL
    (every `postgres` process) and Kafka (`java`) processes, and stolen by the host. Differences over a
    run say where the machine's CPU went besides the worker; a PostgreSQL backend that exits meanwhile
    drops out of its sum, the machine's total keeps it."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"machine": 0.0, "postgres": 0.0, "kafka": 0.0, "steal": 0.0}
    try:  # user nice system idle iowait irq softirq steal: busy is all but idle, iowait and steal
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        out["machine"] = (sum(fields[0:3]) + fields[5] + fields[6]) / tick
        out["steal"] = fields[7] / tick  # taken by the host for others: a sign of a noisy neighbour
    except (OSError, ValueError, IndexError):
        pass
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        kind = "postgres" if name.startswith("postgres") else "kafka" if name == "java" else None
        if kind is not None:
            out[kind] += _stat_cpu_s(text)
    return out


def rss_summary(samples: Sequence[tuple[float, float]], at_first_commit: float | None = None) -> dict:
    """(seconds since start, MB) samples -> start, at 20 % of the run, peak, end and whether it stayed flat.

    Flat: the level of the last quarter of the run (the median of its samples) at most 10 % + 10 MB
    above the level just after start-up (the median from 20 % to 45 % of the run). Levels, not single
    samples: the heap swings by tens of MB as batches come and go (and the high-water mark while the
    first backlog is fetched is given back later), and a growth is a level that keeps rising. Start
    is the value at the first commit, when the worker has loaded and connected (a sample at process
    birth shows only the interpreter starting), or the first sample after 3 s without one."""
    if not samples:
        return {}
    values = [v for _, v in samples]
    start = at_first_commit or next((v for t, v in samples if t >= 3.0), values[0])
    span = samples[-1][0]
    at20 = next((v for t, v in samples if t >= 0.2 * span), values[0])
    early = [v for t, v in samples if 0.2 * span <= t <= 0.45 * span] or [at20]
    late = [v for t, v in samples if t >= 0.75 * span] or [values[-1]]
    growth = statistics.median(late) - statistics.median(early)
    return {"start": round(start, 1), "at_first_commit": round(at_first_commit, 1) if at_first_commit else None,
            "at_20pct": round(at20, 1), "peak": round(max(values), 1), "end": round(values[-1], 1),
            "growth_after_20pct": round(growth, 1), "flat": growth <= 0.1 * statistics.median(early) + 10,
            "samples": len(values)}


def free_port() -> int:
    """A TCP port nothing listens on now (the system's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def spawn(ctx, argv: Sequence[str], env: Mapping[str, str], name: str) -> tuple[subprocess.Popen, Path]:
    log_path = ctx.config.logs_dir / f"bench-{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(list(argv), env=dict(env), cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, log_path


class ScratchWorker:
    """`with ScratchWorker(ctx, service) as w:` a migrated scratch schema with positions seeded at the segment
    start; `w.start()` runs the worker on it. On exit the worker is stopped and the schema dropped."""

    def __init__(self, ctx, service: str, *, start: Offsets | None = None, env: Mapping[str, str] | None = None,
                 argv: Sequence[str] | None = None, name: str | None = None, setup_sql: str = "", workers: int = 1) -> None:
        self.ctx, self.service, self.name = ctx, service, name or service
        self.run = uuid.uuid4().hex[:8]
        self.schema = f"{service}_bench_{self.run}"
        self.admin = ctx.config.db_url()
        self.argv = list(argv or [sys.executable, "-m", f"services.{service}"])
        self.env = {**os.environ, **localstack.service_env(ctx.config, service), "MOM_DATABASE_URL": self.admin,
                    "MOM_DB_SCHEMA": self.schema, "MOM_GROUP_ID": f"bench-{self.name}-{self.run}",
                    "MOM_LOG_LEVEL": "WARNING", **(env or {})}
        self._start_override = start or {}
        self._setup_sql = setup_sql
        self.workers = workers
        self.ports = [int(self.env["MOM_HTTP_PORT"])] + [free_port() for _ in range(1, workers)]
        self.proc: subprocess.Popen | None = None  # the first worker's
        self.procs: list[subprocess.Popen] = []
        self.log_path: Path | None = None
        self.dropped: list[str] = [self.schema]

    def __enter__(self) -> ScratchWorker:
        upgrade(self.admin, self.service, schema=self.schema)
        if self._setup_sql:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(self._setup_sql.format(schema=f'"{self.schema}"'))
        settings = import_module(f"services.{self.service}.settings").from_env()
        self.topics = import_module(f"services.{self.service}.app").build(settings, self.ctx.catalogue).input_topics
        self.start_offsets: Offsets = {**end_offsets(self.ctx.kafka, self.topics), **self._start_override}
        seed_positions(self.admin, self.schema, self.start_offsets)
        return self

    def start(self) -> subprocess.Popen:
        """Start the worker(s): with `workers` above 1, that many processes of one consumer group, each
        with its own HTTP port (`ports`). Returns the first."""
        for i, port in enumerate(self.ports):
            name = self.name if i == 0 else f"{self.name}-{i + 1}"
            proc, log_path = spawn(self.ctx, self.argv, {**self.env, "MOM_HTTP_PORT": str(port)}, name)
            self.procs.append(proc)
            if i == 0:
                self.proc, self.log_path = proc, log_path
        assert self.proc is not None
        return self.proc

    def done(self, conn: psycopg.Connection) -> int:
        """Events committed since the segment start."""
        total = conn.execute(f'SELECT coalesce(sum(next_offset), 0) FROM "{self.schema}".positions').fetchone()[0]
        return int(total) - sum(self.start_offsets.values())

    def alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a {self.name} worker exited with {proc.returncode}; see {self.ctx.config.logs_dir}")

    def __exit__(self, *_exc) -> None:
        for proc in self.procs:
            stop_process(proc)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            for schema in self.dropped:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def tail_start(start: Offsets, end: Offsets, events: int) -> Offsets:
    """Where to start reading so that about `events` of the segment start..end are left, taken from every
    partition in proportion to its share of the segment."""
    total = sum(end[tp] - start.get(tp, 0) for tp in end)
    if events >= total or total == 0:
        return dict(start)
    return {tp: end[tp] - round((end[tp] - start.get(tp, 0)) * events / total) for tp in end}


@dataclass(frozen=True)
class Watched:
    first_n: int      # already committed when the first commit was seen (not timed)
    seconds: float    # from the first commit seen to the target
    wall_s: float     # from the call (about the process start) to the target
    rss_mb: dict
    cpu_s: float | None = None  # the process's CPU seconds over the same span as `seconds`
    stack_cpu_s: dict[str, float] = field(default_factory=dict)  # machine, postgres, kafka: CPU seconds over `seconds`


def watch(proc: subprocess.Popen, progress: Callable[[], int], target: int, alive: Callable[[], None],
          timeout_s: float, name: str) -> Watched:
    """Poll `progress()` every 0.2 s until it reaches `target`, sampling the process's RSS every second."""
    began = time.perf_counter()
    samples: list[tuple[float, float]] = []
    first_t = first_n = at_first_commit = first_cpu = None
    first_stack: dict[str, float] = {}
    last_sample = -1.0
    while True:
        alive()
        now = time.perf_counter()
        if now - last_sample >= 1.0:
            value = rss_mb(proc.pid)
            if value is not None:
                samples.append((now - began, value))
            last_sample = now
        done = progress()
        if done > 0 and first_t is None:
            first_t, first_n, at_first_commit = time.perf_counter(), done, rss_mb(proc.pid)
            first_cpu, first_stack = cpu_s(proc.pid), machine_cpu_s()
        if done >= target:
            done_t, done_cpu, done_stack = time.perf_counter(), cpu_s(proc.pid), machine_cpu_s()
            break
        if now - began > timeout_s:
            raise RuntimeError(f"{name}: only {done:,} of {target:,} events after {timeout_s:.0f} s")
        time.sleep(0.2)
    final = rss_mb(proc.pid)
    if final is not None:
        samples.append((time.perf_counter() - began, final))
    return Watched(first_n=first_n, seconds=done_t - first_t, wall_s=round(done_t - began, 2),
                   rss_mb=rss_summary(samples, at_first_commit),
                   cpu_s=round(done_cpu - first_cpu, 2) if done_cpu is not None and first_cpu is not None else None,
                   stack_cpu_s={k: round(done_stack[k] - first_stack.get(k, 0.0), 2) for k in done_stack})


def timed_worker(ctx, service: str, events: Iterable[tuple[str, dict]] | None, query: str, *,
                 env: Mapping[str, str] | None = None, start: Offsets | None = None, argv: Sequence[str] | None = None,
                 name: str | None = None, setup_sql: str = "", replay_events: int = 0, replay_workers: Sequence[int] = (1,),
                 timeout_s: float = 1800.0) -> Timed:
    """Run the stream (or, with `events=None`, what already lies between `start` and the end) through one
    worker of `service`; `query` (with `{schema}`) reads the result. With `replay_events`, that many events
    at the end of the segment are then replayed into an empty schema (see `replay`), once per entry of
    `replay_workers` (the processes sharing that replay's settle)."""
    with ScratchWorker(ctx, service, start=start, env=env, argv=argv, name=name, setup_sql=setup_sql) as worker:
        if events is not None:
            produce(ctx, events)
        end = end_offsets(ctx.kafka, worker.topics)
        target = sum(end.values()) - sum(worker.start_offsets.values())
        proc = worker.start()
        with ctx.superuser() as conn:
            watched = watch(proc, lambda: worker.done(conn), target, worker.alive, timeout_s, service)
            found = tuple(conn.execute(query.format(schema=worker.schema)).fetchone())
        stop_process(proc)
        replayed: dict[int, dict] = {}
        for workers in replay_workers if replay_events else ():
            target_schema = f"{worker.schema}_replay{workers}"
            worker.dropped.append(target_schema)
            replayed[workers] = replay(ctx, service, target_schema, tail_start(worker.start_offsets, end, replay_events),
                                       {**worker.env, "MOM_GROUP_ID": f"bench-{worker.name}-{worker.run}"}, workers)
    return Timed(events=target - watched.first_n, seconds=watched.seconds, found=found, rss_mb=watched.rss_mb,
                 wall_s=watched.wall_s, replays=replayed, cpu_s=watched.cpu_s, stack_cpu_s=watched.stack_cpu_s)


def replay(ctx, service: str, schema: str, start: Offsets, env: Mapping[str, str], workers: int = 1) -> dict:
    """`python -m bench.replay_worker`: rebuild `schema` from `start` to the current end offsets by `workers`
    worker processes, timed from the first committed position to the last."""
    start_file = ctx.config.state_dir / f"bench-replay-{schema}.json"
    start_file.write_text(json.dumps([[t, p, o] for (t, p), o in start.items()]))
    try:
        answer = subprocess.run([sys.executable, "-m", "bench.replay_worker", service, schema, str(start_file), str(workers)],
                                env=dict(env), cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    finally:
        start_file.unlink(missing_ok=True)
    if answer.returncode != 0:
        raise RuntimeError(f"replay of {service} failed: {answer.stderr[-2000:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])
