"""False forks (issue 12.1): upgrade nodes are covered by no signature, so a peer that sends the
writer's real, longer signed tree with zeroed or garbage upgrade nodes sends a bad proof. The
replica refuses it (``BadUpgradeError``, a ``VerificationError``: the network layer drops that
peer), records no fork, keeps the feed open, and goes on taking the honest tree."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import Store, tree
from storage.errors import BadUpgradeError, ForkError, MalformedProofError, VerificationError
from storage.feed import Feed
from storage.proof import Proof, verify_upgrade

from .conftest import OpenStore, deliver


async def _writer_and_replica(open_store: OpenStore, first: int, total: int) -> tuple[Feed, Feed, Store]:
    writer = await (await open_store("w")).create_feed("g")
    await writer.append([f"entry {k}".encode() for k in range(first)])
    replica_store = await open_store("r")
    replica = await replica_store.open_feed(writer.key, "g")
    await deliver(writer, replica, 0, first)
    await writer.append([f"entry {k}".encode() for k in range(first, total)])
    return writer, replica, replica_store


def _with_upgrade(proof: Proof, make: object) -> Proof:
    return dataclasses.replace(proof, upgrade=tuple((i, make(h)) for i, h in proof.upgrade))  # type: ignore[operator]


@pytest.mark.parametrize("garbage", [lambda h: bytes(32), lambda h: os.urandom(32), lambda h: h[::-1]],
                         ids=["zeroed", "random", "reversed"])
@pytest.mark.parametrize(("first", "total", "start", "end"), [
    (3, 8, 5, 6),      # a range after the trusted tree
    (3, 8, 0, 2),      # a range inside it: its signed nodes agree with ours
    (5, 300, 100, 140),
    (1, 2, 1, 2),
])
async def test_real_longer_tree_with_garbage_upgrade_is_a_bad_proof_not_a_fork(
    open_store: OpenStore, garbage: object, first: int, total: int, start: int, end: int
) -> None:
    writer, replica, _ = await _writer_and_replica(open_store, first, total)
    entries = await writer.get_range(start, end)
    real = await writer.proof(start, end, upgrade_from=replica.known_length)
    assert real.upgrade_from == first and real.upgrade  # the attack needs an upgrade to tamper with
    forged = _with_upgrade(real, garbage)

    with pytest.raises(BadUpgradeError) as info:
        await replica.put_range(start, entries, forged)
    assert isinstance(info.value, MalformedProofError) and isinstance(info.value, VerificationError)
    assert not isinstance(info.value, ForkError)
    assert not replica.forked
    assert await replica.forks() == []
    assert replica.length == first and replica.known_length == first
    assert list(replica.have) == [(0, first)]  # nothing of the bad put stored

    # The honest proof of the same entries still goes in, and the rest of the feed after it.
    await replica.put_range(start, entries, real)
    await deliver(writer, replica, 0, total)
    assert replica.length == total and not replica.forked
    assert await replica.get_range(0, total) == await writer.get_range(0, total)


async def test_false_fork_is_not_recorded_after_reopen(open_store: OpenStore) -> None:
    writer, replica, store = await _writer_and_replica(open_store, 3, 8)
    proof = _with_upgrade(await writer.proof(6, 7, upgrade_from=3), lambda h: bytes(32))
    with pytest.raises(BadUpgradeError):
        await replica.put_range(6, await writer.get_range(6, 7), proof)
    await store.close()
    reopened = await open_store("r")
    again = reopened.feed(writer.key)
    assert not again.forked and await reopened.forks(again) == []
    await deliver(writer, again, 3, 8)
    assert again.length == 8


async def test_upgrade_nodes_from_another_tree_of_the_writer_are_still_a_bad_proof(open_store: OpenStore) -> None:
    """Upgrade nodes taken from a genuinely forked tree of the writer do not make the real
    tree's proof a fork either: only signed nodes are evidence."""
    s1, s2 = await open_store("w1"), await open_store("w2")
    w1 = await s1.create_feed()
    w2 = await s2.import_feed(w1.key, bytes(w1._signer))  # type: ignore[arg-type]
    common = [b"a", b"b", b"c"]
    await w1.append(common)
    await w2.append(common)
    replica = await (await open_store("r")).open_feed(w1.key)
    await deliver(w1, replica, 0, 2)
    assert replica.length == 3
    await w1.append([b"d", b"e", b"f", b"g", b"h"])
    await w2.append([b"D", b"E", b"F", b"G", b"H"])
    real = await w1.proof(0, 1, upgrade_from=3)
    other = await w2.proof(0, 1, upgrade_from=3)
    mixed = dataclasses.replace(real, upgrade=other.upgrade)
    with pytest.raises(BadUpgradeError):
        await replica.put_range(0, [b"a"], mixed)
    assert not replica.forked


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.data())
def test_any_tampered_upgrade_node_is_a_bad_upgrade(old: int, extra: int, data: st.DataObject) -> None:
    """Pure: for any lengths, the honest upgrade nodes rebuild the new roots, and changing any
    one of them raises ``BadUpgradeError`` (never returns, never another error)."""
    new = old + extra
    leaves = [tree.leaf_hash(f"e{k}".encode()) for k in range(new)]
    old_roots, _, _ = tree.append_leaves([], 0, leaves[:old])
    new_roots, _, all_nodes = tree.append_leaves([], 0, leaves)
    nodes = dict(all_nodes)
    upgrade = tuple((i, nodes[i]) for i in tree.upgrade_nodes(old, new))
    proof = Proof(new, bytes(64), (), old, upgrade)
    established = verify_upgrade(old, old_roots, proof, new_roots)
    assert all(established[i] == h for i, h in new_roots)
    k = data.draw(st.integers(0, len(upgrade) - 1))
    garbage = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != upgrade[k][1]))
    tampered = (*upgrade[:k], (upgrade[k][0], garbage), *upgrade[k + 1:])
    with pytest.raises(BadUpgradeError):
        verify_upgrade(old, old_roots, dataclasses.replace(proof, upgrade=tampered), new_roots)
