"""Forks: two valid signed trees that disagree are detected, recorded with their evidence, and
stick across a reopen; nothing of the conflicting tree is stored."""

from __future__ import annotations

import pytest

from storage import tree
from storage.errors import BadUpgradeError, ForkError, VerificationError

from .conftest import OpenStore, deliver


async def test_fork_is_detected_recorded_and_sticky(open_store: OpenStore) -> None:
    s1 = await open_store("w1")
    w1 = await s1.create_feed("g")
    s2 = await open_store("w2")
    w2 = await s2.import_feed(w1.key, bytes(w1._signer), "g")  # type: ignore[arg-type]
    assert w2.writable and w2.key == w1.key
    common = [b"one", b"two"]
    await w1.append(common)
    await w2.append(common)
    assert w1.signed == w2.signed
    await w1.append([b"three", b"four"])
    await w2.append([b"THREE", b"four"])  # same length, different tree

    rs = await open_store("r")
    replica = await rs.open_feed(w1.key, "g")
    await deliver(w1, replica, 0, 4)
    with pytest.raises(ForkError) as info:
        await deliver(w2, replica, 0, 2)  # same length, another tree: even the common prefix
    assert isinstance(info.value, VerificationError)
    assert replica.forked
    assert await replica.get(2) == b"three"  # nothing of the conflicting tree stored
    evidence = await rs.forks(replica)
    assert len(evidence) == 1
    ev = evidence[0]
    assert w1.signed is not None and w2.signed is not None
    assert (ev["length_a"], ev["tree_hash_a"], ev["signature_a"]) == (
        4, w1.signed.tree_hash, w1.signed.signature)
    assert (ev["length_b"], ev["tree_hash_b"], ev["signature_b"]) == (
        4, w2.signed.tree_hash, w2.signed.signature)
    # Both signatures are genuine: the evidence proves the writer misbehaved.
    from storage.proof import check_signature
    check_signature(w1.key, 4, ev["tree_hash_a"], ev["signature_a"])  # type: ignore[arg-type]
    check_signature(w1.key, 4, ev["tree_hash_b"], ev["signature_b"])  # type: ignore[arg-type]

    # Later puts are refused, even consistent ones.
    with pytest.raises(ForkError):
        await deliver(w1, replica, 0, 1)
    await w1.append([b"five"])
    with pytest.raises(ForkError):
        await deliver(w1, replica, 4, 5)
    await rs.close()

    rs = await open_store("r")
    replica = rs.feed(w1.key)
    assert replica.forked
    assert len(await rs.forks(replica)) == 1
    with pytest.raises(ForkError):
        await deliver(w1, replica, 0, 1)


async def test_fork_with_different_lengths_is_detected_by_node(open_store: OpenStore) -> None:
    s1, s2 = await open_store("w1"), await open_store("w2")
    w1 = await s1.create_feed()
    w2 = await s2.import_feed(w1.key, bytes(w1._signer))  # type: ignore[arg-type]
    await w1.append([b"a", b"b", b"c"])
    await w2.append([b"a", b"B", b"c", b"d", b"e"])
    replica = await (await open_store("r")).open_feed(w1.key)
    await deliver(w1, replica, 0, 3)
    with pytest.raises(ForkError):
        await deliver(w2, replica, 3, 5)
    assert replica.forked
    (ev,) = await replica.forks()
    assert ev["length_a"] == 3 and ev["length_b"] == 5
    assert ev["node_index"] is not None and ev["hash_a"] != ev["hash_b"]
    assert replica.length == 3 and list(replica.have) == [(0, 3)]


async def test_fork_hidden_behind_a_parent_node_is_detected(open_store: OpenStore) -> None:
    """The second tree's proof covers the replica's stored leaf only by an ancestor node, and
    its upgrade nodes (signed by nobody) do not rebuild it from the replica's roots. From that
    proof alone a fork cannot be told from garbage upgrade nodes, so it is a bad proof: nothing
    adopted, the feed not frozen. A proof whose signed nodes cover the differing leaf then proves
    the fork, with both hashes as evidence."""
    s1, s2 = await open_store("w1"), await open_store("w2")
    w1 = await s1.create_feed()
    w2 = await s2.import_feed(w1.key, bytes(w1._signer))  # type: ignore[arg-type]
    await w1.append([b"a"])
    await w2.append([b"X", b"b", b"c", b"d"])
    replica = await (await open_store("r")).open_feed(w1.key)
    await deliver(w1, replica, 0, 1)
    with pytest.raises(BadUpgradeError):
        await deliver(w2, replica, 2, 3)
    assert not replica.forked and replica.length == 1 and list(replica.have) == [(0, 1)]
    with pytest.raises(ForkError):
        await deliver(w2, replica, 0, 1)
    assert replica.forked
    (ev,) = await replica.forks()
    assert ev["node_index"] == 0 and ev["hash_a"] == tree.leaf_hash(b"a") and ev["hash_b"] == tree.leaf_hash(b"X")
    assert ev["length_a"] == 1 and ev["length_b"] == 4
