"""History that expires (issue 16 item 3): which versions expire, which chunk entries that frees
(never one a kept version shares, never one that is not a chunk), and pruning a real folder: a
deleted 30 MB file frees at least 25 MB with history_days = 0; history marks what is gone; a
file with the same content is stored again, not referenced to cleared chunks."""

from __future__ import annotations

import os

from cobox.folders import history as folder_history
from cobox.folders import prune
from cobox.folders.merge import FolderState
from cobox.folders.model import Put
from cobox.folders.reader import OpReader
from storage import RangeSet
from tests.helpers import until

from ..hostile import (
    connect,
    members_fixture,  # noqa: F401 - the fixture "members"
)
from .helpers import FEED, A, B, delete, put, ref

NOW = 1_800_000_000.0
ALL = {FEED: RangeSet([(0, 1000)])}  # every seq of FEED read as a chunk entry


def seqs(p: prune.PrunePlan) -> list[tuple[int, int]]:
    return list(p.clear.get(FEED, RangeSet()))


def test_replaced_and_deleted_versions_expire_heads_stay() -> None:
    v1 = put("a.txt", b"one", 1, A)
    v2 = put("a.txt", b"two", 2, A, base=v1.stamp)
    gone = put("b.txt", b"bee", 3, B)
    state = FolderState.merge([v1, v2, gone, delete("b.txt", 4, B, gone.stamp)])
    p = prune.plan(state, {}, NOW, 0, ALL)
    assert sorted(v.path for v in p.expired) == ["a.txt", "b.txt"]
    assert seqs(p) == [(1, 2), (3, 4)]  # the chunks of v1 and of the deleted b.txt; v2's stays
    # With 30 days, a version replaced now is kept; 31 days later it expires.
    times = {path: {prune.vid(v): NOW for v in vs} for path, vs in prune.replaced_versions(state).items()}
    assert prune.plan(state, times, NOW, 30, ALL).clear == {}
    assert seqs(prune.plan(state, times, NOW + 31 * prune.DAY, 30, ALL)) == [(1, 2), (3, 4)]


def test_a_chunk_shared_by_dedup_with_a_kept_version_is_not_cleared() -> None:
    shared = ref(b"same content", 7)
    old = Put("old.bin", 12, 0o644, 1, (shared, ref(b"own", 8)), 1, A)
    new = Put("old.bin", 3, 0o644, 2, (ref(b"new", 9),), 2, A, old.stamp)
    copy = Put("elsewhere.bin", 12, 0o644, 3, (shared,), 3, B)  # another path, another author
    p = prune.plan(FolderState.merge([old, new, copy]), {}, NOW, 0, ALL)
    assert [v.path for v in p.expired] == ["old.bin"]
    assert seqs(p) == [(8, 9)]  # 7 is still referenced by elsewhere.bin


def test_a_conflicts_both_sides_are_kept() -> None:
    base = put("c.txt", b"base", 1, A)
    left = put("c.txt", b"left", 2, A, base=base.stamp)
    right = put("c.txt", b"right", 2, B, base=base.stamp)
    p = prune.plan(FolderState.merge([base, left, right]), {}, NOW, 0, ALL)
    assert [v.stamp for v in p.expired] == [base.stamp] and seqs(p) == [(1, 2)]


def test_a_version_naming_an_operation_entry_as_its_chunk_cannot_get_it_cleared() -> None:
    """A hostile member's version references seq 5 of FEED, which is an operation entry there
    (not read as a chunk): when that version expires, seq 5 stays."""
    hostile = Put("x", 1, 0o644, 1, (ref(b"?", 5),), 1, B)
    later = delete("x", 2, B, hostile.stamp)
    chunks_read = {FEED: RangeSet([(0, 5), (6, 10)])}
    p = prune.plan(FolderState.merge([hostile, later]), {}, NOW, 0, chunks_read)
    assert [v.path for v in p.expired] == ["x"] and p.clear == {}


