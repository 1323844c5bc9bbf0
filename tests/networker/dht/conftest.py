"""An in-process DHT network on 127.0.0.1 (port 0), and a raw UDP client for forging RPCs."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest_asyncio
import umsgpack

from networker.dht import DHT
from networker.dht.storage import TopicLimits
from networker.identity import DeviceIdentity

RPC_TIMEOUT = 0.5


class Clock:
    """Wall-clock time plus an offset that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


# Every test node runs on 127.0.0.1: records name loopback addresses, and all announces come
# from one IP, so the per-IP topic limits are lifted (tests of those limits set their own).
TEST_NETWORK = {"allow_loopback": True, "topic_limits": TopicLimits(per_ip=1000, per_subnet=1000)}


async def start_network(n: int, clock: Clock, **kwargs: Any) -> list[DHT]:
    kwargs = {**TEST_NETWORK, **kwargs}
    first = DHT(DeviceIdentity.generate(), rpc_timeout=RPC_TIMEOUT, clock=clock, **kwargs)
    await first.start()
    nodes = [first]
    while len(nodes) < n:
        boot = [d.address for d in nodes[:3]]
        batch = [
            DHT(DeviceIdentity.generate(), bootstrap=boot, rpc_timeout=RPC_TIMEOUT, clock=clock, **kwargs)
            for _ in range(min(10, n - len(nodes)))
        ]
        async with asyncio.timeout(10):
            await asyncio.gather(*(d.start() for d in batch))
        nodes.extend(batch)
    # Refresh the first nodes' tables now that everyone is there.
    async with asyncio.timeout(10):
        await asyncio.gather(*(d.join([]) for d in nodes[:10]))
    return nodes


async def stop_all(nodes: list[DHT]) -> None:
    await asyncio.gather(*(d.stop() for d in nodes))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def network(clock: Clock):
    nodes = await start_network(50, clock)
    yield nodes
    await stop_all(nodes)


class RawClient(asyncio.DatagramProtocol):
    """Speaks the rpcudp framing directly, to send what a DHT node never would."""

    def __init__(self) -> None:
        self.waiters: dict[bytes, asyncio.Future[Any]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        fut = self.waiters.pop(data[1:21], None)
        if fut is not None and not fut.done() and data[:1] == b"\x01":
            fut.set_result(umsgpack.unpackb(data[21:]))

    async def call(self, addr: tuple[str, int], name: str, *args: Any, timeout: float = 2.0) -> Any:
        assert self.transport is not None
        msg_id = os.urandom(20)
        fut = asyncio.get_running_loop().create_future()
        self.waiters[msg_id] = fut
        self.transport.sendto(b"\x00" + msg_id + umsgpack.packb([name, list(args)]), addr)
        return await asyncio.wait_for(fut, timeout)

    async def lookup(self, addr: tuple[str, int], key: bytes, nodeid: bytes | None = None) -> list[Any]:
        """A full ``lookup`` reply: ask, then ask again with the address cookie."""
        nodeid = nodeid or os.urandom(20)
        first = await self.call(addr, "lookup", nodeid, key)
        return await self.call(addr, "lookup", nodeid, key, first[3])

    def send_raw(self, addr: tuple[str, int], data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def raw_client() -> RawClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(RawClient, local_addr=("127.0.0.1", 0))
    return proto


class FakeNode(asyncio.DatagramProtocol):
    """A hostile DHT node: answers ``ping`` with its id and every other RPC with whatever
    ``answer(name, args, addr)`` returns (``None``: no reply)."""

    def __init__(self, node_id: bytes, answer: Any) -> None:
        self.node_id = node_id
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: list[tuple[str, list[Any]]] = []
        self.replies = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == b"\x01":
            self.replies += 1
        if data[:1] != b"\x00":
            return
        name, args = umsgpack.unpackb(data[21:])
        self.requests.append((name, args))
        reply = self.node_id if name == "ping" else self.answer(name, args, addr)
        if reply is not None and self.transport is not None:
            self.transport.sendto(b"\x01" + data[1:21] + umsgpack.packb(reply), addr)

    def send(self, addr: tuple[str, int], name: str, *args: Any) -> None:
        """Send a request; its reply only counts in ``replies``."""
        assert self.transport is not None
        self.transport.sendto(b"\x00" + os.urandom(20) + umsgpack.packb([name, list(args)]), addr)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, int(port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def fake_node(answer: Any, node_id: bytes | None = None, host: str = "127.0.0.1") -> FakeNode:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: FakeNode(node_id or os.urandom(20), answer), local_addr=(host, 0))
    return proto
