"""The shop-floor bridges' runtime: MQTT and OPC UA in, the disk buffer, and the forwarder to ingest's path.

    readings --Mapper--> canonical JSON --append+fsync--> DiskBuffer --forwarder--> Sink (ingest's
    translator, codec, producer) --> Kafka; the buffer's offset is committed once Kafka acknowledged.

`python -m services.ingest.bridge_main` (`mom run ingest-bridge`) runs the configured bridges as a process
of their own, with /healthz, /readyz and /metrics; `attach(app)` runs them inside the ingest process
(`MOM_INGEST_BRIDGE_IN_PROCESS=1`). `run_plant_bridge` is for a demo: one bridge for one plant.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from prometheus_client import Counter, Gauge

from services.common.settings import REPO_ROOT, SettingsError, env_float, env_int
from services.ingest.bridge_config import BridgeConfig, ConfigError, parse
from services.ingest.bridge_mapping import Mapper, Outage, Reading
from services.ingest.bridge_sink import DirectSink, HttpSink, Sink
from services.ingest.buffer import DiskBuffer

log = logging.getLogger(__name__)

BUFFERED = Gauge("mom_ingest_bridge_buffered_events", "Events the bridges hold on disk, not yet acknowledged by Kafka.")
DROPPED = Counter("mom_ingest_bridge_dropped_events_total",
                  "Events the bridges dropped because the disk buffer was full (MOM_INGEST_BUFFER_MAX_EVENTS).")
FORWARDED = Counter("mom_ingest_bridge_forwarded_events_total",
                    "Events the bridges delivered through ingest's path, by outcome (accepted or rejected).",
                    ["outcome"])
SEND_FAILURES = Counter("mom_ingest_bridge_send_failures_total",
                        "Batches the bridges could not deliver (Kafka or ingest unreachable); each is retried.")
MESSAGES = Counter("mom_ingest_bridge_messages_total",
                   "Messages the bridges received, by bridge (mqtt, sparkplug, opcua) and outcome (mapped, ignored, invalid).",
                   ["bridge", "outcome"])
REBIRTHS = Counter("mom_ingest_bridge_rebirth_requests_total",
                   "Sparkplug B rebirth requests (NCMD Node Control/Rebirth) sent to edge nodes.")
CONNECTED = Gauge("mom_ingest_bridge_connected", "1 while a bridge is connected to its server.", ["bridge"])


def load_config(path: Path | str) -> BridgeConfig:
    """Read and validate the YAML mapping file; ConfigError names the file and every bad field."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(["the file does not exist"], str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from None
    return parse(document, str(path))


OPCUA_POLICIES = ("None", "Basic256Sha256")
OPCUA_MODES = ("Sign", "SignAndEncrypt")