def test_replaced_times_records_are_strict() -> None:
    assert prune.decode_times(prune.encode_times({"1-aa": NOW})) == {"1-aa": NOW}
    for bad in (b"\xc1", prune.encode_times({"1-aa": -1.0}), b"\x91\x01"):
        try:
            prune.decode_times(bad)
        except prune.MalformedRecordError:
            continue
        raise AssertionError(f"accepted {bad!r}")


async def test_a_deleted_30_mb_file_frees_at_least_25_mb(members, tmp_path):
    a = await members("a")
    big = os.urandom(30 * 1024 * 1024)
    (a.root / "big.bin").write_bytes(big)
    (a.root / "small.txt").write_bytes(b"kept")
    await a.sync.round()
    old = (await a.sync.read_ops()).files["big.bin"]
    os.remove(a.root / "big.bin")
    await a.sync.round()
    assert "big.bin" not in (await a.sync.read_ops()).files
    before = await a.store.disk_use()
    # Disk use (status, folder status): the deleted file is history; reclaimable under 0 days,
    # not under 30 (it was replaced just now).
    use = prune.disk_use(a.sync, 30)
    assert use["folder_bytes"] == 4 and use["stored_bytes"] >= 30 * 1024 * 1024
    assert use["history_bytes"] == 30 * 1024 * 1024 and use["reclaimable_bytes"] == 0
    assert prune.disk_use(a.sync, 0)["reclaimable_bytes"] == 30 * 1024 * 1024

    result = await prune.prune(a.sync, 0)
    after = await a.store.disk_use()
    assert result.expired == 1 and result.freed_bytes >= 25 * 1024 * 1024, result
    assert before.total - after.total >= 25 * 1024 * 1024, (before, after)
    assert result.disk_freed >= 25 * 1024 * 1024
    use = prune.disk_use(a.sync, 0)
    assert use["history_bytes"] == use["reclaimable_bytes"] == 0 and use["stored_bytes"] < 1024 * 1024
    # History marks the deleted content as no longer available here; the kept file is.
    history = prune.mark_history(a.sync, "big.bin", await folder_history.history(a.sync, "big.bin"))
    content = [h for h in history if not h["deleted"]]
    assert [h["available"] for h in content] == [False] and content[0]["held_by"] == []
    small = prune.mark_history(a.sync, "small.txt", await folder_history.history(a.sync, "small.txt"))
    assert [h["available"] for h in small] == [True]
    # After a restart (a new reader merges every operation again) dedup still does not offer them.
    fresh = OpReader(a.group)
    state = await fresh.read()
    cleared_ids = {c.id for c in old.chunks}
    assert cleared_ids.isdisjoint(state.known_chunks()) and cleared_ids.isdisjoint(fresh.own_chunks)
    # The same content again is stored again (dedup must not point at the cleared chunks).
    (a.root / "again.bin").write_bytes(big)
    await a.sync.round()
    again = (await a.sync.read_ops()).files["again.bin"]
    assert {(c.feed, c.seq) for c in again.chunks}.isdisjoint({(c.feed, c.seq) for c in old.chunks})
    out = tmp_path / "check.bin"
    await folder_history.write_version(a.sync, again, out, None)
    assert out.read_bytes() == big
    # A second prune has nothing left to do.
    assert (await prune.prune(a.sync, 0)).cleared_entries == 0


async def test_another_member_prunes_its_replica_and_does_not_fetch_it_again(members):
    """B holds A's chunks as a replica; once A deleted the file, B's prune clears them there too,
    and B's replicator does not download them back from A (who still holds them)."""
    a, b = await members("a"), await members("b")
    connect(a, b)
    (a.root / "data.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert (b.root / "data.bin").exists()
    os.remove(a.root / "data.bin")
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert "data.bin" not in (await b.sync.read_ops()).files
    replica = b.store.feed(a.feed.key)
    result = await prune.prune(b.sync, 0)
    assert result.freed_bytes >= 2 * 1024 * 1024 and replica.cleared
    await a.group.append("one more entry")  # b schedules again: it takes that, not the cleared chunks
    await until(lambda: replica.has(a.feed.length - 1), what="b to take the new entry")
    assert all(not replica.have.intersection(lo, hi) for lo, hi in replica.cleared)
