"""A device invited after a removal, in process: its invite's chain of epochs takes it to the
current epoch at once, it reads every past epoch (never writes there), with the chunker key of
the others; a stale invite (made before a later removal) still gets nobody in."""

from __future__ import annotations

import asyncio

import pytest

from cobox import netview
from cobox.groups import Group
from cobox.removal import Epochs, keep_given
from cobox.uri import Invite, parse_invite
from networker import DeviceIdentity, GroupKeys
from networker.node import Node
from storage import Store
from tests.cobox.hostile import Member, connect, members_fixture  # noqa: F401
from tests.cobox.test_removal import Host, chains_fixture  # noqa: F401 (the fixture)
from tests.helpers import until


async def newcomer(tmp_path, name: str, uri: str, stack: list) -> tuple[Member, Host, Epochs]:
    """A device that joins by ``uri`` as the daemon does (chain kept first, then the group)."""
    invite = parse_invite(uri)
    store = await Store.open(tmp_path / name)
    identity = DeviceIdentity.generate()
    keys = GroupKeys.from_address(invite.key)
    await keep_given(store, keys, invite.epochs)
    group = Group(store, "g", keys, identity, 0.0)
    node = Node(identity, store)
    m = Member(name, store, identity, group, node, tmp_path, None)  # type: ignore[arg-type]
    host = Host(m)
    e = Epochs(host, group)
    await e.load_given()
    await host.start_epoch(group)
    await e.load()
    task = asyncio.ensure_future(e.run())
    stack.append((task, node, store))
    return m, host, e


@pytest.fixture
async def newcomers(tmp_path):
    stack: list = []

    async def make(name: str, uri: str) -> tuple[Member, Host, Epochs]:
        return await newcomer(tmp_path / "new", name, uri, stack)

    yield make
    for task, node, store in stack:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await node.close()
        await store.close()


