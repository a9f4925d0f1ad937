"""The scenarios. Each returns a dict of results by name: events, seconds, events_per_s, notes (and
extras); the ratios to raw_consume and to the service's naive baseline are added by `python -m bench`."""
from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence

from confluent_kafka import KafkaError
from confluent_kafka.admin import NewTopic

from bench import dataset
from bench.latency import fixed_rate, summary
from bench.scratch_run import Workload, produce, rss_mb, rss_summary, spawn, stop_process, timed_worker, watch
from services.common import kafka as mom_kafka
from services.common import localstack
from services.common.avro import codec_for
from services.common.catalogue import Catalogue
from services.common.settings import REPO_ROOT, KafkaSettings

PYTHON = sys.executable


class Context:
    """What every scenario needs: the stack, the dataset's manifest, the catalogue and codec."""

    def __init__(self, config: localstack.StackConfig, manifest: dict, log=print) -> None:
        self.config = config
        self.manifest = manifest
        self.n = manifest["events"]
        self.catalogue = Catalogue.load()
        self.codec = codec_for(self.catalogue, "", REPO_ROOT / "schemas")
        self.topic = dataset.machine_topic(self.catalogue)
        self.kafka = KafkaSettings(bootstrap=config.bootstrap)
        self.log = log

    def superuser(self):
        import psycopg
        return psycopg.connect(self.config.db_url(), autocommit=True)

    def dataset_start(self) -> dict[tuple[str, int], int]:
        """The machine topic from offset 0, where the dataset (and only it) lies; see dataset.ensure."""
        return {(self.topic, p): 0 for p in dataset.end_offsets(self.config.bootstrap, self.topic)}


def _result(events: int, seconds: float, notes: str, **extra) -> dict:
    return {"events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1) if seconds else None,
            "notes": notes, **extra}


def _median_of(runs: list[dict], notes: str, **extra) -> dict:
    """Median events/s over repetitions; seconds is the matching median."""
    rates = [r["events_per_s"] for r in runs]
    rate = statistics.median(rates)
    seconds = statistics.median(r["seconds"] for r in runs)
    return {"events": runs[0]["events"], "seconds": round(seconds, 3), "events_per_s": round(rate, 1),
            "repetitions": len(runs), "runs_events_per_s": rates, "notes": notes, **extra}


def _failed(exc: Exception, what: str) -> dict:
    return {"events": None, "seconds": None, "events_per_s": None, "error": f"{type(exc).__name__}: {exc}",
            "notes": f"{what} failed; see error"}


# the raw baseline ------------------------------------------------------------------------------------


def _consume_all(ctx: Context, n: int, decode: bool) -> dict:
    consumer = mom_kafka.consumer(ctx.kafka, f"bench-raw-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([ctx.topic])
    decode_fn = ctx.codec.decode
    count = 0
    first = None
    try:
        while count < n:
            records = consumer.consume(num_messages=2000, timeout=1.0)
            if not records:
                continue
            if first is None:
                first = time.perf_counter()
            for record in records:
                if record.error() is not None:
                    if record.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(record.error()))
                    continue
                if decode:
                    decode_fn(record.value())
                count += 1
        seconds = time.perf_counter() - first
    finally:
        consumer.close()
    return _result(count, seconds, "")


def raw_consume(ctx: Context, n: int, repeat: int) -> dict:
    runs = [_consume_all(ctx, n, decode=False) for _ in range(repeat)]
    return _median_of(runs, "confluent-kafka consume(num_messages=2000), services.common.kafka.consumer() settings, no work; the baseline")


def raw_consume_decode(ctx: Context, n: int, repeat: int) -> dict:
    runs = [_consume_all(ctx, n, decode=True) for _ in range(repeat)]
    return _median_of(runs, "as raw_consume plus SingleObjectCodec.decode() of every value (fastavro)")


# the shared loop alone ------------------------------------------------------------------------------


