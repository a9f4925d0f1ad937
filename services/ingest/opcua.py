"""The OPC UA bridge: monitored items on the configured nodes of a server, into the bridges' runtime.

Each equipment's `opcua_nodes` (tag -> node id) are subscribed as monitored items (value changes,
queued so that no change between two publishing intervals is coalesced away). The connection is
watched; when it is lost the bridge reconnects with a growing delay (1 s to 30 s) and subscribes
again. The server's initial notification after a (re)subscription is the node's current value with
its source timestamp: the same value gives the same event id, and the mapper's memory turns an
unchanged counter into nothing and a counter that moved into the increase.

Security (`OpcUaSecurity`, from MOM_INGEST_OPCUA_*): Basic256Sha256 with Sign or SignAndEncrypt, the
client's certificate and key, the one server certificate trusted, and a user name with its password.
A refused connection is explained by the setting to look at (`OpcUaSetupError`), logged, kept in
`last_error`, and tried again with the growing delay: the server's trust list may be fixed meanwhile.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto

from services.ingest.bridge import CONNECTED, MESSAGES, BridgeRuntime, OpcUaSecurity
from services.ingest.bridge_config import BridgeConfig
from services.ingest.bridge_mapping import Reading

log = logging.getLogger(__name__)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(stamp: datetime) -> int:
    """Whole milliseconds, exactly (a float's `timestamp() * 1000` can land a millisecond short)."""
    return (stamp.replace(tzinfo=stamp.tzinfo or UTC) - _EPOCH) // timedelta(milliseconds=1)


class _Handler:
    """Collects the notifications of one publish response and stores them with one fsync, after the last."""

    def __init__(self, bridge: OpcUaBridge) -> None:
        self.bridge = bridge
        self._pending: list[Reading] = []

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        target = self.bridge.targets.get(node.nodeid.to_string())
        if target is None:
            return
        data_value = data.monitored_item.Value
        stamp = data_value.SourceTimestamp or data_value.ServerTimestamp
        timestamp_ms = _epoch_ms(stamp) if stamp is not None else time.time_ns() // 1_000_000
        if isinstance(value, ua.LocalizedText):
            value = value.Text
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(Reading("opcua", target[0], target[1], value, timestamp_ms))
        MESSAGES.labels(bridge="opcua", outcome="mapped").inc()

    def _flush(self) -> None:
        # A publish response groups notifications by monitored item: back to the order they happened in;
        # of one instant, reasons first (they belong to the state change), then counts (they belong to
        # the run before a stop), then states and analog values.
        readings = sorted(self._pending, key=lambda r: (r.timestamp_ms, self.bridge.rank(r)))
        self._pending = []
        try:
            self.bridge.runtime.ingest(readings)
        except Exception:  # noqa: BLE001 - one bad batch never stops the bridge
            MESSAGES.labels(bridge="opcua", outcome="invalid").inc(len(readings))
            log.exception("OPC UA values not stored", extra={"fields": {"values": len(readings)}})

    def status_change_notification(self, status: Any) -> None:
        log.warning("OPC UA subscription status changed", extra={"fields": {"status": str(status)}})


class OpcUaSetupError(RuntimeError):
    """The server refused the connection for a reason a setting explains; the message names it."""


_USER_REFUSED = ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid")
_CLIENT_CERTIFICATE_REFUSED = ("BadCertificateUntrusted", "BadSecurityChecksFailed", "BadCertificateInvalid",
                               "BadCertificateUriInvalid", "BadCertificateUseNotAllowed", "BadCertificateTimeInvalid",
                               "BadCertificateRevoked")


def explain(exc: BaseException, security: OpcUaSecurity) -> str | None:
    """The setting behind a refused connection, or None when it is not a matter of configuration."""
    code = getattr(exc, "code", None)
    status = ua.StatusCode(code).name if isinstance(code, int) else ""
    text = str(exc)
    if status in _USER_REFUSED:
        if security.username is None:
            return (f"MOM_INGEST_OPCUA_USERNAME: the server refuses anonymous sessions ({status}); set it and "
                    "MOM_INGEST_OPCUA_PASSWORD")
        return (f"MOM_INGEST_OPCUA_PASSWORD: the server refused user {security.username!r} ({status}): wrong "
                "password, or MOM_INGEST_OPCUA_USERNAME is not a user of the server")
    if "certificate mismatch" in text.lower():
        return (f"MOM_INGEST_OPCUA_SERVER_CERTIFICATE: the server presented a certificate other than the trusted "
                f"one in {security.server_certificate}")
    if status in _CLIENT_CERTIFICATE_REFUSED:
        return (f"MOM_INGEST_OPCUA_CERTIFICATE: the server does not accept the client certificate "
                f"{security.certificate} ({status}); add it to the server's trusted certificates")
    if "no matching endpoints" in text.lower():
        return (f"MOM_INGEST_OPCUA_SECURITY_POLICY / MOM_INGEST_OPCUA_SECURITY_MODE: the server offers no endpoint "
                f"with {security.policy} {security.mode if security.secure else ''}".rstrip())
    return None


async def _load(kind: str, setting: str, path: Any, password: str = "") -> Any:
    try:
        if kind == "certificate":
            return await uacrypto.load_certificate(str(path))
        return await uacrypto.load_private_key(str(path), password or None)
    except Exception as exc:  # noqa: BLE001 - any parse failure: name the setting
        raise OpcUaSetupError(f"{setting}={str(path)!r}: not a PEM or DER {kind.replace('_', ' ')} "
                              f"({str(exc) or type(exc).__name__})") from None


async def make_client(url: str, security: OpcUaSecurity, *, timeout_s: float = 4.0) -> Client:
    """An asyncua client configured with the channel's security and the user (not connected yet)."""
    client = Client(url, timeout=timeout_s)
    if security.secure:
        from cryptography import x509

        certificate = await _load("certificate", "MOM_INGEST_OPCUA_CERTIFICATE", security.certificate)
        await _load("private_key", "MOM_INGEST_OPCUA_PRIVATE_KEY", security.private_key, security.private_key_password)
        await _load("certificate", "MOM_INGEST_OPCUA_SERVER_CERTIFICATE", security.server_certificate)
        try:  # the server checks that the session's application URI is the certificate's
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = names.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if not uris:
            raise OpcUaSetupError(f"MOM_INGEST_OPCUA_CERTIFICATE={str(security.certificate)!r}: has no application "
                                  "URI in its subject alternative names, which OPC UA requires")
        client.application_uri = uris[0]
        await client.set_security(security_policies.SecurityPolicyBasic256Sha256, str(security.certificate),
                                  str(security.private_key), security.private_key_password or None,
                                  str(security.server_certificate), getattr(ua.MessageSecurityMode, security.mode))
    if security.username:
        client.set_user(security.username)
        client.set_password(security.password)
    return client


class OpcUaBridge:
    def __init__(self, url: str, config: BridgeConfig, runtime: BridgeRuntime,
                 security: OpcUaSecurity | None = None) -> None:
        self.url = url
        self.config = config
        self.runtime = runtime
        self.security = security or OpcUaSecurity()
        self.last_error: str | None = None
        # node id (as asyncua prints it) -> (equipment id, tag)
        self.targets: dict[str, tuple[str, str]] = {}
        for unit in config.equipment:
            for tag, node_id in unit.opcua_nodes.items():
                self.targets[ua.NodeId.from_string(node_id).to_string()] = (unit.equipment_id, tag)
        self.connected = asyncio.Event()
        self.connections = 0          # how many times it (re)connected and subscribed
        self._client: Client | None = None
        self._stopping = False

    def rank(self, reading: Reading) -> int:
        rule = self.runtime.mapper.rule(reading.equipment_id, reading.tag)
        return {"reason": 0, "counter": 1}.get(rule.kind, 2) if rule is not None else 2

    async def _check_server_certificate(self) -> None:
        """Compare the certificate of the server's endpoint with the pinned one before using it.

        A server with another certificate could not read the secure channel's first message and would
        leave the client waiting for an answer; asking for the endpoints first (allowed unsecured)
        turns that into an error naming the setting.
        """
        from cryptography.hazmat.primitives.serialization import Encoding

        endpoints = await Client(self.url, timeout=4).connect_and_get_server_endpoints()
        policy_uri = security_policies.SecurityPolicyBasic256Sha256.URI
        mode = getattr(ua.MessageSecurityMode, self.security.mode)
        endpoint = next((e for e in endpoints if e.SecurityPolicyUri == policy_uri and e.SecurityMode == mode), None)
        if endpoint is None:
            raise OpcUaSetupError(f"OPC UA {self.url}: " + (explain(ua.UaError("No matching endpoints"), self.security) or ""))
        pinned = await uacrypto.load_certificate(str(self.security.server_certificate))
        presented = endpoint.ServerCertificate or b""
        expected = pinned.public_bytes(Encoding.DER)
        if presented[:len(expected)] != expected:
            raise OpcUaSetupError(f"OPC UA {self.url}: " + (explain(ua.UaError("Server certificate mismatch"),
                                                                    self.security) or ""))

    async def connect(self) -> Client:
        """A connected, authenticated session; OpcUaSetupError names the setting when the server refuses it."""
        client = await make_client(self.url, self.security)
        if self.security.secure:
            await self._check_server_certificate()
        try:
            await client.connect()
        except Exception as exc:
            reason = explain(exc, self.security)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2)
            if reason is not None:
                raise OpcUaSetupError(f"OPC UA {self.url}: {reason}") from exc
            raise
        return client

    async def _subscribe(self, client: Client) -> int:
        subscription = await client.create_subscription(self.config.opcua_publishing_interval_ms, _Handler(self))
        nodes = [client.get_node(node_id) for node_id in self.targets]
        if not nodes:
            return 0
        trigger = getattr(ua.DataChangeTrigger, self.config.opcua_data_change_trigger)
        results = await subscription._subscribe(nodes, ua.AttributeIds.Value, ua.DataChangeFilter(Trigger=trigger),
                                                queuesize=100, sampling_interval=0)
        refused = [f"{node.nodeid.to_string()}: {result.name}" for node, result in zip(nodes, results, strict=True)
                   if isinstance(result, ua.StatusCode)]
        if refused:
            log.error("OPC UA nodes not subscribed", extra={"fields": {"nodes": refused}})
        return len(nodes) - len(refused)

    async def run_forever(self) -> None:
        delay = 1.0
        while not self._stopping:
            client: Client | None = None
            try:
                client = await self.connect()
                monitored = await self._subscribe(client)
                self._client = client
                self.connections += 1
                self.last_error = None
                self.connected.set()
                CONNECTED.labels(bridge="opcua").set(1)
                log.info("OPC UA connected", extra={"fields": {"url": self.url, "monitored_items": monitored,
                                                               "security": self.security.policy}})
                delay = 1.0
                while not self._stopping:
                    await asyncio.sleep(1.0)
                    await client.check_connection()
            except asyncio.CancelledError:
                raise
            except OpcUaSetupError as exc:
                self.last_error = str(exc)
                log.error("OPC UA connection refused; retrying", extra={"fields": {"error": str(exc), "retry_s": delay}})
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.last_error = f"OPC UA {self.url}: {str(exc) or type(exc).__name__}"
                if not self._stopping:
                    log.warning("OPC UA connection lost; reconnecting", extra={"fields": {
                        "url": self.url, "error": str(exc) or type(exc).__name__, "retry_s": delay}})
            finally:
                self.connected.clear()
                CONNECTED.labels(bridge="opcua").set(0)
                self._client = None
                if client is not None:
                    try:
                        await asyncio.wait_for(client.disconnect(), timeout=2)
                    except Exception:  # noqa: BLE001, S110 - the connection is gone already
                        pass
            if not self._stopping:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), timeout=2)
            except Exception:  # noqa: BLE001, S110
                pass
