"""Feed: appending, reading, proving, replicating with verification, and events (forks are in
test_forks.py)."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import Proof, Store, tree, verify_range
from storage.errors import (
    BadSignatureError,
    EntryMissingError,
    EntryTooLargeError,
    MalformedProofError,
    NotWritableError,
    ProofUnavailableError,
    VerificationError,
)
from storage.feed import MAX_ENTRY_BYTES, FeedEvent

from .conftest import OpenStore, deliver


def flip(b: bytes, pos: int = 0) -> bytes:
    return b[:pos] + bytes([b[pos] ^ 0x01]) + b[pos + 1:]


class CountingSigner:
    """Wraps a feed's signing key and counts signatures."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def sign(self, message: bytes):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.inner.sign(message)  # type: ignore[attr-defined]


def ref_root_hash(entries: list[bytes]) -> bytes:
    roots, _, _ = tree.append_leaves([], 0, [tree.leaf_hash(e) for e in entries])
    return tree.tree_hash(roots)


async def test_append_get_range_and_proof(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()
    assert feed.writable and feed.length == 0 and feed.signed is None
    entries = [b"a", b"", b"ccc", bytes(1000)]
    assert await feed.append(entries[:1]) == 1
    assert await feed.append(entries[1:]) == 4
    assert feed.length == 4 and feed.contiguous_length == 4
    assert list(feed.have) == [(0, 4)]
    for k, e in enumerate(entries):
        assert await feed.get(k) == e
        assert feed.has(k)
    assert await feed.get_range(0, 4) == entries
    assert await feed.get_range(1, 3) == entries[1:3]
    assert await feed.get_range(2, 2) == []
    assert feed.signed is not None
    assert feed.signed.tree_hash == ref_root_hash(entries)
    for start in range(4):
        for end in range(start + 1, 5):
            proof = await feed.proof(start, end)
            v = verify_range(feed.key, start, entries[start:end], proof)
            assert v.signed == feed.signed
    assert (await feed.proof(2)).nodes == (await feed.proof(2, 3)).nodes
    with pytest.raises(EntryMissingError):
        await feed.get(4)
    with pytest.raises(EntryMissingError):
        await feed.get_range(2, 5)
    for bad in [(4, 5), (0, 5), (2, 2), (-1, 1)]:
        with pytest.raises(ProofUnavailableError):
            await feed.proof(*bad)
    assert await feed.append([]) == 4
    assert "writable" in repr(feed) and feed.key.hex()[:16] in repr(feed)


async def test_batch_append_signs_once(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()
    counter = CountingSigner(feed._signer)
    feed._signer = counter  # type: ignore[assignment]
    await feed.append([bytes([k]) * k for k in range(50)])
    assert counter.calls == 1
    await feed.append([b"x"] * 7)
    assert counter.calls == 2
    await feed.append([])
    assert counter.calls == 2
    rows = await store.read("SELECT feed_id, length, tree_hash, signature FROM signatures")
    assert len(rows) == 1
    feed_id, length, root_hash, signature = rows[0]
    assert (feed_id, length) == (feed.id, 57)
    assert feed.signed is not None
    assert (root_hash, signature) == (feed.signed.tree_hash, feed.signed.signature)
    entries = [bytes([k]) * k for k in range(50)] + [b"x"] * 7
    assert root_hash == ref_root_hash(entries)
    # Nodes above depth 1 are stored once each; leaves and their parents are not (the entries
    # are, and those hashes are recomputed from them when a proof needs one).
    (count,), = await store.read("SELECT COUNT(*) FROM nodes")
    assert count == len([i for i, _ in tree.append_leaves([], 0, [b""] * 57)[2] if tree.depth(i) > 1])


async def test_concurrent_appends_keep_order(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()
    batches = [[f"{b}-{k}".encode() for k in range(b % 5 + 1)] for b in range(40)]
    lengths = await asyncio.gather(*(feed.append(b) for b in batches))
    flat = [e for b in batches for e in b]
    assert lengths == [sum(len(b) for b in batches[:k + 1]) for k in range(40)]
    assert await feed.get_range(0, len(flat)) == flat
    assert feed.signed is not None and feed.signed.tree_hash == ref_root_hash(flat)


async def test_writable_feed_survives_reopen(open_store: OpenStore) -> None:
    store = await open_store("s")
    feed = await store.create_feed("ns")
    entries = [bytes([k]) * (k % 7) for k in range(21)]
    await feed.append(entries[:10])
    await feed.append(entries[10:])
    signed, have, key = feed.signed, feed.have.copy(), feed.key
    roots = feed._committed.roots
    await store.close()

    store = await open_store("s")
    feed = store.feed(key)
    assert feed.writable and feed.namespace == "ns"
    assert (feed.length, feed.signed, feed.have) == (21, signed, have)
    assert feed._committed.roots == roots
    more = [b"after", b"restart", b""]
    assert await feed.append(more) == 24
    everything = entries + more
    assert await feed.get_range(0, 24) == everything
    assert feed.signed is not None and feed.signed.tree_hash == ref_root_hash(everything)
    verify_range(feed.key, 0, everything, await feed.proof(0, 24))


async def test_replica_put_and_put_range(open_store: OpenStore) -> None:
    src = await (await open_store("w")).create_feed()
    entries = [f"entry {k}".encode() for k in range(13)]
    await src.append(entries)
    dst_store = await open_store("r")
    dst = await dst_store.open_feed(src.key)
    assert not dst.writable and dst.length == 0
    await dst.put(5, entries[5], await src.proof(5))
    assert dst.length == 13 and list(dst.have) == [(5, 6)]
    assert await dst.get(5) == entries[5]
    with pytest.raises(EntryMissingError):
        await dst.get(4)
    with pytest.raises(EntryMissingError):
        await dst.get_range(4, 6)
    await deliver(src, dst, 0, 5)
    await deliver(src, dst, 9, 13)
    assert list(dst.have) == [(0, 6), (9, 13)]
    assert dst.contiguous_length == 6
    await deliver(src, dst, 2, 11)  # overlapping re-delivery is fine
    assert list(dst.have) == [(0, 13)]
    assert await dst.get_range(0, 13) == entries
    assert dst.signed == src.signed
    with pytest.raises(NotWritableError):
        await dst.append([b"no"])
    with pytest.raises(NotWritableError):
        await src.put(0, entries[0], await src.proof(0))
    with pytest.raises(MalformedProofError):
        await dst.put_range(0, [], await src.proof(0))


async def test_replica_grows_with_longer_trees(open_store: OpenStore) -> None:
    src = await (await open_store("w")).create_feed()
    dst = await (await open_store("r")).open_feed(src.key)
    entries = []
    for k in range(6):
        batch = [bytes([k, j]) for j in range(k + 1)]
        entries += batch
        await src.append(batch)
        await deliver(src, dst, 0, len(entries))
        assert dst.length == len(entries) and dst.signed == src.signed
    # An old, shorter proof still verifies and does not shrink the signed length.
    old = await src.proof(0, 1)
    await dst.put(0, entries[0], replace(old, length=old.length))
    assert dst.length == len(entries)


def _tamper_cases(entries: list[bytes], start: int, end: int, proof: Proof, n: int):
    """(name, start, entries, proof, expected error) for every way to corrupt a delivery."""
    for k in range(start, end):
        for pos in {0, len(entries[k]) - 1}:
            bad = list(entries[start:end])
            bad[k - start] = flip(bad[k - start], pos)
            yield f"entry {k} byte {pos}", start, bad, proof, BadSignatureError
    for k, (i, h) in enumerate(proof.nodes):
        for pos in (0, 31):
            nodes = list(proof.nodes)
            nodes[k] = (i, flip(h, pos))
            yield f"node {i} byte {pos}", start, entries[start:end], replace(
                proof, nodes=tuple(nodes)), BadSignatureError
    for pos in (0, 31, 32, 63):
        yield f"signature byte {pos}", start, entries[start:end], replace(
            proof, signature=flip(proof.signature, pos)), BadSignatureError
    yield "short signature", start, entries[start:end], replace(
        proof, signature=proof.signature[:63]), MalformedProofError
    if proof.nodes:
        i, h = proof.nodes[0]
        yield "short node", start, entries[start:end], replace(
            proof, nodes=((i, h[:31]), *proof.nodes[1:])), MalformedProofError
    for length in (n - 1, n + 1, n + 2, 2 * n, 0):
        if end > length:
            expected = MalformedProofError
        else:
            same = tree.proof_nodes(start, end, length) == [i for i, _ in proof.nodes]
            expected = BadSignatureError if same else MalformedProofError
        yield f"length {length}", start, entries[start:end], replace(
            proof, length=length), expected
    for s in (start - 1, start + 1):
        if s < 0 or s + end - start > n:
            expected = MalformedProofError
        else:
            same = tree.proof_nodes(s, s + end - start, n) == [i for i, _ in proof.nodes]
            expected = BadSignatureError if same else MalformedProofError
        yield f"start {s}", s, entries[start:end], proof, expected


@pytest.mark.parametrize(("n", "start", "end"), [(1, 0, 1), (8, 3, 4), (13, 2, 9), (13, 12, 13)])
async def test_tampered_data_is_rejected_and_not_stored(
    open_store: OpenStore, n: int, start: int, end: int
) -> None:
    src = await (await open_store("w")).create_feed()
    entries = [f"entry number {k}".encode() for k in range(n)]
    await src.append(entries)
    dst = await (await open_store("r")).open_feed(src.key)
    if start > 0:
        await deliver(src, dst, 0, 1)
    have = dst.have.copy()
    proof = await src.proof(start, end)
    cases = 0
    for name, s, data, bad, expected in _tamper_cases(entries, start, end, proof, n):
        with pytest.raises(expected) as info:
            if len(data) == 1:
                await dst.put(s, data[0], bad)
            else:
                await dst.put_range(s, data, bad)
        assert isinstance(info.value, VerificationError), name
        assert dst.have == have, name
        for k in range(max(s, 0), s + len(data)):
            if k not in have:
                with pytest.raises(EntryMissingError):
                    await dst.get(k)
        cases += 1
    assert cases > 10
    assert not dst.forked
    # The genuine delivery still goes through afterwards.
    await dst.put_range(start, entries[start:end], proof)
    assert await dst.get_range(start, end) == entries[start:end]


async def test_signature_under_another_key_is_rejected(open_store: OpenStore) -> None:
    store = await open_store("w")
    a, b = await store.create_feed(), await store.create_feed()
    await a.append([b"same"])
    await b.append([b"same"])
    dst = await (await open_store("r")).open_feed(a.key)
    with pytest.raises(BadSignatureError):
        await dst.put(0, b"same", await b.proof(0))
    assert not dst.have and dst.length == 0


async def test_replica_serves_what_it_holds_to_a_third_store(open_store: OpenStore) -> None:
    src = await (await open_store("w")).create_feed()
    entries = [bytes([k]) * k for k in range(30)]
    await src.append(entries[:17])
    await src.append(entries[17:])
    mid = await (await open_store("m")).open_feed(src.key)
    await deliver(src, mid, 3, 11)
    await deliver(src, mid, 20, 21)
    last = await (await open_store("l")).open_feed(src.key)
    await deliver(mid, last, 20, 21)
    for k in range(3, 11):
        await deliver(mid, last, k, k + 1)
    await deliver(mid, last, 4, 9)
    assert list(last.have) == [(3, 11), (20, 21)]
    assert await last.get_range(3, 11) == entries[3:11]
    assert last.signed == src.signed


async def test_replica_serves_after_learning_a_longer_tree(open_store: OpenStore) -> None:
    """A replica that stored entry 0 under a short tree and then learnt a longer tree from
    another range can still prove entry 0 (it must not be left holding an unprovable entry)."""
    src = await (await open_store("w")).create_feed()
    await src.append([b"zero"])
    mid = await (await open_store("m")).open_feed(src.key)
    await deliver(src, mid, 0, 1)
    await src.append([bytes([k]) for k in range(1, 8)])
    await deliver(src, mid, 5, 6)
    assert mid.length == 8
    last = await (await open_store("l")).open_feed(src.key)
    await deliver(mid, last, 0, 1)
    assert await last.get(0) == b"zero"


# -- the replication property ------------------------------------------------------------------


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[bytes], list[int], list[tuple[int, int]]]:
    n = draw(st.integers(1, 40))
    sizes = draw(st.lists(st.integers(0, 64) | st.just(0), min_size=n, max_size=n))
    entries = [bytes([k & 0xFF]) * s for k, s in enumerate(sizes)]
    batches = draw(st.lists(st.integers(1, 8), min_size=1, max_size=n))
    subset = sorted(draw(st.sets(st.integers(0, n - 1))))
    ranges: list[tuple[int, int]] = []
    for k in subset:  # maximal runs of the subset, then cut at random points
        if ranges and ranges[-1][1] == k:
            ranges[-1] = (ranges[-1][0], k + 1)
        else:
            ranges.append((k, k + 1))
    pieces = []
    for s, e in ranges:
        while s < e:
            cut = draw(st.integers(s + 1, e))
            pieces.append((s, cut))
            s = cut
    pieces = draw(st.permutations(pieces))
    return entries, batches, list(pieces)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_any_subset_in_any_order_replicates(case) -> None:  # type: ignore[no-untyped-def]
    entries, batches, pieces = case

    async def run(tmp: Path) -> None:
        async with await Store.open(tmp / "w") as ws, await Store.open(tmp / "r") as rs:
            src = await ws.create_feed()
            pos = 0
            for b in batches:
                if pos < len(entries):
                    await src.append(entries[pos:pos + b])
                    pos += b
            if pos < len(entries):
                await src.append(entries[pos:])
            dst = await rs.open_feed(src.key)
            delivered: set[int] = set()
            for s, e in pieces:
                await deliver(src, dst, s, e)
                delivered |= set(range(s, e))
            assert {k for r in dst.have for k in range(*r)} == delivered
            for k in range(len(entries)):
                if k in delivered:
                    assert await dst.get(k) == entries[k]
                else:
                    with pytest.raises(EntryMissingError):
                        await dst.get(k)
            for s, e in dst.have:
                assert await dst.get_range(s, e) == entries[s:e]
                verify_range(src.key, s, entries[s:e], await dst.proof(s, e))
            if delivered:
                assert dst.signed == src.signed
        # And it all survives a reopen of the replica.
        async with await Store.open(tmp / "r") as rs:
            again = rs.feed(src.key)
            assert {k for r in again.have for k in range(*r)} == delivered
            for s, e in again.have:
                assert await again.get_range(s, e) == entries[s:e]

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


# -- events --------------------------------------------------------------------------------------


async def test_listen_and_wait_change(open_store: OpenStore) -> None:
    src = await (await open_store("w")).create_feed()
    events: list[FeedEvent] = []
    unsubscribe = src.listen(events.append)
    waiter = asyncio.ensure_future(src.wait_change())
    await asyncio.sleep(0)
    await src.append([b"a", b"b"])
    async with asyncio.timeout(5):
        assert await waiter == FeedEvent("append", 0, 2, 2)
    await src.append([b"c"])
    assert events == [FeedEvent("append", 0, 2, 2), FeedEvent("append", 2, 3, 3)]
    unsubscribe()
    unsubscribe()
    await src.append([b"d"])
    assert len(events) == 2

    dst = await (await open_store("r")).open_feed(src.key)
    got: list[FeedEvent] = []
    dst.listen(got.append)
    waiter = asyncio.ensure_future(dst.wait_change())
    await asyncio.sleep(0)
    await deliver(src, dst, 1, 3)
    async with asyncio.timeout(5):
        assert await waiter == FeedEvent("download", 1, 3, 4)
    assert got == [FeedEvent("download", 1, 3, 4)]


async def test_failing_listener_does_not_break_the_store(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()

    def boom(event: FeedEvent) -> None:
        raise RuntimeError("listener bug")

    seen: list[FeedEvent] = []
    feed.listen(boom)
    feed.listen(seen.append)
    async with asyncio.timeout(5):
        assert await feed.append([b"a"]) == 1
        assert await feed.append([b"b"]) == 2
        other = await store.create_feed()
        await other.append([b"c"])
    assert [e.end for e in seen] == [1, 2]
    assert await feed.get_range(0, 2) == [b"a", b"b"]


# -- limits --------------------------------------------------------------------------------------


async def test_entry_too_large(open_store: OpenStore) -> None:
    src = await (await open_store("w")).create_feed()
    big = bytes(MAX_ENTRY_BYTES + 1)
    with pytest.raises(EntryTooLargeError):
        await src.append([b"ok", big])
    assert src.length == 0
    await src.append([bytes(MAX_ENTRY_BYTES)])
    assert len(await src.get(0)) == MAX_ENTRY_BYTES
    dst = await (await open_store("r")).open_feed(src.key)
    with pytest.raises(EntryTooLargeError):
        await dst.put(0, big, await src.proof(0))
    assert not dst.have




async def test_stored_bytes_and_tree_hash_at(open_store: OpenStore) -> None:
    store = await open_store("w")
    src = await store.create_feed()
    await src.append([b"a" * 10, b"b" * 20000])
    await src.append([b"c" * 5])
    assert src.stored_bytes == 20015
    assert src.signed is not None and await src.tree_hash_at(3) == src.signed.tree_hash
    early = await src.tree_hash_at(2)
    rep = await (await open_store("r")).open_feed(src.key)
    await deliver(src, rep, 1, 3)
    await deliver(src, rep, 1, 2)  # again: counted once
    assert rep.stored_bytes == 20005
    await deliver(src, rep, 0, 1)
    assert await rep.tree_hash_at(2) == early
    await store.close()
    store = await open_store("w")
    assert store.feed(src.key).stored_bytes == 20015


async def test_proofs_over_large_entries_read_no_entry(open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large entries keep their leaf and pair hashes (writer and replica alike): a proof for a
    range next to them is built from node rows, never by reading a 64 KiB entry back."""
    from storage.lownodes import LOW_NODE_BYTES

    src = await (await open_store("w")).create_feed()
    entries = [bytes([k]) * LOW_NODE_BYTES for k in range(13)]
    await src.append(entries[:5])
    await src.append(entries[5:])  # the pair (4, 5) closes across two appends
    dst = await (await open_store("r")).open_feed(src.key)
    await deliver(src, dst, 0, 13)
    expected = ref_root_hash(entries)
    reads: list[tuple[int, int]] = []
    for feed in (src, dst):
        def no_read(start: int, end: int, **_: object) -> list[bytes]:
            reads.append((start, end))
            raise AssertionError("a proof read entries back")
        monkeypatch.setattr(feed, "get_range", no_read)
        for start, end in [(3, 5), (5, 6), (1, 2), (6, 13), (0, 13)]:
            proof = await feed.proof(start, end)
            verified = verify_range(src.key, start, entries[start:end], proof)
            assert verified.signed.tree_hash == expected
        monkeypatch.undo()
    assert reads == []


async def test_small_entries_still_recompute_their_low_nodes(open_store: OpenStore) -> None:
    src = await (await open_store("w")).create_feed()
    await src.append([b"x" * 100] * 7 + [b"y" * 5000])  # one large entry: its leaf and pair stay
    stored = {k & ((1 << 42) - 1) for (k,) in await src._rows.read("SELECT key FROM nodes")}
    low = {i for i in stored if tree.depth(i) <= 1}
    assert low == {14, 13}  # leaf 7 and the pair (6, 7)
