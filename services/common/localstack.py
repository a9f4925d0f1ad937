"""The local stack: a real single-node Kafka, a private PostgreSQL and Apicurio Registry.

Plain functions over a frozen :class:`StackConfig`. Everything lives under one state directory
(``<repo>/.mom`` by default)::

    <state>/run/<name>.pid        pid of each process up() started (plain integer)
    <state>/run/<name>.cmdline    its argv, NUL-separated, to tell it from a recycled pid
    <state>/logs/<name>.log       stdout/stderr of every process (postgres.log for PostgreSQL)
    <state>/kafka/                rendered server.properties, cluster id, data/, logs/server.log
    <state>/pg/data, <state>/pg/socket
    <state>/ingest-token          the ingest service's bearer token (mode 600)

Only the stdlib, confluent_kafka and psycopg are used: nothing from the rest of ``services``.
The Kafka classpath and the registry archive come from the POMs under ``deploy/local/`` via
Maven; their resolved paths are cached in the state dir keyed by a hash of the POM.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy" / "local"

SERVICE_SCHEMAS = ("execution", "quality", "maintenance", "inventory")
INGEST = "ingest"
SUPERUSER = "mom"
DATABASE = "mom"
ANALYST_ROLE = "mom_analyst"
KPI_SCHEMA = "kpi"
REGISTRY_DB = "registry"
REGISTRY_ROLE = "mom_registry"

_DEFAULT_SERVICE_PORTS = {"execution": 18101, "quality": 18102, "maintenance": 18103, "inventory": 18104}
_INFRA_NAMES = ("kafka", "registry")

SERVICE_HEALTH_TIMEOUT = 60.0
KAFKA_START_TIMEOUT = 120.0
PG_START_TIMEOUT = 60
REGISTRY_START_TIMEOUT = 180.0
SERVICE_STOP_GRACE = 15.0
KAFKA_STOP_GRACE = 30.0
REGISTRY_STOP_GRACE = 20.0


class StackError(RuntimeError):
    """A part of the local stack could not be started, reached or stopped."""


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    kafka_port: int = 19092
    controller_port: int = 19093
    pg_port: int = 15432
    registry_port: int = 18081
    registry_enabled: bool = True
    ingest_port: int = 18000
    service_ports: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict(_DEFAULT_SERVICE_PORTS)), hash=False
    )
    kafka_heap: str = "512m"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StackConfig:
        def port(key: str, default: int) -> int:
            raw = env.get(key, "").strip()
            return int(raw) if raw else default

        registry = env.get("MOM_REGISTRY", "apicurio").strip().lower() or "apicurio"
        if registry not in ("apicurio", "none"):
            raise ValueError(f"MOM_REGISTRY must be 'apicurio' or 'none', not {registry!r}")
        state = env.get("MOM_STATE_DIR", "").strip()
        return cls(
            state_dir=Path(state).resolve() if state else REPO_ROOT / ".mom",
            kafka_port=port("MOM_KAFKA_PORT", 19092),
            controller_port=port("MOM_KAFKA_CONTROLLER_PORT", 19093),
            pg_port=port("MOM_PG_PORT", 15432),
            registry_port=port("MOM_REGISTRY_PORT", 18081),
            registry_enabled=registry == "apicurio",
            ingest_port=port("MOM_INGEST_PORT", 18000),
            service_ports=MappingProxyType(
                {
                    name: port(f"MOM_{name.upper()}_PORT", default)
                    for name, default in _DEFAULT_SERVICE_PORTS.items()
                }
            ),
            kafka_heap=env.get("MOM_KAFKA_HEAP", "").strip() or "512m",
        )

    # Derived locations -------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def pg_dir(self) -> Path:
        return _pg_home(self.state_dir)

    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "registry"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def registry_url(self) -> str | None:
        return f"http://127.0.0.1:{self.registry_port}/apis/ccompat/v7" if self.registry_enabled else None

    def db_url(self, user: str = SUPERUSER, database: str = DATABASE) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.pg_port}/{database}"

    def port_of(self, name: str) -> int:
        if name == INGEST:
            return self.ingest_port
        try:
            return self.service_ports[name]
        except KeyError:
            raise ValueError(
                f"unknown service {name!r}: expected {INGEST!r} or one of {sorted(self.service_ports)}"
            ) from None


# --------------------------------------------------------------------------------------------
# Public API


def ingest_token(config: StackConfig) -> str:
    """The ingest bearer token: created once (random) in <state>/ingest-token, mode 600."""
    path = config.state_dir / "ingest-token"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    config.state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def service_env(config: StackConfig, name: str) -> dict[str, str]:
    """The environment a service process needs to run against this stack."""
    port = config.port_of(name)
    env = {
        "MOM_KAFKA_BOOTSTRAP": config.bootstrap,
        "MOM_DATABASE_URL": config.db_url() if name == INGEST else config.db_url(f"mom_{name}"),
        "MOM_REGISTRY_URL": config.registry_url or "",
        "MOM_HTTP_PORT": str(port),
        "MOM_HTTP_HOST": "127.0.0.1",
    }
    if name == INGEST:
        env["MOM_INGEST_TOKENS"] = ingest_token(config)
    return env


def status(config: StackConfig) -> dict:
    """What runs, where: a JSON-serialisable dict (see the module's callers for the shape)."""
    return {
        "kafka": {"bootstrap": config.bootstrap, "running": _kafka_running(config)},
        "database": {
            "url": config.db_url(),
            "running": _pg_running(config),
            "service_urls": {svc: config.db_url(f"mom_{svc}") for svc in SERVICE_SCHEMAS},
            "analyst_url": config.db_url(ANALYST_ROLE),
        },
        "registry": {
            "url": config.registry_url,
            "running": bool(config.registry_enabled and _registry_running(config)),
        },
        "ingest": {
            "url": f"http://127.0.0.1:{config.ingest_port}",
            "token": ingest_token(config),
            "running": _service_running(config, INGEST),
        },
        "services": {
            svc: {
                "metrics": f"http://127.0.0.1:{config.service_ports[svc]}/metrics",
                "running": _service_running(config, svc),
            }
            for svc in config.service_ports
        },
    }


def up(
    config: StackConfig,
    *,
    services: Sequence[str] = (),
    after_infra: Callable[[dict], None] | None = None,
) -> dict:
    """Start (or find running) Kafka, PostgreSQL, the registry, then the named services.

    Idempotent: whatever already runs (our pid file, a live pid, the same argv) is left alone.
    ``after_infra(status)`` runs once the infrastructure is healthy and bootstrapped, before any
    service starts (topics and migrations go there). Returns :func:`status`.
    """
    for name in services:
        config.port_of(name)  # validate names before starting anything
    _ensure_dirs(config)
    with _lock(config):
        t0 = time.monotonic()
        _ensure_postgres(config)
        _bootstrap_database(config)
        _ensure_kafka(config)
        if config.registry_enabled:
            _ensure_registry(config)
        log.info("infrastructure ready in %.1f s", time.monotonic() - t0)
        if after_infra is not None:
            after_infra(status(config))
        for name in services:
            _ensure_service(config, name)
        return status(config)


def down(config: StackConfig) -> None:
    """Stop exactly what up() started in this state dir; never touch anything else. Idempotent."""
    if not config.state_dir.exists():
        return
    with _lock(config):
        names = sorted(p.stem for p in config.run_dir.glob("*.pid") if p.stem not in _INFRA_NAMES)
        _stop_all(config, names, SERVICE_STOP_GRACE)
        _stop_all(config, ["registry"], REGISTRY_STOP_GRACE)
        _stop_all(config, ["kafka"], KAFKA_STOP_GRACE)
        _stop_postgres(config)


def stop_services(config: StackConfig, names: Sequence[str]) -> None:
    """Stop the named services that up() started, leaving the infrastructure running."""
    if not config.state_dir.exists():
        return
    with _lock(config):
        _stop_all(config, [n for n in names if n not in _INFRA_NAMES], SERVICE_STOP_GRACE)


# --------------------------------------------------------------------------------------------
# Processes and pid files


_CHILDREN: dict[int, subprocess.Popen] = {}  # keeps Popen objects alive so they can be reaped


def _ensure_dirs(config: StackConfig) -> None:
    for d in (config.state_dir, config.run_dir, config.logs_dir):
        d.mkdir(parents=True, exist_ok=True)


@contextmanager
def _lock(config: StackConfig) -> Iterator[None]:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with open(config.state_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return False
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def _read_pid(config: StackConfig, name: str) -> int | None:
    try:
        return int((config.run_dir / f"{name}.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _why_not(config: StackConfig, name: str) -> str:
    pid = _read_pid(config, name)
    if pid is None:
        return "no pid file"
    if not _pid_alive(pid):
        return f"pid {pid} is gone"
    return f"pid {pid} runs {_cmdline(pid)!r}"[:300]


def _our_pid(config: StackConfig, name: str) -> int | None:
    """The pid of `name` if it is alive and still runs the argv we started it with."""
    pid = _read_pid(config, name)
    if pid is None or not _pid_alive(pid):
        return None
    try:
        expected = (config.run_dir / f"{name}.cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return None
    argv = _cmdline(pid)
    # The cmdline reads empty for a moment while a process execs (Popen returns before the new
    # image's arguments are mapped) or exits: look again before judging.
    for _ in range(40):
        if argv or not _pid_alive(pid):
            break
        time.sleep(0.025)
        argv = _cmdline(pid)
    return pid if argv == expected else None


def _forget(config: StackConfig, name: str) -> None:
    for suffix in (".pid", ".cmdline"):
        (config.run_dir / f"{name}{suffix}").unlink(missing_ok=True)


def _spawn(config: StackConfig, name: str, argv: list[str], *, env: Mapping[str, str], cwd: Path) -> int:
    log_path = config.logs_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    (config.run_dir / f"{name}.cmdline").write_bytes("\0".join(argv).encode())
    (config.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _signal(pid: int, sig: int) -> None:
    try:
        # We started it with start_new_session=True: it leads its own group; take its children too.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop_all(config: StackConfig, names: Sequence[str], grace: float) -> None:
    pids = {}
    for name in names:
        pid = _our_pid(config, name)
        if pid is None:
            _forget(config, name)  # stale or not ours: leave the process alone
            continue
        _signal(pid, signal.SIGTERM)
        pids[name] = pid
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {n: p for n, p in pids.items() if _pid_alive(p)}
        if pids:
            time.sleep(0.1)
    for name, pid in pids.items():
        log.warning("%s (pid %d) did not stop in %.0f s: SIGKILL", name, pid, grace)
        _signal(pid, signal.SIGKILL)
    for pid in pids.values():
        end = time.monotonic() + 5
        while _pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
    for name in names:
        _forget(config, name)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _require_free(port: int, what: str) -> None:
    if _port_open(port):
        raise StackError(f"cannot start {what}: port 127.0.0.1:{port} is already in use by another process")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _maven_resolve(pom: Path, cache_dir: Path, label: str) -> list[str]:
    """The artifact paths a POM resolves to, cached under cache_dir keyed by the POM's hash."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cached = cache_dir / f"{label}-{digest}.txt"
    if cached.exists():
        paths = [p for p in cached.read_text().strip().split(os.pathsep) if p]
        if paths and all(Path(p).exists() for p in paths):
            return paths
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) is not on PATH: it is needed to fetch the Kafka broker and the registry"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    t0 = time.monotonic()
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath", f"-Dmdep.outputFile={tmp}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not tmp.exists():
        raise StackError(f"mvn could not resolve {pom}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    tmp.replace(cached)
    log.info("resolved %s with Maven in %.1f s", pom, time.monotonic() - t0)
    return [p for p in cached.read_text().strip().split(os.pathsep) if p]


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _reachable_by(path: Path, uid: int) -> bool:
    """Whether `uid` may enter every existing folder on the way to `path`."""
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            break
        st = folder.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            return False
    return True


def _pg_home(state_dir: Path) -> Path:
    """PostgreSQL's folder: inside the state dir, unless the server must run as an unprivileged user
    who cannot reach it (a checkout under a private home or temporary folder, as CI may use); then a
    folder of the system's temporary directory named after the state dir."""
    preferred = state_dir / "pg"
    if os.geteuid() != 0:
        return preferred
    uid = pwd.getpwnam(os.environ.get("MOM_PG_OS_USER", "nobody")).pw_uid
    if _reachable_by(state_dir.resolve(), uid):
        return preferred
    digest = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mom-pg-{digest}"


def _pg_log(config: StackConfig) -> Path:
    """logs/postgres.log, or beside the data when PostgreSQL lives outside the state dir (it could not
    write into logs/ there)."""
    return (config.logs_dir if config.pg_dir == config.state_dir / "pg" else config.pg_dir) / "postgres.log"


def _pg_user() -> tuple[list[str], int | None, int | None]:
    """(command prefix, uid, gid) to run PostgreSQL's binaries: as root, drop to `nobody`."""
    if os.geteuid() != 0:
        return [], None, None
    user = os.environ.get("MOM_PG_OS_USER", "nobody")
    pw = pwd.getpwnam(user)
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--"], pw.pw_uid, pw.pw_gid
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise StackError(
            "running as root needs runuser or setpriv to start PostgreSQL as an unprivileged user"
        )
    return (
        [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"],
        pw.pw_uid,
        pw.pw_gid,
    )


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
            return str(candidate)
        raise StackError(f"PostgreSQL's {name} is not on PATH")
    return found


def _pg_data(config: StackConfig) -> Path:
    return config.pg_dir / "data"


def _pg_socket(config: StackConfig) -> Path:
    return config.pg_dir / "socket"


def _pg_pid(config: StackConfig) -> int | None:
    """The postmaster's pid from this data dir's postmaster.pid, if that process is alive and ours."""
    data = _pg_data(config)
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if not _pid_alive(pid):
        return None
    argv = _cmdline(pid) or []
    # postgres keeps its argv for the postmaster: "postgres -D <data> ..." as pg_ctl started it.
    return pid if argv and Path(argv[0]).name.startswith("postgres") and str(data) in argv else None


def _pg_running(config: StackConfig) -> bool:
    return _pg_pid(config) is not None and _port_open(config.pg_port)


def _pg_run(config: StackConfig, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    prefix, _, _ = _pg_user()
    result = subprocess.run(
        prefix + argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=config.pg_dir,
        start_new_session=True,
    )
    if check and result.returncode != 0:
        raise StackError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _ensure_postgres(config: StackConfig) -> None:
    if _pg_pid(config) is not None:
        _wait_pg_ready(config, 30)
        return
    _, uid, gid = _pg_user()
    data, sock = _pg_data(config), _pg_socket(config)
    marker = config.state_dir / "pg-location"
    if config.pg_dir != config.state_dir / "pg" and not marker.exists() and config.pg_dir.exists():
        shutil.rmtree(config.pg_dir)  # left by an earlier state dir of the same path: not this stack's
    config.pg_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(config.pg_dir) + "\n")
    log_path = _pg_log(config)
    log_path.touch()
    if uid is not None:
        _check_traversable(config.pg_dir, uid)
        for p in (config.pg_dir, log_path):
            os.chown(p, uid, gid)
    if not (data / "PG_VERSION").exists():
        if data.exists():
            shutil.rmtree(data)  # a half-finished initdb
        t0 = time.monotonic()
        _pg_run(
            config,
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )
        log.info("initdb in %.1f s", time.monotonic() - t0)
    sock.mkdir(exist_ok=True)
    if uid is not None:
        os.chown(sock, uid, gid)
    _require_free(config.pg_port, "PostgreSQL")
    options = f"-p {config.pg_port} -k {sock} -c listen_addresses=127.0.0.1"
    t0 = time.monotonic()
    result = _pg_run(
        config,
        [
            _pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(PG_START_TIMEOUT),
            "start",
        ],
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"PostgreSQL did not start:\n{result.stdout}\n{result.stderr}\n--- {log_path}:\n{_tail(log_path)}"
        )
    _wait_pg_ready(config, PG_START_TIMEOUT)
    log.info("PostgreSQL started in %.1f s", time.monotonic() - t0)


def _check_traversable(path: Path, uid: int) -> None:
    if not _reachable_by(path.resolve(), uid):
        raise StackError(
            f"PostgreSQL runs as uid {uid}, which cannot reach {path}: "
            "make its folders enterable (o+x) or set MOM_STATE_DIR to a path it can reach"
        )


def _connect(config: StackConfig, database: str = DATABASE, user: str = SUPERUSER):
    import psycopg

    return psycopg.connect(config.db_url(user, database), autocommit=True, connect_timeout=5)


def _wait_pg_ready(config: StackConfig, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with _connect(config, "postgres") as conn:
                conn.execute("SELECT 1")
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(0.2)
    raise StackError(
        f"PostgreSQL on port {config.pg_port} is not answering: {last}\n{_tail(_pg_log(config))}"
    )


def _bootstrap_database(config: StackConfig) -> None:
    """Database `mom`, a schema per service owned by its LOGIN role, the analyst role, `registry`."""
    from psycopg import sql

    with _connect(config, "postgres") as conn:

        def ensure_role(role: str) -> None:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))

        def ensure_db(db: str, owner: str) -> None:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner))
                )

        ensure_db(DATABASE, SUPERUSER)
        for svc in SERVICE_SCHEMAS:
            ensure_role(f"mom_{svc}")
        ensure_role(ANALYST_ROLE)
        if config.registry_enabled:
            ensure_role(REGISTRY_ROLE)
            ensure_db(REGISTRY_DB, REGISTRY_ROLE)

    with _connect(config, DATABASE) as conn:
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        for svc in SERVICE_SCHEMAS:
            role, schema = sql.Identifier(f"mom_{svc}"), sql.Identifier(svc)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(schema, role))
            conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, role))
            conn.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                    role, sql.Identifier(DATABASE), schema
                )
            )
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, sql.Identifier(ANALYST_ROLE))
            )
        # The cross-service KPI views: each service adds its views there; analysts read them.
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(KPI_SCHEMA)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(KPI_SCHEMA), sql.Identifier(ANALYST_ROLE)))
        for svc in SERVICE_SCHEMAS:
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
                sql.Identifier(KPI_SCHEMA), sql.Identifier(f"mom_{svc}")))