def loop_overhead(ctx: Context) -> dict:
    """The shared loop (services.common.runtime / ConsumerLoop) with bench.overhead_worker's trivial projector."""
    from bench.overhead_worker import DDL, TABLE

    timed = timed_worker(ctx, "execution", None, (
        f'SELECT coalesce(sum(events), 0), coalesce(sum(good), 0), coalesce(sum(reject), 0), '
        f'(SELECT count(*) FROM "{{schema}}".processed_events) FROM "{{schema}}".{TABLE}'),
        start=ctx.dataset_start(), argv=[PYTHON, "-m", "bench.overhead_worker"], name="loop_overhead", setup_sql=DDL)
    found = tuple(int(v) for v in timed.found)
    want = (ctx.n, ctx.manifest["good"], ctx.manifest["reject"], ctx.n)
    ok = found == want
    return _result(timed.events, timed.seconds,
                   "python -m bench.overhead_worker: the shared worker host and ConsumerLoop with a trivial projector "
                   "(per-unit counters, one unnest upsert per batch), timed from the first committed position to the last; "
                   f"counters {'OK' if ok else 'WRONG'}: events, good, reject, processed_events {found} (expected {want})"
                   + _cpu_note(extra := _cpu_figures(timed)),
                   kind="throughput", projection_ok=ok, rss_mb=timed.rss_mb, wall_from_process_start_s=timed.wall_s, **extra)


def _cpu_figures(timed) -> dict:
    """The worker's own CPU time (less moved by other load on a shared machine than wall time), and per event
    the CPU of the worker, the whole machine, PostgreSQL and Kafka, and what the host took for others."""
    extra: dict = {}
    if timed.cpu_s:
        extra.update(worker_cpu_s=timed.cpu_s, events_per_cpu_s=round(timed.events / timed.cpu_s, 1))
    if timed.stack_cpu_s.get("machine"):
        extra["cpu_us_per_event"] = {k: round(1e6 * v / timed.events, 1) for k, v in
                                     {"worker": timed.cpu_s or 0.0, **timed.stack_cpu_s}.items()}
    return extra


def _cpu_note(extra: dict) -> str:
    note = f"; worker CPU {extra['worker_cpu_s']} s, {extra['events_per_cpu_s']:,.0f} events per CPU second" if "worker_cpu_s" in extra else ""
    if "cpu_us_per_event" in extra:
        note += f"; CPU per event (us): {', '.join(f'{k} {v}' for k, v in extra['cpu_us_per_event'].items())}"
    return note


# the services ---------------------------------------------------------------------------------------


def _execution_events(run: str, n: int, expected: dict) -> Iterator[tuple[str, dict]]:
    """The dataset's generator (a scratch schema each run, so repeated ids do no harm)."""
    expected.update(good=0, reject=0, events=0)
    for event_type, record in dataset.generate(n):
        expected["events"] += 1
        if event_type == "PartsProduced":
            expected["good"] += record["good"]
            expected["reject"] += record["reject"]
        yield event_type, record


def _execution_check(found: tuple, expected: dict) -> tuple[bool, str]:
    good, reject, processed = (int(v) for v in found)
    ok = (good, reject, processed) == (expected["good"], expected["reject"], expected["events"])
    return ok, (f"projection {'OK' if ok else 'WRONG'}: good {good:,} (expected {expected['good']:,}), reject {reject:,} "
                f"(expected {expected['reject']:,}), processed_events {processed:,} (expected {expected['events']:,})")


EXECUTION = Workload(
    service="execution", events=_execution_events, check=_execution_check,
    query=('SELECT (SELECT coalesce(sum(good), 0) FROM "{schema}".production), '
           '(SELECT coalesce(sum(reject), 0) FROM "{schema}".production), '
           '(SELECT count(*) FROM "{schema}".processed_events)'),
    describe="the dataset: PartsProduced and MachineStateChanged over 200 units (downtime derived)")


def workloads() -> dict[str, Workload]:
    from bench.inventory import INVENTORY
    from bench.maintenance import MAINTENANCE
    from bench.quality import QUALITY
    return {w.service: w for w in (EXECUTION, QUALITY, MAINTENANCE, INVENTORY)}


