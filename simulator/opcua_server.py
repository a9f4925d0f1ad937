"""The simulator's machines as an OPC UA server (asyncua), for tests and the demo.

Each machine is an object under Objects with the variables `State` (String), `GoodCount` and
`RejectCount` (UInt32 counters) and `Temperature` (Double), with string node ids
`ns=<ns>;s=<machine>.<Variable>` in the namespace `urn:mom:simulator`. `write()` sets a value with
its source timestamp, as a PLC would.

    plant = OpcUaPlant(["press07", "press08"], port=4840)
    await plant.start()
    await plant.write("press07", "GoodCount", 12, at=datetime.now(UTC))
    await plant.stop()

`python -m simulator.opcua_server --port 4840 press07 press08` serves until interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua

NAMESPACE_URI = "urn:mom:simulator"
VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {
    "State": ("IDLE", ua.VariantType.String),
    "GoodCount": (0, ua.VariantType.UInt32),
    "RejectCount": (0, ua.VariantType.UInt32),
    "Temperature": (20.0, ua.VariantType.Double),
}


class OpcUaPlant:
    def __init__(self, machines: Iterable[str], *, port: int = 4840, host: str = "127.0.0.1") -> None:
        self.machines = tuple(machines)
        self.port = port
        self.host = host
        self.url = f"opc.tcp://{host}:{port}/mom/"
        self.namespace_index = 2
        self._server: Server | None = None
        self._nodes: dict[tuple[str, str], Any] = {}

    def node_id(self, machine: str, variable: str) -> str:
        return f"ns={self.namespace_index};s={machine}.{variable}"

    async def start(self) -> None:
        logging.getLogger("asyncua").setLevel(logging.WARNING)
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("mom simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        objects = server.nodes.objects
        for machine in self.machines:
            folder = await objects.add_object(ua.NodeId(machine, self.namespace_index), machine)
            for variable, (initial, variant) in VARIABLES.items():
                node = await folder.add_variable(ua.NodeId(f"{machine}.{variable}", self.namespace_index),
                                                 variable, ua.Variant(initial, variant))
                self._nodes[(machine, variable)] = node
        await server.start()
        self._server = server

    async def write(self, machine: str, variable: str, value: Any, *, at: datetime | None = None) -> None:
        node = self._nodes[(machine, variable)]
        variant = VARIABLES[variable][1]
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
