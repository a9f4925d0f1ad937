"""The chaos driver: the simulator feeds every service through ingest while services are killed with
SIGKILL at random moments, one service is scaled 1 -> 2 -> 1, and (in the full run) the broker and
PostgreSQL are restarted once each. Then it checks that nothing was lost or doubled:

- every service's projection equals a clean replay of the same topics into an empty schema
  (services.common.replay rebuild + compare, as `mom replay` does);
- every derived topic, read with read_committed, holds unique event_ids during the run, and the same
  set as the replay derives (the replay's outbox, which a rebuild never publishes);
- mom.ingest.rejected holds exactly the bad input the driver injected.

The services run as workers of this driver on schemas of their own (`chaos_<run>_<service>`), with
positions seeded at the current end of their input topics, so a run sees only its own events on
topics that keep every earlier run's. See docs/chaos.md.

    python -m tests.chaos.driver            # the full run (make chaos)
    python -m tests.chaos.driver --short    # the short run (also tests/chaos/test_chaos_short.py)
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException, TopicPartition

from services.cli import prepare
from services.common import kafka, localstack
from services.common.catalogue import Catalogue
from services.common.kafka import end_offsets
from services.common.outbox import FAULT_KILL_AFTER_COMMIT, FAULT_KILL_AFTER_PUBLISH
from services.common.replay import compare, rebuild, seed_positions
from services.common.settings import REPO_ROOT, KafkaSettings, Settings
from simulator import engine, plant, send
from simulator.progress import lag
from tests.waiting import wait_until

SERVICES = ("execution", "quality", "maintenance", "inventory")
AWAY = (psycopg.OperationalError, KafkaException)  # what asking the stack raises while the broker or PostgreSQL restarts
REJECTED = "mom.ingest.rejected"
FAULT_HOOKS = (FAULT_KILL_AFTER_COMMIT, FAULT_KILL_AFTER_PUBLISH)

CHAOS_DEFAULTS = {  # `make chaos` runs its own stack beside a developer's and the tests'
    "MOM_KAFKA_PORT": "27092", "MOM_KAFKA_CONTROLLER_PORT": "27093", "MOM_PG_PORT": "26432",
    "MOM_REGISTRY_PORT": "27081", "MOM_INGEST_PORT": "27000", "MOM_EXECUTION_PORT": "27101",
    "MOM_QUALITY_PORT": "27102", "MOM_MAINTENANCE_PORT": "27103", "MOM_INVENTORY_PORT": "27104",
}


@dataclass(frozen=True)
class Plan:
    """What a run does. `kills` are SIGKILLs of services (ingest among them), a third of them in the
    windows between a database commit and the outbox publish, or between the publish and the delete
    of the outbox rows (the fault hooks, by turns), a third while the
    service has work in hand (mid-batch), the rest at a random moment."""
    plant: str
    kills: int
    broker_restart: bool
    postgres_restart: bool
    scaled: str = "execution"
    seed: int = 1
    rate: float = 0.0          # events/s of the feed (0: derived from the number of kills)
    batch: int = 200
    bad_requests: int = 6      # requests of injected bad input
    bad_per_request: int = 25

    @classmethod
    def full(cls, seed: int = 1) -> Plan:
        # 28 actions over the default plant's ~6,000 events: small requests, so that data flows during each
        return cls(plant="default.yaml", kills=24, broker_restart=True, postgres_restart=True, seed=seed, batch=50)

    @classmethod
    def short(cls, seed: int = 1) -> Plan:
        return cls(plant="small.yaml", kills=5, broker_restart=False, postgres_restart=False, seed=seed,
                   bad_requests=3)


@dataclass
class Action:
    at_s: float
    kind: str                  # kill, restart-broker, restart-postgres, scale
    target: str
    mode: str = ""             # kill: after-commit, mid-batch, random
    detail: dict = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workers:
    """The service processes of a run: started, killed and restarted by the driver (ingest by localstack)."""

    def __init__(self, config: localstack.StackConfig, run: str, run_dir: Path) -> None:
        self.config, self.run, self.run_dir = config, run, run_dir
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}
        self.lock = threading.Lock()

    def schema(self, service: str) -> str:
        return f"chaos_{self.run}_{service}"

    def env(self, service: str, fault: str | None = None) -> dict[str, str]:
        """The worker's environment; `fault` names a fault hook to set to 1 (it fires at its first chance)."""
        env = {**os.environ, **localstack.service_env(self.config, service),
               "MOM_DATABASE_URL": self.config.db_url(), "MOM_DB_SCHEMA": self.schema(service),
               "MOM_GROUP_ID": f"chaos.{self.run}.{service}", "MOM_HTTP_PORT": str(_free_port()),
               "MOM_BATCH_MAX_EVENTS": "300", "MOM_KAFKA_SESSION_TIMEOUT_MS": "6000", "MOM_LOG_LEVEL": "WARNING"}
        for hook in FAULT_HOOKS:
            env.pop(hook, None)
        if fault:
            env[fault] = "1"
        return env

    def start(self, service: str, worker: int = 0, fault: str | None = None) -> subprocess.Popen:
        with open(self.run_dir / f"{service}-{worker}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", f"services.{service}"], env=self.env(service, fault),
                                    cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with self.lock:
            self.procs[(service, worker)] = proc
        return proc

    def kill(self, service: str, worker: int = 0) -> int | None:
        with self.lock:
            proc = self.procs.get((service, worker))
        if proc is None or proc.poll() is not None:
            return None
        proc.send_signal(signal.SIGKILL)
        return proc.wait()

    def stop(self, service: str, worker: int = 0) -> None:
        with self.lock:
            proc = self.procs.pop((service, worker), None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def ensure(self) -> list[str]:
        """Restart every worker that died on its own (the fault hook); returns which."""
        restarted = []
        with self.lock:
            dead = [key for key, proc in self.procs.items() if proc.poll() is not None]
        for service, worker in dead:
            restarted.append(f"{service}-{worker} (exit {self.procs[(service, worker)].returncode})")
            self.start(service, worker)
        return restarted

    def stop_all(self) -> None:
        for key in list(self.procs):
            self.stop(*key)


class Chaos:
    def __init__(self, config: localstack.StackConfig, plan: Plan, log=print) -> None:
        self.config, self.plan, self.log = config, plan, log
        self.run = uuid.uuid4().hex[:8]
        self.run_dir = config.state_dir / "chaos" / self.run
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(plan.seed)                 # the chaos's choices
        self.feed_rng = random.Random(f"{plan.seed}-feed")  # the feed's (its own thread)
        self.workers = Workers(config, self.run, self.run_dir)
        self.actions: list[Action] = []
        self.ingest_lock = threading.Lock()   # held while bad input is sent, and while ingest or the broker is down
        self.feed_done = threading.Event()
        self.feed_failure: str | None = None
        self.away = threading.Event()         # set while the broker or PostgreSQL is restarted by the chaos
        self.acting = threading.Lock()        # held while an action kills and restarts: no one else restarts then
        # The chaos keeps pace with the feed, and the feed with the chaos: an action waits until its share
        # of the events has been sent, and the feed goes no further than the next action's share until it
        # is done. So every action happens while data flows, however long a restart takes on this machine.
        self.gate = threading.Condition()
        self.fed = 0                          # events sent so far
        self.after_commit_kills = 0           # kills by a fault hook so far (the hooks take turns)
        self.allowed = float("inf")           # the feed may send while fed < allowed (set by the chaos)
        self.reserve = 0                      # what feed_on keeps back for the actions still to come
        self.total = 0
        self.sent = Counter()
        self.injected: dict[str, str] = {}    # dead letter event id -> the item verbatim (JSON)
        self.started = time.monotonic()
        self.status: dict = {}
        self.catalogue = Catalogue.load()

    # Setup -----------------------------------------------------------------------------------

    def settings(self, service: str) -> Settings:
        env = self.workers.env(service)
        return Settings.from_env(service, env)

    def input_topics(self, service: str) -> list[str]:
        build = importlib.import_module(f"services.{service}.app").build
        return list(build(self.settings(service), self.catalogue).input_topics)

    def output_topic(self, service: str) -> str:
        (topic,) = [t.name for t in self.catalogue.written_by(service)]
        return topic

    def setup(self) -> None:
        from services.common.migrations import upgrade

        self.status = localstack.up(self.config, services=("ingest",), after_infra=prepare)
        localstack.stop_services(self.config, SERVICES)  # only this run's workers may write the derived topics
        self.kafka = KafkaSettings(bootstrap=self.status["kafka"]["bootstrap"])
        topics = sorted({t for s in SERVICES for t in self.input_topics(s)} | {REJECTED}
                        | {self.output_topic(s) for s in SERVICES})
        self.starts = end_offsets(self.kafka, topics)
        admin = self.config.db_url()
        for service in SERVICES:
            upgrade(admin, service, schema=self.workers.schema(service))
            mine = set(self.input_topics(service))
            seed_positions(admin, self.workers.schema(service),
                           {tp: o for tp, o in self.starts.items() if tp[0] in mine})
            self.workers.start(service)

    # The feed ----------------------------------------------------------------------------------

    def ingest_post(self, items: list[dict], *, retry: bool = True) -> dict:
        url, token = self.status["ingest"]["url"], self.status["ingest"]["token"]
        while True:
            try:
                answer = send.post(url, token, items, timeout=60)
                if answer["failed"] == 0:
                    return answer
                self.sent["retried (failed items)"] += 1
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise
                self.sent[f"retried (HTTP {exc.code})"] += 1
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                self.sent["retried (ingest unreachable)"] += 1
            if not retry:
                raise RuntimeError("ingest did not take the request")
            time.sleep(0.3)

    def lag(self, schemas: list[str]) -> tuple[dict[str, int], int] | None:
        """simulator.progress.lag, or None while the broker or PostgreSQL is away (a restart of the chaos)."""
        if self.away.is_set():
            return None
        try:
            return lag(self.status, schemas)
        except AWAY:
            return None

    def caught_up(self, *, quiet_polls: int = 1, interval_s: float = 0.1, stall_s: float = 180.0) -> float:
        """Until every service has read its topics to the end with its outbox empty, `quiet_polls` times in a
        row. Gives up when no position has moved for `stall_s` (a restart of the broker or PostgreSQL, during
        which the lag cannot be read, counts as no progress); workers that died on their own are restarted."""
        schemas = [self.workers.schema(s) for s in SERVICES]
        seen = {"quiet": 0, "total": -1, "behind": None}
        started = time.monotonic()

        def check() -> bool:
            if self.acting.acquire(blocking=False):  # not under an action that is killing and restarting
                try:
                    self.workers.ensure()
                finally:
                    self.acting.release()
            found = self.lag(schemas)
            if found is None:
                seen["quiet"] = 0
                return False
            seen["behind"], seen["total"] = found
            seen["quiet"] = seen["quiet"] + 1 if not any(found[0].values()) else 0
            return seen["quiet"] >= quiet_polls

        if not wait_until(check, lambda: seen["total"], stall_s=stall_s, limit_s=3600, interval_s=interval_s):
            raise TimeoutError(f"services did not catch up: still behind {seen['behind']} after "
                               f"{time.monotonic() - started:.0f} s; {self.what_is_behind()}")
        return time.monotonic() - started

    def bad_items(self, events: list[dict], count: int) -> list[dict]:
        from tests.chaos.payloads import breakings

        picked = []
        for event in self.feed_rng.sample(events, count):
            item, _, _ = self.feed_rng.choice([b for b in breakings(event)
                                          if "nan" not in json.dumps(b[0], allow_nan=True).lower()
                                          and "18446744073709551616" not in json.dumps(b[0])])
            picked.append(item)
        return picked

    def feed(self, sim: engine.Simulation) -> None:
        requests = send.requests(sim.events, self.plan.batch, sim.barriers)
        bad_at = set(self.feed_rng.sample(range(1, len(requests)), min(self.plan.bad_requests, len(requests) - 1)))
        pacer_rate = self.plan.rate or max(len(sim.events) / max(self.plan.kills * 4.0, 20.0), 50.0)
        started = time.monotonic()
        done = 0
        try:
            for number, (first, chunk) in enumerate(requests):
                with self.gate:
                    self.gate.wait_for(lambda: self.fed < self.allowed)
                if first and chunk[0]["event_id"] in sim.barriers:
                    self.caught_up()
                if number in bad_at:
                    self.inject_bad(sim.events)
                self.ingest_post(chunk)
                done += len(chunk)
                self.sent["events"] += len(chunk)
                self.sent["requests"] += 1
                with self.gate:
                    self.fed = done
                    self.gate.notify_all()
                ahead = done / pacer_rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except Exception as exc:  # the report says what stopped the feed
            self.feed_failure = f"the feed stopped after {done} events: {type(exc).__name__}: {exc}"
            self.log(self.feed_failure)
        finally:
            with self.gate:
                self.feed_done.set()
                self.gate.notify_all()

    def inject_bad(self, events: list[dict]) -> None:
        items = self.bad_items(events, self.plan.bad_per_request)
        with self.ingest_lock:  # no kill of ingest, no broker restart while the refusals are written
            answer = self.ingest_post(items)
        for result in answer["results"]:
            assert result["status"] == "rejected", result
            self.injected[f"rejected:{answer['request_id']}:{result['index']}"] = json.dumps(items[result["index"]])
        self.sent["bad items"] += len(items)

    # The chaos ---------------------------------------------------------------------------------

    def schedule(self) -> list[tuple[str, str, str]]:
        """(kind, target, mode) in the order they happen."""
        targets = ["ingest", *SERVICES]
        modes = ["after-commit", "mid-batch", "random"]
        kills = []
        for i in range(self.plan.kills):  # every service at least once, then at random
            target = targets[i] if i < len(targets) else self.rng.choice(targets)
            mode = modes[i % 3] if target != "ingest" else "random"
            kills.append(("kill", target, mode))
        self.rng.shuffle(kills)
        events = list(kills)
        third = max(len(events) // 3, 1)
        events.insert(third, ("scale", self.plan.scaled, "2"))
        events.insert(2 * third + 1, ("scale", self.plan.scaled, "1"))
        if self.plan.broker_restart:
            events.insert(len(events) // 2, ("restart-broker", "kafka", ""))
        if self.plan.postgres_restart:
            events.insert(3 * len(events) // 4, ("restart-postgres", "postgresql", ""))
        return events

    def behind(self) -> dict[str, dict[str, list[int]]]:
        """Per service, the input partitions whose stored position is short of the end: [position, end]."""
        found: dict[str, dict[str, list[int]]] = {}
        with psycopg.connect(self.config.db_url(), autocommit=True) as conn:
            for service in SERVICES:
                rows = conn.execute(f'SELECT topic, partition, next_offset FROM "{self.workers.schema(service)}".positions')
                stored = {(t, n): o for t, n, o in rows.fetchall()}
                ends = end_offsets(self.kafka, sorted({t for t, _ in stored}))
                found[service] = {f"{t}[{n}]": [o, ends[(t, n)]] for (t, n), o in sorted(stored.items())
                                  if ends.get((t, n), o) > o}
        return found

    def what_is_behind(self) -> str:
        """For a report: the input partitions short of their end, and the outbox rows waiting, per service."""
        try:
            partitions = self.behind()
            with psycopg.connect(self.config.db_url(), autocommit=True) as conn:
                outboxes = {s: conn.execute(f'SELECT count(*) FROM "{self.workers.schema(s)}".outbox').fetchone()[0]
                            for s in SERVICES}
        except AWAY as exc:
            return f"not known ({type(exc).__name__})"
        return f"partitions behind [position, end]: {partitions}; outbox rows waiting: {outboxes}"

    def busy(self, service: str) -> int:
        found = self.lag([self.workers.schema(service)])
        return sum(found[0].values()) if found else 0

    def act(self, kind: str, target: str, mode: str) -> None:
        with self.acting:
            self._act(kind, target, mode)

    def _act(self, kind: str, target: str, mode: str) -> None:
        action = Action(round(time.monotonic() - self.started, 2), kind, target, mode, {"events_sent": self.fed})
        if kind == "kill" and target == "ingest":
            with self.ingest_lock:
                pid = localstack._our_pid(self.config, "ingest")
                if pid:
                    os.kill(pid, signal.SIGKILL)
                action.detail["pid"] = pid
                self._wait_dead(pid)
                localstack.up(self.config, services=("ingest",))
        elif kind == "kill" and mode == "after-commit":
            self.workers.stop(target)
            # It dies right after its first commit with derived events, or right after their first Kafka
            # transaction (before the outbox rows are deleted): the two hooks take turns.
            # (Only a leading relay publishes: with a second worker running, that one may lead.)
            alone = not any(s == target and w != 0 for s, w in self.workers.procs)
            hook = FAULT_HOOKS[self.after_commit_kills % len(FAULT_HOOKS)] if alone else FAULT_KILL_AFTER_COMMIT
            self.after_commit_kills += 1
            action.detail["hook"] = hook
            proc = self.workers.start(target, fault=hook)
            deadline = time.monotonic() + 90
            while proc.poll() is None and time.monotonic() < deadline:
                if not self.busy(target):
                    if self.feed_done.is_set():
                        break  # nothing more will come
                    self.feed_on()  # it needs input that derives something
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            action.detail["hook_fired"] = proc.returncode == -signal.SIGKILL
            action.detail["exit"] = proc.returncode if proc.returncode is not None else self.workers.kill(target)
            self.workers.start(target)
        elif kind == "kill":
            if mode == "mid-batch":
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not self.busy(target) and not self.feed_done.is_set():
                    self.feed_on()
                    time.sleep(0.05)
                time.sleep(self.rng.uniform(0, 0.3))
                action.detail["lag_at_kill"] = self.busy(target)
            action.detail["exit"] = self.workers.kill(target)
            self.workers.start(target)
        elif kind == "scale":
            if mode == "2":
                self.workers.start(target, worker=1)
            else:
                self.workers.stop(target, worker=1)
        elif kind == "restart-broker":
            with self.ingest_lock:
                self.away.set()
                try:
                    localstack._stop_all(self.config, ["kafka"], localstack.KAFKA_STOP_GRACE)
                    localstack.up(self.config, services=("ingest",))
                finally:
                    self.away.clear()
        elif kind == "restart-postgres":
            self.away.set()
            try:
                localstack._stop_postgres(self.config)
                localstack.up(self.config, services=("ingest",))
            finally:
                self.away.clear()
        action.detail["restarted_on_their_own"] = self.workers.ensure()
        self.actions.append(action)
        self.log(f"[{action.at_s:7.1f}s] {kind} {target} {mode} {action.detail}")

    def feed_on(self) -> None:
        """Let the feed send one more request beyond its share, for an action that waits for work."""
        with self.gate:
            self.allowed = max(self.allowed, min(self.fed + self.plan.batch, self.total - self.reserve))
            self.gate.notify_all()

    @staticmethod
    def _wait_dead(pid: int | None) -> None:
        while pid and localstack._pid_alive(pid):
            time.sleep(0.02)

    def chaos(self, total: int) -> None:
        """The scheduled actions, each once a random point of its share of the events still to send (of
        `total`) has been sent; the feed waits at the end of that share until the action is done."""
        events = self.schedule()
        try:
            for i, (kind, target, mode) in enumerate(events):
                with self.gate:  # the share of what is left: an action that let the feed on shifts the rest
                    self.total, self.reserve = total, (len(events) - i - 1) * self.plan.batch
                    share = max(total - self.fed, 0) / (len(events) - i + 1)
                    at = self.fed + self.rng.uniform(0.2, 0.8) * share
                    self.allowed = self.fed + share
                    self.gate.notify_all()
                    self.gate.wait_for(lambda at=at: self.fed >= at or self.feed_done.is_set())
                self.act(kind, target, mode)
        finally:
            with self.gate:
                self.allowed = float("inf")
                self.gate.notify_all()

    # The checks --------------------------------------------------------------------------------

    def read_ids(self, topic: str) -> list[str]:
        """event_id headers of `topic` since the run began, read with read_committed."""
        ends = {tp: o for tp, o in end_offsets(self.kafka, [topic]).items()}
        consumer = kafka.consumer(self.kafka, f"chaos.{self.run}.check.{uuid.uuid4().hex[:6]}")
        ids: list[str] = []
        for message in self.read_to_end(consumer, ends, timeout_s=120):
            ids.append(dict(message.headers() or ())["event_id"].decode())
        return ids

    def read_to_end(self, consumer, ends: dict[tuple[str, int], int], *, timeout_s: float):
        """The messages of the partitions of `ends` from the run's start up to those ends, then closes the
        consumer. Done is judged by the consumer's position, not by the last message's offset: a
        transactional topic ends in a commit marker, an offset no message has."""
        partitions = [TopicPartition(t, p, self.starts.get((t, p), 0)) for (t, p) in ends]
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(5000, 0.5):
                    if not message.error():
                        yield message
                positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(partitions)}
                if all(positions[tp] >= end for tp, end in ends.items() if end > self.starts.get(tp, 0)):
                    return
            # what was read stands; the checks that use it show what is missing
            self.log(f"read short of the end offsets {ends} in {timeout_s:.0f} s: positions {positions}")
        finally:
            consumer.close()

    def dead_letters(self) -> dict[str, str]:
        from services.common.avro import codec_for

        codec = codec_for(self.catalogue, self.status["registry"]["url"] or "", REPO_ROOT / "schemas")
        ends = end_offsets(self.kafka, [REJECTED])
        consumer = kafka.consumer(self.kafka, f"chaos.{self.run}.dlq")
        found: dict[str, str] = {}
        for message in self.read_to_end(consumer, ends, timeout_s=60):
            _, record = codec.decode(message.value())
            found[record["event_id"]] = record["payload"]
        return found

    def check(self) -> dict:
        admin = self.config.db_url()
        results: dict = {"services": {}, "stuck": None}
        try:
            results["caught_up_s"] = round(self.caught_up(quiet_polls=2, interval_s=0.3), 1)
        except TimeoutError as exc:  # a worker that stopped short: the checks below show what it lacks
            results["stuck"] = {"error": str(exc), "partitions": self.behind()}
            self.log(f"{exc}; behind: {results['stuck']['partitions']}")
        for service in SERVICES:
            build = importlib.import_module(f"services.{service}.app").build
            live, rebuilt = self.workers.schema(service), f"{self.workers.schema(service)}_replay"
            mine = set(self.input_topics(service))
            start = {tp: o for tp, o in self.starts.items() if tp[0] in mine}
            settings = replace(self.settings(service), group_id=f"chaos.{self.run}.{service}")
            seconds = asyncio.run(rebuild(settings, build, admin, rebuilt, start=start, timeout_s=600)).seconds
            differences = [asdict(d) for d in compare(admin, live, rebuilt) if d.only_live or d.only_replay]
            with psycopg.connect(admin, autocommit=True) as conn:
                replay_ids = [r[0] for r in conn.execute(f'SELECT event_id FROM "{rebuilt}".outbox').fetchall()]
                tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                                      (live,)).fetchone()[0]
            topic_ids = self.read_ids(self.output_topic(service))
            duplicates = {i: n for i, n in Counter(topic_ids).items() if n > 1}
            only_topic = sorted(set(topic_ids) - set(replay_ids))
            only_replay = sorted(set(replay_ids) - set(topic_ids))
            results["services"][service] = {
                "replay_s": round(seconds, 2), "tables_compared": tables, "table_differences": differences,
                "derived_on_topic": len(topic_ids), "derived_in_replay": len(replay_ids),
                "duplicate_ids_on_topic": dict(list(duplicates.items())[:20]), "duplicates": len(duplicates),
                "only_on_topic": only_topic[:20], "only_in_replay": only_replay[:20],
                "only_on_topic_count": len(only_topic), "only_in_replay_count": len(only_replay),
            }
        found = self.dead_letters()
        results["dead_letters"] = {
            "injected": len(self.injected), "on_topic": len(found),
            "missing": sorted(set(self.injected) - set(found))[:20],
            "unexpected": {k: v[:300] for k, v in list((k, found[k]) for k in sorted(set(found) - set(self.injected)))[:20]},
            "payload_mismatches": sorted(k for k in set(found) & set(self.injected)
                                         if json.loads(found[k]) != json.loads(self.injected[k]))[:20],
        }
        return results

    def cleanup(self, keep: bool) -> None:
        self.workers.stop_all()
        if keep:
            return
        with psycopg.connect(self.config.db_url(), autocommit=True) as conn:
            for service in SERVICES:
                for schema in (self.workers.schema(service), f"{self.workers.schema(service)}_replay"):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    # The run -----------------------------------------------------------------------------------

    def execute(self) -> dict:
        self.setup()
        sim = engine.simulate(plant.load(Path(plant.PLANTS_DIR) / self.plan.plant), seed=self.plan.seed, tag=self.run)
        self.allowed = 0  # until the chaos has its schedule
        feeder = threading.Thread(target=self.feed, args=(sim,), name="feed", daemon=True)
        feeder.start()
        failure = None
        try:
            self.chaos(len(sim.events))
        except Exception as exc:  # the report says what broke the run
            failure = f"{type(exc).__name__}: {exc}"
        feeder.join()
        failure = "; ".join(f for f in (failure, self.feed_failure) if f) or None
        fed_s = time.monotonic() - self.started
        results = self.check()
        kills = [a for a in self.actions if a.kind == "kill"]
        report = {
            "run": self.run, "plan": asdict(self.plan), "simulated_events": len(sim.events), "sent": dict(self.sent),
            "fed_in_s": round(fed_s, 1), "total_s": round(time.monotonic() - self.started, 1),
            "kills": len(kills), "kills_by_mode": dict(Counter(a.mode for a in kills)),
            "kills_by_target": dict(Counter(a.target for a in kills)),
            "after_commit_hook_fired": sum(1 for a in kills if a.detail.get("hook_fired")),
            "hooks_fired": dict(Counter(a.detail["hook"] for a in kills if a.detail.get("hook_fired"))),
            "mid_batch_with_lag": sum(1 for a in kills if a.detail.get("lag_at_kill")),
            "actions": [asdict(a) for a in self.actions], "failure": failure, **results,
        }
        report["verdict"] = verdict(report)
        return report


def verdict(report: dict) -> dict[str, bool]:
    services = report["services"]
    dl = report["dead_letters"]
    return {
        "projections_equal_replay": all(not s["table_differences"] for s in services.values()),
        "derived_ids_unique": all(s["duplicates"] == 0 for s in services.values()),
        "derived_ids_equal_replay": all(s["only_on_topic_count"] == 0 and s["only_in_replay_count"] == 0
                                        for s in services.values()),
        "dead_letters_exactly_injected": not dl["missing"] and not dl["unexpected"] and not dl["payload_mismatches"]
                                         and dl["injected"] == dl["on_topic"],
        "ran_without_failure": report["failure"] is None,
        "every_service_caught_up": report["stuck"] is None,
    }


def summary(report: dict) -> str:
    lines = [f"chaos run {report['run']}: {report['plan']['plant']}, {report['simulated_events']} events, "
             f"{report['kills']} SIGKILLs {report['kills_by_mode']} on {report['kills_by_target']}, "
             f"{report['after_commit_hook_fired']} by a fault hook {report['hooks_fired']}, "
             f"{report['mid_batch_with_lag']} with work in hand; fed in {report['fed_in_s']} s, "
             f"total {report['total_s']} s", f"sent: {report['sent']}"]
    for action in report["actions"]:
        if action["kind"] != "kill":
            lines.append(f"  {action['at_s']:7.1f} s  {action['kind']} {action['target']} {action['mode']}")
    for service, s in report["services"].items():
        lines.append(f"{service:<12} replay {s['replay_s']:6.2f} s, tables differing: "
                     f"{[d['table'] for d in s['table_differences']] or 'none'}; derived on topic {s['derived_on_topic']}, "
                     f"in replay {s['derived_in_replay']}, duplicates {s['duplicates']}, only on topic "
                     f"{s['only_on_topic_count']}, only in replay {s['only_in_replay_count']}")
    dl = report["dead_letters"]
    lines.append(f"dead letters: {dl['on_topic']} on the topic, {dl['injected']} injected, missing {len(dl['missing'])}, "
                 f"unexpected {len(dl['unexpected'])}, payload mismatches {len(dl['payload_mismatches'])}")
    if report["stuck"]:
        lines.append(f"not caught up: {report['stuck']['error']}; partitions behind [position, end]: "
                     f"{report['stuck']['partitions']}")
    if report["failure"]:
        lines.append(f"the chaos itself failed: {report['failure']}")
    lines.append("verdict: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in report["verdict"].items()))
    return "\n".join(lines)


def run(config: localstack.StackConfig, plan: Plan, log=print) -> tuple[dict, Path]:
    """One chaos run against the stack of `config`; returns the report and the path of report.json."""
    chaos = Chaos(config, plan, log)
    report = None
    try:
        report = chaos.execute()
    finally:
        chaos.cleanup(keep=report is None or not all(report["verdict"].values()))
    path = chaos.run_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    (chaos.run_dir / "report.txt").write_text(summary(report) + "\n")
    return report, path


def chaos_config(env=os.environ) -> localstack.StackConfig:
    merged = {**CHAOS_DEFAULTS, **{k: v for k, v in env.items() if k.startswith("MOM_")}}
    merged["MOM_STATE_DIR"] = env.get("MOM_CHAOS_STATE_DIR") or str(REPO_ROOT / ".mom" / "chaos")
    merged.setdefault("MOM_REGISTRY", "none")
    return localstack.StackConfig.from_env(merged)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.driver", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the short run of make test")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args(argv)
    # a SIGTERM unwinds like an exception, so the run's workers are stopped rather than left consuming
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config = chaos_config()
    plan = Plan.short(args.seed) if args.short else Plan.full(args.seed)
    was_up = localstack.status(config)["kafka"]["running"]
    try:
        report, path = run(config, plan)
    finally:
        if not was_up and not args.keep_stack:
            localstack.down(config)
    print(summary(report))
    print(f"report: {path} (and report.txt beside it)")
    return 0 if all(report["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
