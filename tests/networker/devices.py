"""In-process devices for the replication tests: a store, a node and an open group each, wired
with in-memory connections (``tests.helpers.memory_pair``): no sockets."""

from __future__ import annotations

import os
import types
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from networker.group import OpenGroup
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store


class Device:
    def __init__(self, node: Node, store: Store, group: OpenGroup) -> None:
        self.node, self.store, self.group = node, store, group
        self.max_missing = 0

    def progress(self, peers_wanted: int = 1) -> tuple[bool, int]:
        """What the daemon's sync state (``sync wait``) computes: (synced, missing), once
        ``peers_wanted`` channels are live (it counts live channels only)."""
        missing, settled, peers = 0, True, 0
        for peer in self.node.peers.values():
            for ch in peer.channels.values():
                if ch.group is self.group and ch.live:
                    peers += 1
                    n, s = ch.missing()
                    missing += n
                    settled = settled and s
        self.max_missing = max(self.max_missing, missing)
        return peers >= peers_wanted and settled and missing == 0, missing

    def synced(self, peers_wanted: int = 1) -> bool:
        return self.progress(peers_wanted)[0]

    @property
    def id(self) -> bytes:
        return self.node.peer_id

    def feed(self, key: bytes):
        return next((f for f in self.store.feeds() if f.key == key), None)

    def holds(self, key: bytes, length: int) -> bool:
        f = self.feed(key)
        return f is not None and f.contiguous_length >= length and f.length >= length


MakeDevice = Callable[..., Awaitable[Device]]


@pytest.fixture
async def make_device(tmp_path) -> AsyncIterator[MakeDevice]:
    """``await make_device(name, group_address=None)``: a device of one shared group (or of the
    group of ``group_address``); all are closed at the end of the test."""
    made: list[Device] = []
    address = os.urandom(32)

    async def make(name: str, group_address: bytes | None = None) -> Device:
        store = await Store.open(tmp_path / name)
        node = Node(types.SimpleNamespace(peer_id=os.urandom(32)), store)  # type: ignore[arg-type]
        group = OpenGroup(store, GroupKeys.from_address(group_address or address))
        node.join(group)
        made.append(Device(node, store, group))
        return made[-1]

    yield make
    for dev in made:
        await dev.node.close()
        await dev.store.close()
