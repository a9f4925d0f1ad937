"""The scenarios. Each returns a dict: events, seconds, events_per_s, notes (and extras); ratios are added later."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import KafkaError

from bench import dataset
from services.common import kafka as mom_kafka
from services.common import localstack
from services.common.avro import EventMapper, codec_for
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
        self._truth: dict[str, tuple[int, int]] | None = None

    def superuser(self) -> psycopg.Connection:
        return psycopg.connect(self.config.db_url(), autocommit=True)

    def reset_execution(self) -> None:
        with self.superuser() as conn:
            # every base table of the schema but Alembic's: the projector's tables change as execution grows
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'execution' "
                "AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'")]
            conn.execute("TRUNCATE " + ", ".join(f"execution.{t}" for t in tables))

    def progress(self, conn: psycopg.Connection) -> int:
        return int(conn.execute("SELECT coalesce(sum(next_offset), 0) FROM execution.positions").fetchone()[0])

    def truth(self) -> dict[str, tuple[int, int]]:
        """event_id -> (good, reject) of every PartsProduced in the dataset (regenerated, not read back)."""
        if self._truth is None:
            self._truth = {r["event_id"]: (r["good"], r["reject"])
                           for t, r in dataset.generate(self.n) if t == "PartsProduced"}
        return self._truth

    def check_projection(self, whole: bool) -> tuple[bool, str]:
        """Is execution.production (one row per PartsProduced) right? Whole run: against the manifest; a subset: against processed_events."""
        with self.superuser() as conn:
            good, reject = conn.execute(
                "SELECT coalesce(sum(good), 0), coalesce(sum(reject), 0) FROM execution.production").fetchone()
            processed = conn.execute("SELECT count(*) FROM execution.processed_events").fetchone()[0]
            if whole:
                want_good, want_reject, want_n = self.manifest["good"], self.manifest["reject"], self.n
            else:
                truth = self.truth()
                ids = [r[0] for r in conn.execute("SELECT event_id FROM execution.processed_events")]
                want_good = sum(truth[i][0] for i in ids if i in truth)
                want_reject = sum(truth[i][1] for i in ids if i in truth)
                want_n = processed
        ok = (int(good), int(reject), int(processed)) == (want_good, want_reject, want_n)
        return ok, (f"projection {'OK' if ok else 'WRONG'}: good {int(good):,} (expected {want_good:,}), "
                    f"reject {int(reject):,} (expected {want_reject:,}), processed_events {processed:,} (expected {want_n:,})")


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


# 1 and 2 -------------------------------------------------------------------------------------------


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


# 3 and 4: a worker process, watched through its committed positions ---------------------------------


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _watch_worker(ctx: Context, argv: list[str], env: dict, n: int, name: str, timeout_s: float) -> dict:
    """Start a worker, poll positions every 0.2 s until they sum to n, sample RSS every second, stop it."""
    log_path = ctx.config.logs_dir / f"bench-{name}.log"
    t_start = time.perf_counter()
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    rss: list[tuple[float, float]] = []
    first_t = first_n = rss_at_first_commit = None
    done_t = None
    last_rss = 0.0
    try:
        with ctx.superuser() as conn:
            while True:
                now = time.perf_counter()
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_path}")
                if now - last_rss >= 1.0:
                    value = _rss_mb(proc.pid)
                    if value is not None:
                        rss.append((now - t_start, value))
                    last_rss = now
                done = ctx.progress(conn)
                if done and first_t is None:
                    first_t, first_n = time.perf_counter(), done
                    rss_at_first_commit = _rss_mb(proc.pid)
                if done >= n:
                    done_t = time.perf_counter()
                    break
                if now - t_start > timeout_s:
                    raise RuntimeError(f"{name}: only {done:,} of {n:,} events after {timeout_s:.0f} s")
                time.sleep(0.2)
        final_rss = _rss_mb(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    events = n - first_n
    seconds = done_t - first_t
    out = _result(events, seconds, "", wall_from_process_start_s=round(done_t - t_start, 2),
                  events_per_s_from_process_start=round(n / (done_t - t_start), 1),
                  exit_code=proc.returncode, log=str(log_path))
    if rss:
        values = [v for _, v in rss] + ([final_rss] if final_rss else [])
        run_len = rss[-1][0]
        at20 = next((v for t, v in rss if t >= 0.2 * run_len), values[0])
        peak = max(values)
        out["rss_mb"] = {"start": round(values[0], 1),
                         "at_first_commit": round(rss_at_first_commit, 1) if rss_at_first_commit else None, "at_20pct": round(at20, 1), "peak": round(peak, 1),
                         "end": round(values[-1], 1), "growth_after_20pct": round(peak - at20, 1),
                         "flat": peak - at20 <= 0.1 * at20 + 10, "samples": len(values)}
    return out


def consumer_loop(ctx: Context, n: int, profile_to: Path | None = None) -> dict:
    ctx.reset_execution()
    env = {**os.environ, **localstack.service_env(ctx.config, "execution"),
           "MOM_GROUP_ID": f"bench-execution-{uuid.uuid4().hex[:8]}", "MOM_LOG_LEVEL": "WARNING"}
    argv = [PYTHON, "-m", "services.execution"]
    if profile_to is not None:
        argv = [PYTHON, "-m", "cProfile", "-o", str(profile_to), "-m", "services.execution"]
    result = _watch_worker(ctx, argv, env, n, "consumer_loop" if profile_to is None else "profile", timeout_s=900)
    ok, check = ctx.check_projection(whole=(n == ctx.n))
    rss = result.get("rss_mb", {})
    target = (f"; target >= 30,000 events/s: {'met' if result['events_per_s'] >= 30_000 else 'NOT met'}"
              f"; RSS peak {rss.get('peak')} MB, {'flat' if rss.get('flat') else 'GROWING'}"
              f" (target <= 300 MB flat: {'met' if rss.get('peak', 1e9) <= 300 and rss.get('flat') else 'NOT met'})")
    result["notes"] = ("python -m services.execution (one worker), Kafka to committed projection, "
                       "timed from the first committed position to the last" + target + "; " + check)
    result["projection_ok"] = ok
    with ctx.superuser() as conn:
        result["outbox_left"] = conn.execute("SELECT count(*) FROM execution.outbox").fetchone()[0]
        result["dead_letters"] = conn.execute("SELECT count(*) FROM execution.dead_letters").fetchone()[0]
    return result


def loop_overhead(ctx: Context, n: int) -> dict:
    """The shared loop (services.common.runtime / ConsumerLoop) with bench.overhead_worker's trivial projector."""
    from bench.overhead_worker import DDL, TABLE

    ctx.reset_execution()
    with ctx.superuser() as conn:
        conn.execute(DDL.format(schema="execution"))
        conn.execute(f"ALTER TABLE execution.{TABLE} OWNER TO mom_execution")
        conn.execute(f"TRUNCATE execution.{TABLE}")
    env = {**os.environ, **localstack.service_env(ctx.config, "execution"),
           "MOM_GROUP_ID": f"bench-loop-{uuid.uuid4().hex[:8]}", "MOM_LOG_LEVEL": "WARNING"}
    result = _watch_worker(ctx, [PYTHON, "-m", "bench.overhead_worker"], env, n, "loop_overhead", timeout_s=900)
    with ctx.superuser() as conn:
        events, good, reject = (int(v) for v in conn.execute(
            f"SELECT coalesce(sum(events), 0), coalesce(sum(good), 0), coalesce(sum(reject), 0) FROM execution.{TABLE}").fetchone())
        processed = conn.execute("SELECT count(*) FROM execution.processed_events").fetchone()[0]
        result["dead_letters"] = conn.execute("SELECT count(*) FROM execution.dead_letters").fetchone()[0]
    want = (ctx.n, ctx.manifest["good"], ctx.manifest["reject"], ctx.n)
    ok = (events, good, reject, processed) == want
    result["projection_ok"] = ok
    result["notes"] = ("python -m bench.overhead_worker: the shared worker host and ConsumerLoop with a trivial projector "
                       "(per-unit counters, one unnest upsert per batch), timed from the first committed position to the last; "
                       f"counters {'OK' if ok else 'WRONG'}: events {events:,}, good {good:,}, reject {reject:,}, "
                       f"processed_events {processed:,} (expected {want[0]:,}, {want[1]:,}, {want[2]:,}, {want[3]:,})")
    return result