@dataclass(frozen=True)
class OpcUaSecurity:
    """How the OPC UA client authenticates: the secure channel's policy and mode with the client's
    certificate and key, the server certificate it trusts, and a user name with its password."""

    policy: str = "None"                    # None | Basic256Sha256
    mode: str = "SignAndEncrypt"            # Sign | SignAndEncrypt (with Basic256Sha256)
    certificate: Path | None = None         # the client's certificate (PEM or DER)
    private_key: Path | None = None         # its private key (PEM or DER)
    private_key_password: str = field(default="", repr=False)
    server_certificate: Path | None = None  # the one server certificate trusted (pinned)
    username: str | None = None
    password: str = field(default="", repr=False)   # from the environment (a Secret), never the mapping file

    @property
    def secure(self) -> bool:
        return self.policy != "None"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OpcUaSecurity:
        def path(name: str) -> Path | None:
            raw = env.get(name) or ""
            if not raw:
                return None
            if not Path(raw).is_file():
                raise SettingsError(f"{name}={raw!r}: no such file")
            return Path(raw)

        policy = env.get("MOM_INGEST_OPCUA_SECURITY_POLICY") or "None"
        if policy not in OPCUA_POLICIES:
            raise SettingsError(f"MOM_INGEST_OPCUA_SECURITY_POLICY={policy!r}: must be one of {', '.join(OPCUA_POLICIES)}")
        mode = env.get("MOM_INGEST_OPCUA_SECURITY_MODE") or "SignAndEncrypt"
        if mode not in OPCUA_MODES:
            raise SettingsError(f"MOM_INGEST_OPCUA_SECURITY_MODE={mode!r}: must be one of {', '.join(OPCUA_MODES)}")
        security = cls(policy=policy, mode=mode, certificate=path("MOM_INGEST_OPCUA_CERTIFICATE"),
                       private_key=path("MOM_INGEST_OPCUA_PRIVATE_KEY"),
                       private_key_password=env.get("MOM_INGEST_OPCUA_PRIVATE_KEY_PASSWORD") or "",
                       server_certificate=path("MOM_INGEST_OPCUA_SERVER_CERTIFICATE"),
                       username=env.get("MOM_INGEST_OPCUA_USERNAME") or None,
                       password=env.get("MOM_INGEST_OPCUA_PASSWORD") or "")
        if security.secure:
            for name, value in (("MOM_INGEST_OPCUA_CERTIFICATE", security.certificate),
                                ("MOM_INGEST_OPCUA_PRIVATE_KEY", security.private_key),
                                ("MOM_INGEST_OPCUA_SERVER_CERTIFICATE", security.server_certificate)):
                if value is None:
                    raise SettingsError(f"{name} is required with MOM_INGEST_OPCUA_SECURITY_POLICY={policy}")
        elif security.certificate or security.private_key or security.server_certificate:
            raise SettingsError("MOM_INGEST_OPCUA_SECURITY_POLICY must be Basic256Sha256 when certificates are set "
                                "(MOM_INGEST_OPCUA_CERTIFICATE, MOM_INGEST_OPCUA_PRIVATE_KEY, "
                                "MOM_INGEST_OPCUA_SERVER_CERTIFICATE)")
        if security.username and not security.password:
            raise SettingsError("MOM_INGEST_OPCUA_PASSWORD is required with MOM_INGEST_OPCUA_USERNAME")
        if security.password and not security.username:
            raise SettingsError("MOM_INGEST_OPCUA_USERNAME is required with MOM_INGEST_OPCUA_PASSWORD")
        return security


@dataclass(frozen=True)
class BridgeSettings:
    config_path: Path | None
    mqtt_url: str | None                # mqtt://[user:password@]host:port
    opcua_url: str | None               # opc.tcp://host:port/path
    buffer_dir: Path
    buffer_max_events: int = 1_000_000
    batch: int = 500
    retry_s: float = 1.0
    sink_url: str | None = None         # None: ingest's pipeline in this process; else an ingest URL
    sink_token: str = ""
    ack_timeout_s: float = 10.0
    in_process: bool = False
    opcua_security: OpcUaSecurity = OpcUaSecurity()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BridgeSettings:
        env = os.environ if env is None else env
        state = env.get("MOM_STATE_DIR") or str(REPO_ROOT / ".mom")
        config = env.get("MOM_INGEST_BRIDGE_CONFIG") or None
        settings = cls(
            config_path=Path(config) if config else None,
            mqtt_url=env.get("MOM_INGEST_MQTT_URL") or None,
            opcua_url=env.get("MOM_INGEST_OPCUA_URL") or None,
            buffer_dir=Path(env.get("MOM_INGEST_BUFFER_DIR") or Path(state) / "ingest-bridge"),
            buffer_max_events=env_int(env, "MOM_INGEST_BUFFER_MAX_EVENTS", 1_000_000, minimum=1),
            batch=env_int(env, "MOM_INGEST_BRIDGE_BATCH", 500, minimum=1),
            retry_s=env_float(env, "MOM_INGEST_BRIDGE_RETRY_S", 1.0, minimum=0.01),
            sink_url=env.get("MOM_INGEST_BRIDGE_INGEST_URL") or None,
            sink_token=env.get("MOM_INGEST_BRIDGE_TOKEN", ""),
            ack_timeout_s=env_float(env, "MOM_INGEST_ACK_TIMEOUT_S", 10.0, minimum=0.001),
            in_process=env.get("MOM_INGEST_BRIDGE_IN_PROCESS", "") in ("1", "true", "yes"),
            opcua_security=OpcUaSecurity.from_env(env),
        )
        if settings.mqtt_url and not settings.mqtt_url.startswith(("mqtt://", "tcp://")):
            raise SettingsError(f"MOM_INGEST_MQTT_URL={settings.mqtt_url!r}: must be mqtt://host:port")
        if settings.opcua_url and not settings.opcua_url.startswith("opc.tcp://"):
            raise SettingsError(f"MOM_INGEST_OPCUA_URL={settings.opcua_url!r}: must be opc.tcp://host:port/path")
        if (settings.mqtt_url or settings.opcua_url) and settings.config_path is None:
            raise SettingsError("MOM_INGEST_BRIDGE_CONFIG is required when MOM_INGEST_MQTT_URL or "
                                "MOM_INGEST_OPCUA_URL is set: the YAML file mapping tags to events")
        if settings.sink_url and not settings.sink_token:
            raise SettingsError("MOM_INGEST_BRIDGE_TOKEN is required with MOM_INGEST_BRIDGE_INGEST_URL")
        return settings

    @property
    def enabled(self) -> bool:
        return bool(self.mqtt_url or self.opcua_url)


