"""An in-process group of cobox members for attack tests: real stores, groups and folder
syncs, replicating over in-memory connections; a hostile member writes crafted entries into
its own feed with the group's keys (exactly what a member can do)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from blake3 import blake3

from cobox.folders.sync import FolderSync
from cobox.groups import Group
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store
from storage.errors import FeedNotFoundError
from tests.helpers import memory_pair, until

BIG_DISK = (10**13, 10**13)  # (free, total): the fake file system of a test that does not care


@dataclass
class Member:
    name: str
    store: Store
    identity: DeviceIdentity
    group: Group
    node: Node
    root: Path
    sync: FolderSync

    @property
    def id(self) -> bytes:
        return self.identity.peer_id

    @property
    def feed(self) -> Any:
        feed = self.group.own_feed()
        assert feed is not None
        return feed

    async def write(self, *objs: Any) -> int:
        """Append crafted plaintext records (msgpack objects or raw bytes) to this member's
        own feed, sealed with the group key; the seq of the first."""
        return await self.group.append_records(
            [o if isinstance(o, bytes) else msgpack.packb(o, use_bin_type=True) for o in objs])

    def holds(self, other: Member) -> int:
        """How many entries of ``other``'s feed this member holds contiguously."""
        try:
            return self.store.feed(other.feed.key).contiguous_length
        except FeedNotFoundError:
            return 0

    async def caught_up(self, *others: Member, timeout: float = 10.0) -> None:
        await until(lambda: all(self.holds(o) >= o.feed.length for o in others), timeout,
                    f"{self.name} to hold the feeds of {[o.name for o in others]}")


def connect(a: Member, b: Member) -> None:
    ca, cb = memory_pair(a.id, b.id)
    a.node.add_connection(ca)
    b.node.add_connection(cb)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def digests(root: Path) -> dict[str, str]:
    """``tree`` as BLAKE3 digests (what a failed comparison prints stays short)."""
    return {path: blake3(data).hexdigest() for path, data in tree(root).items()}


async def sent(a: Member, b: Member, files: dict[str, bytes], timeout: float = 30) -> None:
    """Write ``files`` into A's folder and record them; connect A and B; B takes everything and
    applies it; both folders then hold the same files."""
    for path, data in files.items():
        (a.root / path).parent.mkdir(parents=True, exist_ok=True)
        (a.root / path).write_bytes(data)
    await a.sync.round()
    connect(a, b)
    await b.caught_up(a, timeout=timeout)
    await b.sync.round()
    assert digests(b.root) == digests(a.root)


@pytest.fixture(name="members")
async def members_fixture(tmp_path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Member] = []
    address = os.urandom(32)

    async def make(name: str, *, disk_space: Callable[[Path], tuple[int, int]] = lambda _p: BIG_DISK,
                   **group_kw: Any) -> Member:
        store = await Store.open(tmp_path / name / "home")
        identity = DeviceIdentity.generate()
        group = Group(store, "g", GroupKeys.from_address(address), identity, 0.0, **group_kw)
        await group.load()
        node = Node(identity, store)
        node.join(group)
        root = tmp_path / name / "folder"
        root.mkdir(parents=True)
        sync = FolderSync(group, root, backoff=0.01, disk_space=disk_space)
        m = Member(name, store, identity, group, node, root, sync)
        made.append(m)
        return m

    yield make
    for m in made:
        await m.sync.stop()
        await m.node.close()
        await m.store.close()