def _stop_postgres(config: StackConfig) -> None:
    if _pg_pid(config) is None:
        return
    _pg_run(
        config,
        [_pg_bin("pg_ctl"), "-D", str(_pg_data(config)), "-m", "fast", "-w", "-t", "60", "stop"],
        check=False,
    )


# --------------------------------------------------------------------------------------------
# Kafka


def random_cluster_id() -> str:
    """A KRaft cluster id (a UUID in URL-safe base64) that does not start with a dash, which the
    storage tool would read as an option (1 in 64 would)."""
    cid = "-"
    while cid.startswith("-"):
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cid


def _kafka_cluster_id(config: StackConfig) -> str:
    path = config.kafka_dir / "cluster-id"
    if path.exists():
        return path.read_text().strip()
    cid = random_cluster_id()
    path.write_text(cid + "\n")
    return cid


def _kafka_running(config: StackConfig) -> bool:
    return _our_pid(config, "kafka") is not None and _port_open(config.kafka_port)


def _ensure_kafka(config: StackConfig) -> None:
    if _our_pid(config, "kafka") is not None:
        _wait_kafka(config, None, 60)
        return
    _forget(config, "kafka")
    kdir = config.kafka_dir
    data, klogs = kdir / "data", kdir / "logs"
    for d in (data, klogs):
        d.mkdir(parents=True, exist_ok=True)
    classpath = os.pathsep.join(_maven_resolve(DEPLOY_DIR / "kafka" / "pom.xml", kdir, "classpath"))
    template = string.Template((DEPLOY_DIR / "kafka" / "server.properties.template").read_text())
    props = kdir / "server.properties"
    props.write_text(
        template.substitute(
            kafka_port=config.kafka_port, controller_port=config.controller_port, log_dirs=str(data)
        )
    )
    java = _java()
    jvm_common = [
        f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'kafka' / 'log4j2.yaml'}",
        f"-Dkafka.logs.dir={klogs}",
        "-Djava.awt.headless=true",
        f"-Dmom.state={config.state_dir}",
    ]
    if not (data / "meta.properties").exists():
        t0 = time.monotonic()
        result = subprocess.run(
            [
                java,
                "-Xmx256m",
                *jvm_common,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                _kafka_cluster_id(config),
                "-c",
                str(props),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka's storage failed:\n{result.stdout}\n{result.stderr}")
        log.info("formatted Kafka storage in %.1f s", time.monotonic() - t0)
    _require_free(config.kafka_port, "Kafka")
    _require_free(config.controller_port, "Kafka's controller")
    server_log = klogs / "server.log"
    offset = server_log.stat().st_size if server_log.exists() else 0
    argv = [
        java,
        f"-Xmx{config.kafka_heap}",
        f"-Xms{config.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        *jvm_common,
        "-cp",
        classpath,
        "kafka.Kafka",
        str(props),
    ]
    t0 = time.monotonic()
    _spawn(config, "kafka", argv, env=os.environ, cwd=kdir)
    _wait_kafka(config, offset, KAFKA_START_TIMEOUT)
    log.info("Kafka started in %.1f s", time.monotonic() - t0)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError("java (17+) is not on PATH")
    return found


def _wait_kafka(config: StackConfig, log_offset: int | None, timeout: float) -> None:
    """Ready when (for a fresh start) server.log says started, and a client can list topics."""
    from confluent_kafka.admin import AdminClient

    server_log = config.kafka_dir / "logs" / "server.log"
    deadline = time.monotonic() + timeout
    if log_offset is not None:
        while True:
            if _our_pid(config, "kafka") is None:
                raise StackError(
                    f"Kafka exited while starting ({_why_not(config, 'kafka')}):\n{_tail(config.logs_dir / 'kafka.log')}\n"
                    f"--- {server_log}:\n{_tail(server_log)}"
                )
            try:
                with open(server_log, "rb") as fh:
                    fh.seek(log_offset)
                    if b"Kafka Server started" in fh.read():
                        break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not start in {timeout:.0f} s:\n{_tail(server_log)}")
            time.sleep(0.2)
    quiet = logging.getLogger(__name__ + ".librdkafka")
    quiet.setLevel(logging.CRITICAL)
    admin = AdminClient({"bootstrap.servers": config.bootstrap, "logger": quiet})
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=5)
            return
        except Exception as exc:  # noqa: BLE001 - KafkaException while not ready
            last = exc
            time.sleep(0.5)
    raise StackError(f"Kafka at {config.bootstrap} does not answer list_topics: {last}\n{_tail(server_log)}")


# --------------------------------------------------------------------------------------------
# Apicurio Registry


def _cache_root() -> Path:
    base = os.environ.get("MOM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mom"
    )
    return Path(base)


def _registry_home(config: StackConfig) -> Path:
    """The unpacked registry (containing quarkus-run.jar), extracted once per version."""
    (archive,) = _maven_resolve(DEPLOY_DIR / "registry" / "pom.xml", config.registry_dir, "artifact")
    name = Path(archive).name  # apicurio-registry-app-<version>-all.tar.gz
    version = name.removeprefix("apicurio-registry-app-").removesuffix("-all.tar.gz")
    home = _cache_root() / f"apicurio-{version}"
    if (home / "quarkus-run.jar").exists():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    tmp = home.parent / f".{home.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    # The jar sits at the archive's root today; look one level down in case a release nests it.
    found = next(iter(sorted(tmp.glob("quarkus-run.jar")) + sorted(tmp.glob("*/quarkus-run.jar"))), None)
    if found is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError(f"{archive} holds no quarkus-run.jar")
    try:
        found.parent.rename(home)
    except OSError:
        if not (home / "quarkus-run.jar").exists():
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %s in %.1f s", name, time.monotonic() - t0)
    return home


def _registry_env(config: StackConfig) -> dict[str, str]:
    """Apicurio 3.x settings (keys from the app jar's application.properties), SQL storage in PostgreSQL."""
    return {
        "QUARKUS_HTTP_HOST": "127.0.0.1",
        "QUARKUS_HTTP_PORT": str(config.registry_port),
        # The Quarkus management interface (health, metrics) is on by default on 0.0.0.0:9000.
        "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
        "QUARKUS_MANAGEMENT_PORT": str(config.registry_port + 1),
        "QUARKUS_PROFILE": "prod",
        "APICURIO_STORAGE_KIND": "sql",
        "APICURIO_STORAGE_SQL_KIND": "postgresql",
        "APICURIO_DATASOURCE_URL": f"jdbc:postgresql://127.0.0.1:{config.pg_port}/{REGISTRY_DB}",
        "APICURIO_DATASOURCE_USERNAME": REGISTRY_ROLE,
        "APICURIO_DATASOURCE_PASSWORD": "unused-trust-auth",
        "APICURIO_DATASOURCE_JDBC_INITIAL_SIZE": "2",
        "APICURIO_DATASOURCE_JDBC_MIN_SIZE": "2",
        "APICURIO_DATASOURCE_JDBC_MAX_SIZE": "10",
        "APICURIO_STORAGE_SNAPSHOT_LOCATION": str(config.registry_dir),
    }


REGISTRY_JAVA_MIN = 21  # Apicurio 3.3 is compiled for Java 21 (class file 65); Kafka runs on 17.


def _java_major(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return 0
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return 0
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _registry_java() -> str:
    """A java new enough for the registry: MOM_REGISTRY_JAVA, JAVA_HOME, PATH, then /usr/lib/jvm/*."""
    explicit = os.environ.get("MOM_REGISTRY_JAVA")
    if explicit:
        return explicit
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(shutil.which("java"))
    candidates += [str(p) for p in sorted(Path("/usr/lib/jvm").glob("*/bin/java"))]
    best, best_major = None, 0
    for java in dict.fromkeys(candidates):
        if Path(java).exists():
            major = _java_major(java)
            if major >= REGISTRY_JAVA_MIN and major > best_major:
                best, best_major = java, major
    if best is None:
        raise StackError(
            f"the registry (Apicurio) needs Java {REGISTRY_JAVA_MIN}+ and none was found "
            "(set MOM_REGISTRY_JAVA, or MOM_REGISTRY=none to run without a registry)"
        )
    return best


def _registry_running(config: StackConfig) -> bool:
    return _our_pid(config, "registry") is not None and _port_open(config.registry_port)


def _ensure_registry(config: StackConfig) -> None:
    url = f"{config.registry_url}/subjects"
    if _our_pid(config, "registry") is not None:
        _wait_http(config, "registry", url, 60)
        return
    _forget(config, "registry")
    config.registry_dir.mkdir(parents=True, exist_ok=True)
    home = _registry_home(config)
    _require_free(config.registry_port, "the registry")
    _require_free(config.registry_port + 1, "the registry's management interface")
    argv = [
        _registry_java(),
        "-Xmx256m",
        f"-Dmom.state={config.state_dir}",
        "-jar",
        str(home / "quarkus-run.jar"),
    ]
    t0 = time.monotonic()
    _spawn(config, "registry", argv, env={**os.environ, **_registry_env(config)}, cwd=home)
    _wait_http(config, "registry", url, REGISTRY_START_TIMEOUT)
    log.info("registry started in %.1f s", time.monotonic() - t0)


# --------------------------------------------------------------------------------------------
# Services


def _service_running(config: StackConfig, name: str) -> bool:
    return _our_pid(config, name) is not None


def _wait_http(config: StackConfig, name: str, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    log_path = config.logs_dir / f"{name}.log"
    while time.monotonic() < deadline:
        if _our_pid(config, name) is None:
            raise StackError(
                f"{name} exited while starting ({_why_not(config, name)}); last lines of {log_path}:\n{_tail(log_path)}"
            )
        if _http_ok(url):
            return
        time.sleep(0.25)
    raise StackError(
        f"{name} did not answer 200 on {url} within {timeout:.0f} s; last lines of {log_path}:\n{_tail(log_path)}"
    )


def _ensure_service(config: StackConfig, name: str) -> None:
    port = config.port_of(name)
    health = f"http://127.0.0.1:{port}/healthz"
    if _our_pid(config, name) is not None:
        _wait_http(config, name, health, SERVICE_HEALTH_TIMEOUT)
        return
    _forget(config, name)
    _require_free(port, name)
    argv = [sys.executable, "-m", f"services.{name}"]
    _spawn(config, name, argv, env={**os.environ, **service_env(config, name)}, cwd=REPO_ROOT)
    _wait_http(config, name, health, SERVICE_HEALTH_TIMEOUT)