def service(ctx: Context, workload: Workload, n: int, *, replay_events: int, latency_fraction: float,
            latency_seconds: float, naive_events: int, replay_workers: Sequence[int] = (1,)) -> dict[str, dict]:
    """One service: throughput and memory over n events (execution: the dataset), replay of the tail, latency
    at a fraction of the throughput just measured, and the naive baseline; one result each."""
    name = workload.service
    out: dict[str, dict] = {}
    expected: dict = {}
    if name == "execution":  # the pre-produced dataset, so the 1M run needs no producing
        events, start = None, ctx.dataset_start()
        expected.update(good=ctx.manifest["good"], reject=ctx.manifest["reject"], events=ctx.n)
        n = ctx.n
    else:
        events, start = workload.events(uuid.uuid4().hex[:8], n, expected), None
        ctx.log(f"{name}: producing {n:,} events, then one worker over them")
    try:
        timed = timed_worker(ctx, name, events, workload.query, env=workload.env, start=start,
                             replay_events=replay_events, replay_workers=replay_workers)
    except Exception as exc:  # noqa: BLE001 - a failed scenario is a result too
        return {name: {**_failed(exc, name), "kind": "throughput", "service": name}}
    ok, check = workload.check(timed.found, expected)
    rss = timed.rss_mb
    extra = _cpu_figures(timed)
    if workload.per_event:
        unit, per = workload.per_event
        extra[f"{unit}_per_s"] = round(timed.events_per_s * per, 1)
    out[name] = _result(timed.events, timed.seconds, (
        f"python -m services.{name} (one worker), {workload.describe}; Kafka to committed projection, timed from the "
        f"first committed position to the last; {n:,} events; RSS start {rss.get('start')} MB, peak {rss.get('peak')} MB, "
        f"end {rss.get('end')} MB ({'flat' if rss.get('flat') else 'GROWING'}); {check}"
        + _cpu_note(extra)),
        kind="throughput", service=name, projection_ok=ok, rss_mb=rss, wall_from_process_start_s=timed.wall_s, **extra)
    for workers, r in timed.replays.items():
        key = f"{name}.replay" if workers == 1 else f"{name}.replay_{workers}w"
        processes = "one process" if workers == 1 else f"{workers} processes sharing the fold and the settle (`--workers {workers}`)"
        out[key] = {**r, "kind": "replay", "service": name, "workers": workers, "notes": (
            f"services.common.replay.rebuild (what `mom replay {name}` runs) of the last {r.get('segment_events', r['events']):,} "
            f"events of that stream into an empty schema, {processes}, timed from the first committed position to the "
            f"last; the whole rebuild with group join took {r['rebuild_seconds']} s")}
    rate = max(100, round(timed.events_per_s * latency_fraction, -2))
    try:
        total = int(rate * latency_seconds)
        out[f"{name}.latency"] = {**fixed_rate(ctx, name, workload.events(uuid.uuid4().hex[:8], total, {}), rate,
                                               latency_seconds, env=workload.env),
                                  "kind": "latency", "service": name,
                                  "rate_basis": f"{latency_fraction:.0%} of the {timed.events_per_s:,.0f} events/s measured above"}
    except Exception as exc:  # noqa: BLE001
        out[f"{name}.latency"] = {**_failed(exc, "latency"), "kind": "latency", "service": name}
    try:
        out[f"{name}.naive"] = {**naive(ctx, workload, naive_events), "kind": "naive", "service": name}
    except Exception as exc:  # noqa: BLE001
        out[f"{name}.naive"] = {**_failed(exc, "naive"), "kind": "naive", "service": name}
    return out


