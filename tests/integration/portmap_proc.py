"""Run inside the LAN namespace of tests/integration/netns_upnp.py: map TCP and UDP port
``argv[1]`` on the router with ``argv[2]`` ("pcp", "natpmp" or "upnp", through the daemon's own
PortMapper), serve a TCP listener there
that greets each connection, print one JSON line per step, and on "stop" from stdin remove the
mappings."""

from __future__ import annotations

import asyncio
import json
import sys

from networker.reach.natpmp import NatPmpClient, default_gateway
from networker.reach.pcp import PcpClient
from networker.reach.portmap import PortMapper, wanted_ports
from networker.reach.upnp import UpnpClient


async def main(port: int, kind: str) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"behind-nat\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "0.0.0.0", port)
    gateway = default_gateway()
    assert gateway is not None, "no default route"
    client = UpnpClient() if kind == "upnp" else {"pcp": PcpClient, "natpmp": NatPmpClient}[kind](gateway)
    mapper = PortMapper(client, wanted_ports(port, port))
    first = await mapper.renew()
    print(json.dumps({"step": "mapped", "next": first, **mapper.status()}), flush=True)
    await mapper.renew()
    print(json.dumps({"step": "renewed", **mapper.status()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await mapper.stop()
    print(json.dumps({"step": "removed", **mapper.status()}), flush=True)
    server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
