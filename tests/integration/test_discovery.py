"""Discovery end to end: daemons that know only a DHT bootstrap node find each other, on
loopback and across network namespaces."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess

import pytest

from tests.integration import netns
from tests.integration.daemons import ok


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def texts(home) -> list[str]:
    return [json.loads(x)["text"] for x in (await ok(home, "log", "cat", "g", "--json")).splitlines()]


async def test_three_peers_find_each_other_through_a_bootstrap_node(daemons):
    port = free_udp_port()
    await daemons("boot", ["--no-lan", "--dht-port", str(port)])  # a plain DHT node, no groups
    via = ["--no-lan", "--bootstrap", f"127.0.0.1:{port}"]
    a, b, c = [await daemons(n, via) for n in "abc"]
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "log", "append", "g", "one")
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "sync", "wait", "g", "--timeout", "60")
    await ok(b.home, "log", "append", "g", "two")
    await ok(c.home, "group", "join", uri)  # C knows only the bootstrap node
    await ok(c.home, "sync", "wait", "g", "--timeout", "60")
    assert sorted(await texts(c.home)) == ["one", "two"]
    status = await c.status()
    assert status["dht"]["enabled"] and status["dht"]["contacts"] >= 1


def _netns_available() -> str | None:
    return netns.unavailable(("ip",))


class Namespaces:
    """Three network namespaces on a bridge (in a fourth), 198.19.N.1-3/24, made and removed by
    the test itself."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.subnet = f"198.19.{os.getpid() % 200 + 1}"  # "public": the DHT keeps no private addresses
        self.bridge = f"cbxbr{tag}"
        self.names = [f"cbx{k}n{tag}" for k in range(1, 4)]
        self.created: list[str] = []

    def ip(self, *args: str, ns: str | None = None) -> None:
        cmd = ["ip", *(["-n", ns] if ns else []), *args]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")

    def up(self) -> None:
        self.ip("netns", "add", self.bridge)
        self.created.append(self.bridge)
        self.ip("link", "add", "br0", "type", "bridge", ns=self.bridge)
        self.ip("link", "set", "br0", "up", ns=self.bridge)
        for k, ns in enumerate(self.names, 1):
            self.ip("netns", "add", ns)
            self.created.append(ns)
            self.ip("link", "add", "eth0", "type", "veth", "peer", "name", f"p{k}", ns=ns)
            self.ip("link", "set", f"p{k}", "netns", self.bridge, ns=ns)
            self.ip("link", "set", f"p{k}", "master", "br0", "up", ns=self.bridge)
            self.ip("addr", "add", f"{self.subnet}.{k}/24", "dev", "eth0", ns=ns)
            self.ip("link", "set", "eth0", "up", ns=ns)
            self.ip("link", "set", "lo", "up", ns=ns)

    def down(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def test_peers_in_three_network_namespaces_discover_each_other(daemons):
    reason = _netns_available()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    net = Namespaces()
    try:
        net.up()
        hosts = [f"{net.subnet}.{k}" for k in range(1, 4)]
        wraps = [["ip", "netns", "exec", ns] for ns in net.names]
        a = await daemons("a", ["--no-lan", "--dht-port", "7600"], host=hosts[0], wrap=wraps[0])
        via = ["--no-lan", "--bootstrap", f"{hosts[0]}:7600"]
        b = await daemons("b", via, host=hosts[1], wrap=wraps[1])
        c = await daemons("c", via, host=hosts[2], wrap=wraps[2])
        uri = (await ok(a.home, "group", "create", "g")).strip()
        await ok(a.home, "log", "append", "g", "across namespaces")
        for d in (b, c):
            await ok(d.home, "group", "join", uri)
        for d in (b, c):
            await ok(d.home, "sync", "wait", "g", "--timeout", "60")
            assert await texts(d.home) == ["across namespaces"]
        peers = json.loads(await ok(c.home, "peers", "--json"))
        assert {p["address"].split(":")[1] for p in peers} <= set(hosts)
        await asyncio.gather(*(d.stop() for d in (a, b, c)))
    finally:
        net.down()