def execution_latency(ctx: Context, rate: int, seconds: float, workers: Sequence[int] = (1,)) -> dict[str, dict]:
    """The issue's target point: execution fed 10,000 events/s, whatever it sustains, once per count of
    workers (one consumer group sharing the partitions)."""
    out = {}
    for n in workers:
        key = "execution_latency" if n == 1 else f"execution_latency_{n}w"
        try:
            result = fixed_rate(ctx, "execution", EXECUTION.events(f"lat{n}", int(rate * seconds), {}), rate, seconds,
                                workers=n, name=f"execution-latency-{n}w")
        except Exception as exc:  # noqa: BLE001 - a failed scenario is a result too
            out[key] = {**_failed(exc, key), "kind": "latency", "service": "execution", "workers": n}
            continue
        p99 = result["latency_ms"]["p99"]
        result["notes"] += f"; target p99 <= 500 ms at 10,000 events/s: {'met' if p99 <= 500 and rate >= 10_000 else 'NOT met'}"
        out[key] = {**result, "kind": "latency", "service": "execution"}
    return out


# the naive baseline ---------------------------------------------------------------------------------


def naive(ctx: Context, workload: Workload, n: int) -> dict:
    """bench.faust_worker (a faust agent, one ORM upsert per event) over the first n events of the service's
    stream, copied to a topic of their own so that faust reads only them from the start."""
    from bench.faust_worker import DDL, PROGRESS

    run = uuid.uuid4().hex[:8]
    topic, schema = f"bench.naive.{workload.service}.{run}", f"naive_bench_{run}"
    admin = mom_kafka.admin(ctx.kafka)
    for future in admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)]).values():
        future.result()
    try:
        count = produce(ctx, itertools.islice(workload.events(run, n, {}), n), topic=topic)
        (ctx.config.state_dir / "faust").mkdir(parents=True, exist_ok=True)
        with ctx.superuser() as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(DDL.format(schema=f'"{schema}"'))
        env = {**os.environ, "MOM_BENCH_APP_ID": f"bench-naive-{run}", "MOM_BENCH_BOOTSTRAP": ctx.config.bootstrap,
               "MOM_BENCH_TOPIC": topic, "MOM_DATABASE_URL": ctx.config.db_url(), "MOM_DB_SCHEMA": schema,
               "MOM_BENCH_DATADIR": str(ctx.config.state_dir / "faust" / run)}
        proc, log_path = spawn(ctx, [PYTHON, "-m", "bench.faust_worker", "worker", "-l", "warn", "--without-web"], env,
                               f"naive-{workload.service}")

        def alive() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"the faust agent exited with {proc.returncode}; see {log_path}")

        try:
            with ctx.superuser() as conn:
                sql = PROGRESS.format(schema=f'"{schema}"')
                watched = watch(proc, lambda: int(conn.execute(sql).fetchone()[0]), count, alive, 900, "naive")
        finally:
            stop_process(proc)
    finally:
        with ctx.superuser() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            future.result()
    return _result(count - watched.first_n, watched.seconds, (
        f"faust agent (aiokafka driver) reading event by event, codec decode, one SQLAlchemy ORM upsert "
        f"(INSERT .. ON CONFLICT on a row per key) in its own transaction per event; the first {count:,} events "
        f"of the {workload.service} stream"), rss_mb=watched.rss_mb)


# ingest ---------------------------------------------------------------------------------------------


