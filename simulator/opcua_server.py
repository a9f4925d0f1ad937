"""The simulator's machines as an OPC UA server (asyncua), for tests and the demo.

Each machine is an object under Objects with the variables `State` and `StateReason` (String),
`GoodCount` and `RejectCount` (UInt32 counters), `Temperature` (Double) and any further analog
variables (Double) given per machine in `analogs`, with string node ids
`ns=<ns>;s=<machine>.<Variable>` in the namespace `urn:mom:simulator`. `write()` sets a value with
its source timestamp, as a PLC would. With `blank=True` the states, reasons and analog values start
empty (null: no reading yet) and the counters at 0, so that subscribing makes no event.

    plant = OpcUaPlant(["press07", "press08"], port=4840)
    await plant.start()
    await plant.write("press07", "GoodCount", 12, at=datetime.now(UTC))
    await plant.stop()

With `security` (a `ServerSecurity`) the server offers only Basic256Sha256 (Sign and SignAndEncrypt)
with its own certificate, accepts only the client certificates in a trusted folder and only the
configured users with their passwords; `self_signed_certificate` makes the certificates with
`cryptography`, for tests and trying it by hand.

`python -m simulator.opcua_server --port 4840 press07 press08` serves until interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

NAMESPACE_URI = "urn:mom:simulator"
VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {
    "State": ("IDLE", ua.VariantType.String),
    "StateReason": ("", ua.VariantType.String),
    "GoodCount": (0, ua.VariantType.UInt32),
    "RejectCount": (0, ua.VariantType.UInt32),
    "Temperature": (20.0, ua.VariantType.Double),
}


SERVER_URI = "urn:mom:simulator:server"


@dataclass(frozen=True)
class ServerSecurity:
    certificate: Path                        # the server's certificate (PEM or DER), its SAN URI SERVER_URI
    private_key: Path
    trusted_clients: Path                    # a folder of the client certificates the server trusts
    users: Mapping[str, str] = field(default_factory=dict, repr=False)   # user name -> password


class _PasswordUsers:
    """asyncua's user manager: only the configured users, each with its password."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and username in self.users and self.users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


def self_signed_certificate(certificate: Path, private_key: Path, *, application_uri: str, client: bool,
                            common_name: str = "mom") -> None:
    """A self-signed RSA 2048 certificate (PEM) as OPC UA wants it: the application URI in the subject
    alternative names, the key usages of Basic256Sha256, client or server authentication."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(application_uri),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                         data_encipherment=True, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                  else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certificate.parent.mkdir(parents=True, exist_ok=True)
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))


class OpcUaPlant:
    def __init__(self, machines: Iterable[str], *, port: int = 4840, host: str = "127.0.0.1",
                 security: ServerSecurity | None = None, analogs: Mapping[str, Iterable[str]] | None = None,
                 blank: bool = False) -> None:
        self.machines = tuple(machines)
        self.security = security
        self.analogs = {machine: tuple((analogs or {}).get(machine, ())) for machine in self.machines}
        self.blank = blank
        self.port = port
        self.host = host
        self.url = f"opc.tcp://{host}:{port}/mom/"
        self.namespace_index = 2
        self._server: Server | None = None
        self._nodes: dict[tuple[str, str], Any] = {}
        self._types: dict[tuple[str, str], ua.VariantType] = {}

    def node_id(self, machine: str, variable: str) -> str:
        return f"ns={self.namespace_index};s={machine}.{variable}"

    async def start(self) -> None:
        logging.getLogger("asyncua").setLevel(logging.WARNING)
        security = self.security
        server = Server(user_manager=_PasswordUsers(security.users) if security else None)
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("mom simulator")
        if security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await server.set_application_uri(SERVER_URI)
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                        ua.SecurityPolicyType.Basic256Sha256_Sign])
            server.set_identity_tokens([ua.UserNameIdentityToken])
            await server.load_certificate(str(security.certificate))
            await server.load_private_key(str(security.private_key))
            trust = TrustStore([security.trusted_clients], [])
            await trust.load()
            server.set_certificate_validator(CertificateValidator(
                CertificateValidatorOptions.BASIC_VALIDATION | CertificateValidatorOptions.TRUSTED
                | CertificateValidatorOptions.PEER_CLIENT, trust))
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        objects = server.nodes.objects
        for machine in self.machines:
            folder = await objects.add_object(ua.NodeId(machine, self.namespace_index), machine)
            variables = {**VARIABLES, **{name: (0.0, ua.VariantType.Double) for name in self.analogs[machine]}}
            for variable, (initial, variant) in variables.items():
                value = ua.Variant(initial, variant)
                if self.blank and variant != ua.VariantType.UInt32:
                    value = ua.Variant()  # null: no reading yet; the data type stays the variable's
                node = await folder.add_variable(ua.NodeId(f"{machine}.{variable}", self.namespace_index),
                                                 variable, value, datatype=ua.NodeId(variant.value))
                self._nodes[(machine, variable)] = node
                self._types[(machine, variable)] = variant
        await server.start()
        self._server = server

    async def write(self, machine: str, variable: str, value: Any, *, at: datetime | None = None) -> None:
        node = self._nodes[(machine, variable)]
        variant = self._types[(machine, variable)]
        stamp = (at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
        data_value = ua.DataValue(ua.Variant(value, variant), SourceTimestamp=stamp, ServerTimestamp=stamp)
        await node.write_value(data_value)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None


async def _serve(machines: list[str], port: int) -> None:
    plant = OpcUaPlant(machines, port=port)
    await plant.start()
    print(f"serving {', '.join(machines)} at {plant.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await plant.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve simulated machines over OPC UA.")
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("machines", nargs="+")
    args = parser.parse_args()
    asyncio.run(_serve(args.machines, args.port))


if __name__ == "__main__":
    main()
