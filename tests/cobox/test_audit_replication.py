"""Custody audits over real replication, in memory (no sockets): a member's group and a backup
peer's group on two nodes joined by an in-memory connection, the audit going through
``Peer.call``. The attack: the backup peer kept 1 entry of 300 and signs a receipt for 300."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from cobox.backup import audit as au
from cobox.backup.receipts import EXTENSION, Receipt
from cobox.groups import Group
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store
from tests.helpers import memory_pair, until

ENTRIES = 300


class Pair:
    def __init__(self, member: Group, seed: Group, nodes: list[Node], stores: list[Store]) -> None:
        self.member, self.seed, self.nodes, self.stores = member, seed, nodes, stores

    def status(self) -> dict:
        (peer,) = self.member.backup_status()
        return peer


@pytest.fixture
async def pair(tmp_path) -> AsyncIterator:
    made: list[Pair] = []
    senders: list[asyncio.Task[None]] = []

    async def make(*, seed_keeps: int | None) -> Pair:
        """A member with ENTRIES entries and a backup peer; ``seed_keeps``: the backup peer holds
        only that many entries and takes no more (its quota is full), else it replicates all."""
        ms, ss = await Store.open(tmp_path / "m"), await Store.open(tmp_path / "s")
        keys = GroupKeys.from_address(os.urandom(32))
        member_id, seed_id = DeviceIdentity.generate(), DeviceIdentity.generate()
        member = Group(ms, "g", keys, member_id, 0.0)
        await member.load()
        member.audits = au.Auditor(member, interval=3600, after_receipt=0.01)
        await member.append_records([f"entry {k} ".encode() * 30 for k in range(ENTRIES)])
        seed = Group(ss, "s", GroupKeys.from_replication_key(keys.replication_key), seed_id, 0.0,
                     quota_bytes=1 if seed_keeps is not None else 0)
        await seed.load()
        if seed_keeps is not None:
            feed = member.own_feed()
            assert feed is not None
            replica = await seed.accept_feed(feed.key, member.tag(feed))
            assert replica is not None
            await replica.put_range(0, await feed.get_range(0, seed_keeps), await feed.proof(0, seed_keeps))
            seed.seeding.update_quota()
            assert seed.quota_full
        nodes = []
        for ident, store, group in ((member_id, ms, member), (seed_id, ss, seed)):
            node = Node(ident, store)
            node.join(group)
            nodes.append(node)
        groups = {seed.discovery_key: seed}
        nodes[1].services[au.SERVICE] = au.AuditServer(groups.get).handle
        senders.append(asyncio.create_task(seed.run_receipts()))  # the daemon runs it as a service
        made.append(Pair(member, seed, nodes, [ms, ss]))
        return made[-1]

    yield make
    for t in senders:
        t.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    for p in made:
        for n in p.nodes:
            await n.close()
        for s in p.stores:
            await s.close()


def connect(p: Pair) -> None:
    a, b = memory_pair(p.nodes[0].peer_id, p.nodes[1].peer_id)
    p.nodes[0].add_connection(a)
    p.nodes[1].add_connection(b)


async def test_honest_backup_peer_is_audited_after_its_receipts_and_backed_up(pair) -> None:
    p = await pair(seed_keeps=None)
    connect(p)
    seed_id = p.nodes[1].peer_id
    await until(lambda: bool(p.member.backup_status()) and p.status()["feeds"][0]["held"] == ENTRIES,
                what="receipts for every entry")
    await until(lambda: p.status()["backed_up"], what="a passed audit")
    f = p.status()["feeds"][0]
    assert f["audit"]["state"] == "verified" and f["audit"]["samples"] == au.SAMPLES
    assert p.member.audits.results[seed_id].passed


async def test_backup_peer_that_kept_1_of_300_but_signs_for_300_fails_its_audit(pair) -> None:
    p = await pair(seed_keeps=1)
    connect(p)
    seed_id = p.nodes[1].peer_id
    feed = p.member.own_feed()
    assert feed is not None
    await until(lambda: bool(p.seed._channels), what="the backup peer's channel")
    replica = p.seed.store.feed(feed.key)
    assert list(replica.have) == [(0, 1)] and replica.length == ENTRIES
    # The lie: a receipt for all 300, with the true root hash (the writer's signature gives it).
    assert replica.signed is not None
    lie = Receipt.make(p.seed.identity.sign, seed_id, p.seed.discovery_key, feed.key, ENTRIES,
                       replica.signed.tree_hash, 10**13)
    for ch in p.seed._channels:
        ch.peer.send_extension(ch, EXTENSION, lie.to_body())
    await until(lambda: bool(p.member.backup_status()) and p.status()["feeds"][0]["held"] == ENTRIES,
                what="the member to accept the receipt")
    def audited_the_lie() -> bool:  # (an audit of its honest receipt for 1 entry may come first)
        r = p.member.audits.results.get(seed_id)
        return r is not None and r.feed(feed.key) is not None and r.feed(feed.key)[0] == ENTRIES

    await until(audited_the_lie, what="an audit after the receipt for 300")
    result = p.member.audits.results[seed_id]
    assert not result.passed and "not held" in (result.reason or "")
    st_ = p.status()
    assert st_["feeds"][0]["claimed"] == ENTRIES
    assert not st_["backed_up"] and st_["feeds"][0]["audit"]["state"] == "failed"
