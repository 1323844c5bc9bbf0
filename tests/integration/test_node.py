"""Nodes over real loopback TCP: one connection per pair of peers."""

from __future__ import annotations

import asyncio
import os

from networker.group import OpenGroup
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store
from tests.helpers import until


async def test_simultaneous_dials_keep_exactly_one_connection(tmp_path):
    keys = GroupKeys.from_address(os.urandom(32))
    stores = [await Store.open(tmp_path / n) for n in "ab"]
    nodes = [Node(DeviceIdentity.generate(), s) for s in stores]
    try:
        groups = [OpenGroup(s, keys) for s in stores]
        for n, g in zip(nodes, groups, strict=True):
            n.join(g)
        a, b = nodes
        addr_a = (await a.listen("tcp:127.0.0.1:0"))[0]
        addr_b = (await b.listen("tcp:127.0.0.1:0"))[0]
        for _ in range(5):  # several rounds of both sides dialing at once
            async with asyncio.timeout(10):
                await asyncio.gather(a.connect(addr_b), b.connect(addr_a), return_exceptions=True)
            await until(lambda: len(a.peers) == 1 and len(b.peers) == 1
                        and a.peers[b.peer_id].conn.handshake_hash
                        == b.peers[a.peer_id].conn.handshake_hash,
                        what="both sides to settle on the same connection")
        feed = await groups[0].create_feed()
        await feed.append([b"over the kept connection"])
        await until(lambda: any(f.key == feed.key and f.contiguous_length == 1 for f in stores[1].feeds()),
                    what="replication over the surviving connection")
    finally:
        for n in nodes:
            await n.close()
        for s in stores:
            await s.close()