class BridgeRuntime:
    """The mapper, the disk buffer and the forwarder, shared by every bridge of a process.

    `ingest()` may be called from any thread (paho's network thread calls it); it returns only when
    the events are on disk, so an input may be acknowledged after it.
    """

    STATE_FILE = "mapper-state.json"

    def __init__(self, config: BridgeConfig, buffer: DiskBuffer, sink: Sink, *, batch: int = 500,
                 retry_s: float = 1.0) -> None:
        self.config = config
        self.mapper = Mapper(config)
        self.buffer = buffer
        self.sink = sink
        self.batch = batch
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state_path = buffer.directory / self.STATE_FILE
        with contextlib.suppress(FileNotFoundError):
            self.mapper.restore(orjson.loads(self._state_path.read_bytes()))
        BUFFERED.set(buffer.pending)
        self.delivered = 0
        self.received = 0          # readings and outages taken in, whether or not they made an event
        self.rejected = 0          # delivered events that ingest's validation refused (dead-lettered)
        self.last_error: str | None = None

    def ingest(self, readings: list[Reading | Outage]) -> int:
        """Map readings and outages, in order, and append their events to the buffer with one fsync;
        returns the events kept."""
        dropped = 0
        with self._lock:
            items = []
            for reading in readings:
                items.extend(self.mapper.map(reading))
            if items:
                dropped = self.buffer.append_json(items)
                BUFFERED.set(self.buffer.pending)
            self._save_state()
            self.received += len(readings)
            if not items:
                return 0
        if dropped:
            DROPPED.inc(dropped)
            log.error("bridge buffer full: events dropped", extra={"fields": {"dropped": dropped}})
        self._notify()
        return len(items) - dropped

    def offline(self, origin: str, equipment_ids: list[str], timestamp_ms: int, cause: str, reason: str) -> int:
        return self.ingest([Outage(origin, e, timestamp_ms, cause, reason) for e in equipment_ids])

    def _save_state(self) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.mapper.state()))
        os.replace(tmp, self._state_path)

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def forward_forever(self) -> None:
        """Send the buffer in order; on failure wait `retry_s` (doubling up to 30 s) and send it again."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        backoff = self.retry_s
        while True:
            with self._lock:
                items, position = self.buffer.read_json(self.batch)
            if not items:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # not wait_for: its inner task can swallow a cancel
                        await self._wake.wait()
                continue
            result = await self.sink.submit(items)
            if not result.delivered:
                SEND_FAILURES.inc()
                self.last_error = result.error or f"{result.failed} of {len(items)} events not acknowledged"
                log.warning("bridge could not deliver; retrying", extra={"fields": {
                    "events": len(items), "error": self.last_error, "retry_s": backoff}})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.retry_s
            self.last_error = None
            with self._lock:
                self.buffer.commit(position, len(items))
                BUFFERED.set(self.buffer.pending)
            self.delivered += len(items)
            self.rejected += result.rejected
            FORWARDED.labels(outcome="accepted").inc(result.accepted)
            FORWARDED.labels(outcome="rejected").inc(result.rejected)
            for item in result.results:
                if item.get("status") == "rejected":
                    log.warning("bridge event refused by ingest", extra={"fields": {
                        "event_id": item.get("event_id"), "errors": item.get("errors")}})

    async def drained(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.buffer.pending == 0:
                return True
            await asyncio.sleep(0.05)
        return self.buffer.pending == 0


class Bridges:
    """Every configured bridge of a process, with their runtime; `start()` / `stop()`."""

    def __init__(self, settings: BridgeSettings, config: BridgeConfig, sink: Sink) -> None:
        self.settings = settings
        self.config = config
        self.buffer = DiskBuffer(settings.buffer_dir, max_events=settings.buffer_max_events)
        self.runtime = BridgeRuntime(config, self.buffer, sink, batch=settings.batch, retry_s=settings.retry_s)
        self.mqtt: Any = None
        self.opcua: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.runtime.forward_forever(), name="bridge-forwarder"))
        if self.settings.mqtt_url:
            from services.ingest.mqtt import MqttBridge

            self.mqtt = MqttBridge(self.settings.mqtt_url, self.config, self.runtime)
            self.mqtt.start()
        if self.settings.opcua_url:
            from services.ingest.opcua import OpcUaBridge

            self.opcua = OpcUaBridge(self.settings.opcua_url, self.config, self.runtime, self.settings.opcua_security)
            self._tasks.append(asyncio.create_task(self.opcua.run_forever(), name="bridge-opcua"))
        log.info("bridges started", extra={"fields": {"mqtt": self.settings.mqtt_url, "opcua": self.settings.opcua_url,
                                                      "buffered": self.buffer.pending}})

    async def stop(self, drain_s: float = 5.0) -> None:
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.opcua is not None:
            await self.opcua.stop()
        await self.runtime.drained(drain_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.sink.close()
        self.buffer.close()


def make_sink(settings: BridgeSettings, env: Mapping[str, str] | None = None) -> Sink:
    if settings.sink_url:
        return HttpSink(settings.sink_url, settings.sink_token)
    env = os.environ if env is None else env
    return DirectSink.from_settings(DirectSink.settings_from_env(env, settings.ack_timeout_s),
                                    client=f"bridge:{os.uname().nodename}")


def attach(app: Any, settings: BridgeSettings | None = None) -> None:
    """Run the configured bridges inside an ingest process, sharing its producer (`MOM_INGEST_BRIDGE_IN_PROCESS`).

    The hook in `services.ingest.app.build`: `attach(app)` after the routes are added.
    """
    from services.ingest.app import INGEST_KEY

    settings = settings or BridgeSettings.from_env()
    if not settings.enabled or not settings.in_process:
        return
    config = load_config(settings.config_path)  # type: ignore[arg-type]

    async def bridges_lifecycle(app_: Any) -> AsyncIterator[None]:
        bridges = Bridges(settings, config, DirectSink(app_[INGEST_KEY], client="bridge"))
        await bridges.start()
        yield
        await bridges.stop()

    app.cleanup_ctx.append(bridges_lifecycle)


async def run_plant_bridge(*, mqtt_url: str | None = None, opcua_url: str | None = None,
                           config: BridgeConfig | dict[str, Any], buffer_dir: Path,
                           sink: Sink | None = None, env: Mapping[str, str] | None = None) -> Bridges:
    """Start the bridges for one plant (a demo's `--via mqtt|opcua`); `await bridges.stop()` ends them.

    `config` is the mapping (a BridgeConfig or its YAML document as a dict); `sink` defaults to
    ingest's pipeline with its own producer, configured from `env` (MOM_KAFKA_BOOTSTRAP, ...).
    """
    if not isinstance(config, BridgeConfig):
        config = parse(config)
    settings = BridgeSettings(config_path=None, mqtt_url=mqtt_url, opcua_url=opcua_url, buffer_dir=Path(buffer_dir))
    bridges = Bridges(settings, config, sink or make_sink(settings, env))
    await bridges.start()
    return bridges


async def _serve(settings: BridgeSettings) -> None:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from services.common.settings import Settings

    config = load_config(settings.config_path)  # type: ignore[arg-type]
    bridges = Bridges(settings, config, make_sink(settings))
    await bridges.start()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "buffered": bridges.buffer.pending})

    async def readyz(_request: web.Request) -> web.Response:
        error = bridges.runtime.last_error
        return web.json_response({"status": "not ready", "reason": error} if error else {"status": "ready"},
                                 status=503 if error else 200)

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    common = Settings.from_env("ingest-bridge")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, common.http_host, common.http_port or 0).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await bridges.stop()
        await runner.cleanup()


def main() -> None:
    from services.common import logging as mom_logging

    try:
        settings = BridgeSettings.from_env()
        if settings.config_path is not None:
            load_config(settings.config_path)  # refuse a bad file before connecting to anything
    except (SettingsError, ConfigError) as exc:
        raise SystemExit(f"mom run ingest-bridge: {exc}") from None
    mom_logging.configure("ingest-bridge", os.environ.get("MOM_LOG_LEVEL", "INFO").upper())
    if not settings.enabled:
        raise SystemExit("mom run ingest-bridge: set MOM_INGEST_MQTT_URL and/or MOM_INGEST_OPCUA_URL "
                         "(and MOM_INGEST_BRIDGE_CONFIG); see docs/connectivity.md")
    asyncio.run(_serve(settings))
