"""The OPC UA bridge against a real asyncua server (the simulator's) that requires Basic256Sha256, a
trusted client certificate and a user with a password: values reach Kafka over Sign and over
SignAndEncrypt; a wrong password, an untrusted client certificate and a server certificate other than
the pinned one are each refused with an error that names the setting to fix.

Certificates are made in the test with `cryptography`. The server listens on MOM_TEST_OPCUA_PORT + 1
(default 28841), beside test_bridge_opcua's.
"""
from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.common.settings import SettingsError
from services.ingest.bridge import Bridges, BridgeSettings, OpcUaSecurity
from services.ingest.bridge_config import parse
from services.ingest.opcua import OpcUaBridge, OpcUaSetupError
from simulator.opcua_server import SERVER_URI, OpcUaPlant, ServerSecurity, self_signed_certificate

from .test_bridge_mqtt import _sink, machine_events, unique

pytestmark = pytest.mark.integration

PORT = int(os.environ.get("MOM_TEST_OPCUA_PORT", "28840")) + 1
CLIENT_URI = "urn:mom:ingest-bridge"
PASSWORD = "press-line-7f3a9c"   # the test server's user password, as MOM_INGEST_OPCUA_PASSWORD would carry it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Server, trusted client, untrusted client and an impostor server certificate, each with its key."""
    folder = tmp_path_factory.mktemp("pki")
    self_signed_certificate(folder / "server.pem", folder / "server-key.pem", application_uri=SERVER_URI, client=False)
    self_signed_certificate(folder / "trusted" / "bridge.pem", folder / "bridge-key.pem", application_uri=CLIENT_URI,
                            client=True)
    self_signed_certificate(folder / "stranger.pem", folder / "stranger-key.pem", application_uri=CLIENT_URI,
                            client=True)
    self_signed_certificate(folder / "impostor.pem", folder / "impostor-key.pem", application_uri=SERVER_URI,
                            client=False)
    return folder


@pytest.fixture
async def secure_plant(pki: Path):
    machine = f"press07-{uuid.uuid4().hex[:8]}"
    plant = OpcUaPlant([machine], port=PORT, security=ServerSecurity(
        certificate=pki / "server.pem", private_key=pki / "server-key.pem", trusted_clients=pki / "trusted",
        users={"bridge": PASSWORD}))
    await plant.start()
    yield plant, machine
    await plant.stop()


def security_env(pki: Path, **overrides: str) -> dict[str, str]:
    env = {"MOM_INGEST_OPCUA_SECURITY_POLICY": "Basic256Sha256", "MOM_INGEST_OPCUA_SECURITY_MODE": "SignAndEncrypt",
           "MOM_INGEST_OPCUA_CERTIFICATE": str(pki / "trusted" / "bridge.pem"),
           "MOM_INGEST_OPCUA_PRIVATE_KEY": str(pki / "bridge-key.pem"),
           "MOM_INGEST_OPCUA_SERVER_CERTIFICATE": str(pki / "server.pem"),
           "MOM_INGEST_OPCUA_USERNAME": "bridge", "MOM_INGEST_OPCUA_PASSWORD": PASSWORD}
    return {**env, **overrides}


def config_for(plant: OpcUaPlant, machine: str, unit: str) -> dict:
    return {"opcua": {"publishing_interval_ms": 50},
            "tags": {"state": {"kind": "state"}, "good": {"kind": "counter"}},
            "equipment": [{"id": unit, "opcua_nodes": {"state": plant.node_id(machine, "State"),
                                                       "good": plant.node_id(machine, "GoodCount")}}]}


async def refusal(plant: OpcUaPlant, machine: str, security: OpcUaSecurity) -> str:
    bridge = OpcUaBridge(plant.url, parse(config_for(plant, machine, "acme.kiel.x.press07")), None,  # type: ignore[arg-type]
                         security)
    with pytest.raises(OpcUaSetupError) as refused:
        client = await bridge.connect()
        await client.disconnect()
    return str(refused.value)


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
@pytest.mark.asyncio(loop_scope="session")
async def test_values_arrive_over_a_signed_or_encrypted_channel_with_a_user(prepared, pki, secure_plant, tmp_path,
                                                                          mode) -> None:
    plant, machine = secure_plant
    unit = f"acme.kiel.secure.{uuid.uuid4().hex[:8]}.press07"
    security = OpcUaSecurity.from_env(security_env(pki, MOM_INGEST_OPCUA_SECURITY_MODE=mode))
    settings = BridgeSettings(config_path=None, mqtt_url=None, opcua_url=plant.url, buffer_dir=tmp_path / "buffer",
                              retry_s=0.2, opcua_security=security)
    bridges = Bridges(settings, parse(config_for(plant, machine, unit)), _sink(prepared))
    await bridges.start()
    try:
        # Given a bridge connected over Basic256Sha256 as the server's user
        await asyncio.wait_for(bridges.opcua.connected.wait(), timeout=30)
        assert bridges.opcua.last_error is None
        # When the press runs and counts
        clock = datetime.now(UTC) - timedelta(minutes=20)
        await plant.write(machine, "State", "RUNNING", at=clock)
        await plant.write(machine, "GoodCount", 7, at=clock + timedelta(seconds=5))
        records = unique(await asyncio.to_thread(machine_events, prepared, {unit}, lambda rs: any(
            r["type"] == "PartsProduced" for r in rs)))
    finally:
        await bridges.stop()
    # Then Kafka holds the state change and the count
    assert [r.get("state") for r in records if r["type"] == "MachineStateChanged"][-1] == "RUNNING"
    assert [r["good"] for r in records if r["type"] == "PartsProduced"] == [7]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_wrong_password_names_the_password_setting(pki, secure_plant) -> None:
    plant, machine = secure_plant
    security = OpcUaSecurity.from_env(security_env(pki, MOM_INGEST_OPCUA_PASSWORD="not-the-password"))
    message = await refusal(plant, machine, security)
    assert "MOM_INGEST_OPCUA_PASSWORD" in message and "'bridge'" in message and "BadUserAccessDenied" in message
    assert "not-the-password" not in message