def ingest(ctx: Context, requests: int, size: int, concurrency: int, repeat: int, *, latency_fraction: float,
           latency_seconds: float, latency_size: int) -> dict[str, dict]:
    """One ingest process: accepted events/s (median of `repeat` client runs), its RSS over all of them, and the
    latency from a request's slot to its 202 at a fixed rate, a fraction of the throughput just measured."""
    env_ingest = localstack.service_env(ctx.config, "ingest")
    url = f"http://127.0.0.1:{ctx.config.ingest_port}"
    token = env_ingest["MOM_INGEST_TOKENS"].split(",")[0].partition(":")[2] or env_ingest["MOM_INGEST_TOKENS"]
    proc, log_path = spawn(ctx, [PYTHON, "-m", "services.ingest"], {**os.environ, **env_ingest, "MOM_LOG_LEVEL": "WARNING"},
                           "ingest")
    samples: list[tuple[float, float]] = []
    began = time.perf_counter()

    def client(*args: str) -> dict:
        """Run the client, sampling ingest's RSS every second meanwhile."""
        out = ctx.config.state_dir / f"bench-ingest-client-{uuid.uuid4().hex[:6]}.json"
        with open(out, "wb") as sink:
            child = subprocess.Popen([PYTHON, "-m", "bench.ingest_client", url, token, *args], cwd=REPO_ROOT,
                                     stdout=sink, stderr=subprocess.PIPE)
            while child.poll() is None:
                value = rss_mb(proc.pid)
                if value is not None:
                    samples.append((time.perf_counter() - began, value))
                time.sleep(1.0)
        try:
            if child.returncode != 0:
                raise RuntimeError(f"ingest client failed: {child.stderr.read()[-2000:]!r}")
            return json.loads(out.read_text())
        finally:
            out.unlink(missing_ok=True)

    out: dict[str, dict] = {}
    try:
        if not _wait_http(url + "/healthz", proc, 60):
            raise RuntimeError("ingest did not answer /healthz in 60 s: "
                               + (localstack._tail(log_path, 8).strip().splitlines() or ["(no log)"])[-1])
        runs, problems = [], []
        for i in range(repeat):
            run = client("--requests", str(requests), "--size", str(size), "--concurrency", str(concurrency),
                         "--run", f"{uuid.uuid4().hex[:6]}-{i}")
            if run["accepted"] != run["sent"] or set(run["statuses"]) != {"202"}:
                problems.append(f"run {i}: accepted {run['accepted']} of {run['sent']}, statuses {run['statuses']}, {run['problems']}")
            runs.append(_result(run["accepted"], run["seconds"], "", statuses=run["statuses"]))
        accepted = sum(r["events"] for r in runs)
        notes = (f"python -m services.ingest (one process), {requests} POSTs x {size} events, {concurrency} connections "
                 f"from a separate aiohttp client process; accepted events/s; RSS over all {accepted:,} accepted events")
        if problems:
            notes += "; PROBLEMS: " + " | ".join(problems)
        out["ingest"] = {**_median_of(runs, notes, all_accepted=not problems), "kind": "throughput", "service": "ingest",
                         "rss_mb": rss_summary(samples), "events_through_process": accepted}
        rate = max(100, round(out["ingest"]["events_per_s"] * latency_fraction, -2))
        try:
            lat = client("--requests", str(max(1, int(rate * latency_seconds / latency_size))), "--size", str(latency_size),
                         "--concurrency", str(concurrency), "--rate", str(rate), "--run", uuid.uuid4().hex[:6])
            if set(lat["statuses"]) != {"202"}:
                raise RuntimeError(f"not every request was accepted: {lat['statuses']} {lat['problems']}")
            lat_ms = summary(lat["latencies_ms"])
            out["ingest.latency"] = {
                "events": lat["accepted"], "seconds": round(lat["seconds"], 3),
                "events_per_s": round(lat["accepted"] / lat["seconds"], 1), "rate_fed": rate, "latency_ms": lat_ms,
                "kind": "latency", "service": "ingest",
                "rate_basis": f"{latency_fraction:.0%} of the {out['ingest']['events_per_s']:,.0f} events/s measured above",
                "notes": (f"requests of {latency_size} events sent open loop at {rate:,.0f} events/s for {latency_seconds:g} s; "
                          f"from each request's slot to its 202 (events on Kafka); p50 {lat_ms['p50']:.0f} ms, "
                          f"p95 {lat_ms['p95']:.0f} ms, p99 {lat_ms['p99']:.0f} ms")}
        except Exception as exc:  # noqa: BLE001
            out["ingest.latency"] = {**_failed(exc, "ingest latency"), "kind": "latency", "service": "ingest"}
    except Exception as exc:  # noqa: BLE001
        out.setdefault("ingest", {**_failed(exc, "ingest"), "kind": "throughput", "service": "ingest"})
    finally:
        stop_process(proc)
        # ingest wrote to the machine topic: the dataset there is no longer exactly N events
        dataset.manifest_path(ctx.config.state_dir).unlink(missing_ok=True)
    return out


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False