def faust_agent(ctx: Context, n: int) -> dict:
    ctx.reset_execution()
    pylib = ctx.config.state_dir / "pylib"  # cramjam for aiokafka's lz4, installed here only (see README)
    app_id = f"bench-faust-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MOM_BENCH_APP_ID": app_id, "MOM_BENCH_BOOTSTRAP": ctx.config.bootstrap,
           "MOM_DATABASE_URL": localstack.service_env(ctx.config, "execution")["MOM_DATABASE_URL"],
           "MOM_BENCH_DATADIR": str(ctx.config.state_dir / "faust" / app_id)}
    if pylib.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pylib), os.environ.get("PYTHONPATH", "")]))
    (ctx.config.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    argv = [PYTHON, "-m", "bench.faust_worker", "worker", "-l", "warn", "--without-web"]
    try:
        result = _watch_worker(ctx, argv, env, n, "faust_agent", timeout_s=600)
    except RuntimeError as exc:
        log = ctx.config.logs_dir / "bench-faust_agent.log"
        tail = localstack._tail(log, 8)
        return {"events": n, "seconds": None, "events_per_s": None, "error": f"{exc}\n{tail}",
                "notes": "faust could not process the topic; see error"}
    ok, check = ctx.check_projection(whole=(n == ctx.n))
    result["projection_ok"] = ok
    result["notes"] = (f"faust 0.15 agent (aiokafka driver), stream.take_events(2000, within=0.05), same codec, mapper "
                       f"and ExecutionProjector, one transaction per batch; N={n:,}"
                       f"{' (a subset of the topic)' if n != ctx.n else ''}; {check}")
    return result


# 5 -----------------------------------------------------------------------------------------------------


async def _naive(ctx: Context, n: int) -> dict:
    from sqlalchemy import text

    from services.common.db import claim_event_ids, make_engine
    from services.execution.events import CONSUMED, EMITTED
    from services.execution.projections import ExecutionProjector

    ctx.reset_execution()
    engine = make_engine(localstack.service_env(ctx.config, "execution")["MOM_DATABASE_URL"], "execution")
    mapper = EventMapper(CONSUMED + EMITTED)
    projector = ExecutionProjector()
    upsert = text("""INSERT INTO positions (topic, partition, next_offset) VALUES (:t, :p, :o)
                     ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset""")
    consumer = mom_kafka.consumer(ctx.kafka, f"bench-naive-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([ctx.topic])
    count = 0
    first = None
    try:
        while count < n:
            records = await asyncio.to_thread(consumer.consume, 2000, 1.0)
            if first is None and records:
                first = time.perf_counter()
            for record in records:
                if record.error() is not None or count >= n:
                    continue
                event_type, body = ctx.codec.decode(record.value())
                event = mapper.to_event(event_type, body)
                async with engine.begin() as conn:  # one transaction per event: the defect §2.5 forbids
                    if await claim_event_ids(conn, [event.event_id]):
                        await projector.apply(conn, [event])
                    await conn.execute(upsert, {"t": record.topic(), "p": record.partition(), "o": record.offset() + 1})
                count += 1
        seconds = time.perf_counter() - first
    finally:
        consumer.close()
        await engine.dispose()
    return _result(count, seconds, "")


def naive_orm(ctx: Context, n: int, repeat: int) -> dict:
    runs = []
    checks = []
    for _ in range(repeat):
        runs.append(asyncio.run(_naive(ctx, n)))
        checks.append(ctx.check_projection(whole=(n == ctx.n)))
    ok = all(c[0] for c in checks)
    return _median_of(runs, "one transaction per event (claim id, ExecutionProjector.apply([event]), position upsert) "
                      f"from a confluent consume loop, N={n:,} subset; {checks[-1][1]}", projection_ok=ok)


# 6 -----------------------------------------------------------------------------------------------------


def ingest(ctx: Context, requests: int, size: int, concurrency: int, repeat: int) -> dict:
    if not (REPO_ROOT / "services" / "ingest" / "__main__.py").exists():
        return {"events": requests * size, "seconds": None, "events_per_s": None, "skipped": True,
                "notes": "skipped: services/ingest has no __main__.py in this checkout"}
    env_ingest = localstack.service_env(ctx.config, "ingest")
    env = {**os.environ, **env_ingest, "MOM_LOG_LEVEL": "WARNING"}
    url = f"http://127.0.0.1:{ctx.config.ingest_port}"
    token = env_ingest["MOM_INGEST_TOKENS"].split(",")[0].partition(":")[2] or env_ingest["MOM_INGEST_TOKENS"]
    log_path = ctx.config.logs_dir / "bench-ingest.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([PYTHON, "-m", "services.ingest"], env=env, cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    runs = []
    problems = []
    try:
        if not _wait_http(url + "/healthz", proc, 60):
            return {"events": requests * size, "seconds": None, "events_per_s": None, "skipped": True,
                    "notes": "skipped: ingest did not answer /healthz in 60 s: "
                             + (localstack._tail(log_path, 8).strip().splitlines() or ["(no log)"])[-1]}
        for i in range(repeat):
            answer = subprocess.run([PYTHON, "-m", "bench.ingest_client", url, token, "--requests", str(requests),
                                     "--size", str(size), "--concurrency", str(concurrency),
                                     "--run", f"{uuid.uuid4().hex[:6]}-{i}"],
                                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
            if answer.returncode != 0:
                raise RuntimeError(f"ingest client failed: {answer.stderr[-2000:]}")
            run = json.loads(answer.stdout)
            if run["accepted"] != run["sent"] or set(run["statuses"]) != {"202"}:
                problems.append(f"run {i}: accepted {run['accepted']} of {run['sent']}, statuses {run['statuses']}, {run['problems']}")
            runs.append(_result(run["accepted"], run["seconds"], "", statuses=run["statuses"]))
        rss = _rss_mb(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    notes = (f"python -m services.ingest (one process), {requests} POSTs x {size} events, {concurrency} connections "
             f"from a separate aiohttp client process; accepted events/s; ingest RSS at end {rss:.0f} MB")
    if problems:
        notes += "; PROBLEMS: " + " | ".join(problems)
    # ingest wrote to the machine topic: the dataset there is no longer exactly N events
    dataset.manifest_path(ctx.config.state_dir).unlink(missing_ok=True)
    return _median_of(runs, notes, all_accepted=not problems)


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