@pytest.mark.asyncio(loop_scope="session")
async def test_no_user_names_the_user_setting(pki, secure_plant) -> None:
    plant, machine = secure_plant
    security = replace(OpcUaSecurity.from_env(security_env(pki)), username=None, password="")
    assert "MOM_INGEST_OPCUA_USERNAME" in await refusal(plant, machine, security)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_client_certificate_the_server_does_not_trust_names_the_certificate_setting(pki, secure_plant) -> None:
    plant, machine = secure_plant
    security = OpcUaSecurity.from_env(security_env(pki, MOM_INGEST_OPCUA_CERTIFICATE=str(pki / "stranger.pem"),
                                                   MOM_INGEST_OPCUA_PRIVATE_KEY=str(pki / "stranger-key.pem")))
    message = await refusal(plant, machine, security)
    assert "MOM_INGEST_OPCUA_CERTIFICATE" in message and "stranger.pem" in message


@pytest.mark.asyncio(loop_scope="session")
async def test_a_server_certificate_other_than_the_pinned_one_names_the_server_certificate_setting(pki, secure_plant) -> None:
    plant, machine = secure_plant
    security = OpcUaSecurity.from_env(security_env(pki, MOM_INGEST_OPCUA_SERVER_CERTIFICATE=str(pki / "impostor.pem")))
    message = await refusal(plant, machine, security)
    assert "MOM_INGEST_OPCUA_SERVER_CERTIFICATE" in message


@pytest.mark.asyncio(loop_scope="session")
async def test_the_bridge_keeps_the_refusal_and_retries(prepared, pki, secure_plant, tmp_path) -> None:
    plant, machine = secure_plant
    security = OpcUaSecurity.from_env(security_env(pki, MOM_INGEST_OPCUA_PASSWORD="not-the-password"))
    settings = BridgeSettings(config_path=None, mqtt_url=None, opcua_url=plant.url, buffer_dir=tmp_path / "buffer",
                              opcua_security=security)
    bridges = Bridges(settings, parse(config_for(plant, machine, "acme.kiel.x.press07")), _sink(prepared))
    await bridges.start()
    try:
        for _ in range(200):
            if bridges.opcua.last_error:
                break
            await asyncio.sleep(0.05)
        assert "MOM_INGEST_OPCUA_PASSWORD" in (bridges.opcua.last_error or "")
        assert not bridges.opcua.connected.is_set()
    finally:
        await bridges.stop()


BAD_SETTINGS = [
    ({"MOM_INGEST_OPCUA_SECURITY_POLICY": "Basic128Rsa15"}, "MOM_INGEST_OPCUA_SECURITY_POLICY='Basic128Rsa15': must be one of"),
    ({"MOM_INGEST_OPCUA_SECURITY_MODE": "Encrypt"}, "MOM_INGEST_OPCUA_SECURITY_MODE='Encrypt': must be one of Sign, SignAndEncrypt"),
    ({"MOM_INGEST_OPCUA_SERVER_CERTIFICATE": ""}, "MOM_INGEST_OPCUA_SERVER_CERTIFICATE is required"),
    ({"MOM_INGEST_OPCUA_PRIVATE_KEY": "/nonexistent/key.pem"}, "MOM_INGEST_OPCUA_PRIVATE_KEY='/nonexistent/key.pem': no such file"),
    ({"MOM_INGEST_OPCUA_PASSWORD": ""}, "MOM_INGEST_OPCUA_PASSWORD is required with MOM_INGEST_OPCUA_USERNAME"),
    ({"MOM_INGEST_OPCUA_SECURITY_POLICY": "None"}, "MOM_INGEST_OPCUA_SECURITY_POLICY must be Basic256Sha256"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_SETTINGS)
def test_settings_name_what_is_missing_or_wrong(pki, overrides, message) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        OpcUaSecurity.from_env(security_env(pki, **overrides))


def test_no_security_settings_is_an_anonymous_unsecured_client() -> None:
    assert not OpcUaSecurity.from_env({}).secure


@pytest.mark.asyncio(loop_scope="session")
async def test_a_file_that_is_not_a_certificate_names_its_setting(pki, secure_plant) -> None:
    plant, machine = secure_plant
    security = OpcUaSecurity.from_env(security_env(pki, MOM_INGEST_OPCUA_SERVER_CERTIFICATE=str(pki / "server-key.pem")))
    message = await refusal(plant, machine, security)
    assert "MOM_INGEST_OPCUA_SERVER_CERTIFICATE=" in message and "not a PEM or DER certificate" in message