async def log_has(group: Group, texts: set[str], what: str, timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not texts <= {x.text for x in await group.log()}:
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def invite_of(e: Epochs) -> str:
    assert e.genesis.keys.address is not None
    return Invite("join", e.genesis.keys.address, "g", epochs=e.invite_chain()).format()


async def test_a_device_invited_after_a_removal_reads_every_epoch_with_the_same_chunker_key(members, chains,
                                                                                           newcomers):
    a, b, c = [await members(n) for n in "abc"]
    for k, m in enumerate((a, b, c)):
        for other in (a, b, c)[:k]:
            connect(m, other)
    (ha, ea), (hb, _), _ = chains(a), chains(b), chains(c)
    for m in (a, b, c):
        await m.group.append(f"{m.name} before")
    await until(lambda: all(len(m.group.owners()) == 3 for m in (a, b)), what="admissions")
    await ea.remove(c.id.hex()[:12])
    await until(lambda: hb.current is not b.group and hb.current.discovery_key == ha.current.discovery_key,
                what="b to follow a into the new epoch")
    await ha.current.append("a after")
    uri = invite_of(ea)
    assert parse_invite(uri).epoch == ha.current.discovery_key and len(parse_invite(uri).epochs) == 1

    d, hd, ed = await newcomers("d", uri)
    assert d.group.retired and d.group.own_feed() is None  # genesis is a past epoch from the start
    assert hd.current.discovery_key == ha.current.discovery_key  # before it read any record
    connect(d, a)
    await until(lambda: d.id in ha.current.owners(), what="a to admit d's feed in the new epoch")
    # a takes d in the past epoch too (d holds a feed in a later one): the channel is reopened.
    await until(lambda: any(netview.channel_peer_id(ch) == d.id for ch in a.group.channels),
                what="a to open the genesis channel with d")

    await log_has(hd.current, {"a before", "b before", "a after"}, "d to read both epochs")
    # The records are read before the resolution is made of them: wait for both.
    await until(lambda: len(ed.records) == 1 and bool(ed.resolution.steps)
                and ed.resolution.steps[0].removed == {c.id}, what="d to read and resolve the removal record")
    assert ed.resolution.steps[0].records
    assert hd.current.keys.chunker_key == ha.current.keys.chunker_key == a.group.keys.chunker_key
    assert ed.status()["chunker_id"] == ea.status()["chunker_id"] != ""
    await hd.current.append("d after")
    await until(lambda: any(f.key == hd.current.own_feed().key and f.length for f in ha.current.feeds()),
                what="a to get d's entry")
    assert d.store.feeds(d.group.namespace) and not any(f.writable for f in d.store.feeds(d.group.namespace))
    # c, removed, is still refused in the genesis epoch by d once d read who was removed.
    assert not d.group._admits(c.id) and d.group._admits(a.id)
    # d's invite carries the same chain on (it holds every epoch's secrets).
    assert parse_invite(invite_of(ed)).epochs == parse_invite(uri).epochs


async def test_a_stale_chain_invite_gets_nobody_into_the_later_epoch(members, chains, newcomers):
    a, b, c = [await members(n) for n in "abc"]
    for k, m in enumerate((a, b, c)):
        for other in (a, b, c)[:k]:
            connect(m, other)
    (ha, ea), (hb, _), _ = chains(a), chains(b), chains(c)
    for m in (a, b, c):
        await m.group.append(f"{m.name} before")
    await until(lambda: all(len(m.group.owners()) == 3 for m in (a, b)), what="admissions")
    await ea.remove(c.id.hex()[:12])
    await until(lambda: hb.current is not b.group, what="b to follow")
    stale = invite_of(ea)
    first = ha.current
    await first.append("a in epoch 1")
    await until(lambda: b.id in first.owners(), what="a to admit b's feed in epoch 1")
    await ea.remove(b.id.hex()[:12])  # a second removal: the invite above is of a past epoch now
    await until(lambda: ha.current is not first, what="a to move to epoch 2")
    await ha.current.append("a in epoch 2")
    e, he, ee = await newcomers("e", stale)
    connect(e, a)
    await until(lambda: he.current.removal is not None, what="e to be told it was not carried")
    assert he.current.discovery_key == first.discovery_key
    assert "a in epoch 2" not in {x.text for x in await he.current.log()}
    assert ha.current.store.feeds(ha.current.namespace) and not e.store.feeds(ha.current.namespace)


async def test_an_invite_from_an_epoch_of_concurrent_removals_gets_the_newcomer_into_the_union(
        members, chains, newcomers):
    a, b, c, d = [await members(n) for n in "abcd"]
    everyone = [a, b, c, d]
    for k, m in enumerate(everyone):
        for other in everyone[:k]:
            connect(m, other)
    (ha, ea), (hb, eb) = chains(a), chains(b)
    chains(c), chains(d)
    for m in everyone:
        await m.group.append(f"{m.name} before")
    await until(lambda: all(len(m.group.owners()) == 4 for m in (a, b)), what="admissions")
    await asyncio.gather(ea.remove(c.id.hex()[:12]), eb.remove(d.id.hex()[:12]))
    await until(lambda: len(ea.records) == 2 and len(eb.records) == 2 and ha.current is not a.group
                and ha.current.discovery_key == hb.current.discovery_key, what="a and b to reach the union")
    await ha.current.append("a in the union")
    invite = parse_invite(invite_of(ea))
    assert len(invite.epochs) == 1 and len(invite.epochs[0]) == 2  # one step of two secrets
    e, he, ee = await newcomers("e", invite_of(ea))
    assert he.current.discovery_key == ha.current.discovery_key
    connect(e, b)
    await log_has(he.current, {"a before", "b before", "a in the union"}, "e to read both epochs")
    await until(lambda: len(ee.records) == 2 and bool(ee.resolution.steps)
                and ee.resolution.steps[0].removed == {c.id, d.id}, what="e to read and resolve both removal records")
    assert he.current.removal is None
    assert he.current.keys.chunker_key == ha.current.keys.chunker_key
