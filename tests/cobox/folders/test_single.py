"""One copy on members (issue 16 item 2, cobox.folders.single): a member's chunk entries whose
content sits in its files are released from the store and rebuilt from the files for peers,
who verify them against the writer's signed tree; a file changed locally makes its entries
missing here (NoData, cleared, out of have), never wrong; the reader at restart rebuilds
nothing; prune and history handle released entries."""

from __future__ import annotations

import os

from cobox.folders import history as folder_history
from cobox.folders import prune, single
from cobox.folders.reader import OpReader
from storage.errors import EntryMissingError
from tests.helpers import until

from ..hostile import (
    connect,
    digests,
    members_fixture,  # noqa: F401 - the fixture "members"
)

MiB = 1024 * 1024


def rebuilds(m) -> int:  # type: ignore[no-untyped-def]
    """Rebuild requests answered by the member's folder rebuilders."""
    return sum(r.calls for g in m.group.chain() if isinstance(r := m.store._rebuilders.get(g.namespace),
                                                             single.FolderRebuilder))


async def recorded(m, files: dict[str, bytes]):  # type: ignore[no-untyped-def]
    for path, data in files.items():
        (m.root / path).parent.mkdir(parents=True, exist_ok=True)
        (m.root / path).write_bytes(data)
    await m.sync.round()
    await single.build(m.sync)


async def released_by_b(members, files: dict[str, bytes]):  # type: ignore[no-untyped-def]
    """A records ``files``; B, connected, takes them, applies them and releases its replica of
    A's chunk entries (held in B's files now). Returns A, B and that replica."""
    a, b = await members("a"), await members("b")
    connect(a, b)
    await recorded(a, files)
    await b.caught_up(a)
    await b.sync.round()
    await single.build(b.sync)
    await single.release_pass(b.sync)
    return a, b, b.store.feed(a.feed.key)


async def test_released_entries_are_served_rebuilt_and_a_new_member_gets_every_file(members) -> None:
    a = await members("a")
    files = {"big.bin": os.urandom(6 * MiB), "sub/mid.bin": os.urandom(MiB + 12345),
             **{f"small/{k}.txt": os.urandom(1000 + k) for k in range(20)}}
    folder = sum(map(len, files.values()))
    await recorded(a, files)
    stored_before = a.group.stored_bytes()
    assert stored_before >= folder
    freed, more = await single.release_pass(a.sync)
    assert not more and freed >= 0.9 * folder
    assert a.group.stored_bytes() < 0.1 * folder, (a.group.stored_bytes(), folder)
    assert a.feed.outside_bytes >= 0.9 * folder and list(a.feed.have) == [(0, a.feed.length)]
    assert (await a.store.disk_use()).blobs < 0.1 * folder
    assert prune.disk_use(a.sync, 30)["outside_bytes"] == a.feed.outside_bytes
    # A new member joins and takes everything from A: rebuilt entries, verified by B's replicator
    # against A's signed tree, then opened and checked against their chunk ids by B's folder.
    b = await members("b")
    connect(a, b)
    await b.caught_up(a, timeout=30)
    await b.sync.round()
    assert digests(b.root) == digests(a.root)
    assert rebuilds(a) > 0
    assert b.group.refusals.as_json() == {}  # nothing B took from A was refused
    # B holds A's chunks in its files too: it releases its replica, and a third member that
    # only talks to B gets every file from B's rebuilt entries.
    await single.build(b.sync)
    await single.release_pass(b.sync)
    replica = b.store.feed(a.feed.key)
    assert replica.outside_bytes >= 0.9 * folder and b.group.stored_bytes() < 0.1 * folder
    c = await members("c")
    connect(b, c)
    await c.caught_up(a, timeout=30)
    await c.sync.round()
    assert digests(c.root) == digests(a.root)


async def test_a_file_changed_after_release_makes_its_entries_missing_not_wrong(members) -> None:
    a = await members("a")
    data = os.urandom(3 * MiB)
    await recorded(a, {"data.bin": data, "other.bin": os.urandom(MiB)})
    await single.release_pass(a.sync)
    version = a.sync.state.files["data.bin"]
    changed = {version.chunks[1].seq}  # the edit below falls inside the second chunk
    offset = version.chunks[0].size
    # Changed on disk after the release, before any scan saw it (same size: only the bytes).
    with open(a.root / "data.bin", "r+b") as f:
        f.seek(offset + 10)
        f.write(b"changed locally" * 10)
    b = await members("b")
    connect(a, b)
    await until(lambda: all(s in a.feed.cleared for s in changed), timeout=30,
                what="a to find the changed chunks missing")
    assert not any(s in a.feed.have for s in changed)
    replica = b.store.feed(a.feed.key)
    await until(lambda: replica.contiguous_length >= min(changed), timeout=30, what="b to take the rest")
    # B never got those entries: A answered NoData, nothing wrong was stored or refused.
    assert not any(s in replica.have for s in changed)
    assert not replica.forked
    # A's next round sees the edit and records it; B then gets the new content.
    await a.sync.round()
    await until(lambda: all(replica.have.contains_range(lo, hi) for lo, hi in a.feed.have), timeout=30,
                what="b to hold everything a holds")
    await b.sync.round()
    assert (b.root / "data.bin").read_bytes() == (a.root / "data.bin").read_bytes()
    assert (b.root / "other.bin").read_bytes() == (a.root / "other.bin").read_bytes()


async def test_the_reader_at_restart_rebuilds_nothing(members) -> None:
    a = await members("a")
    await recorded(a, {"one.bin": os.urandom(2 * MiB), "two.bin": os.urandom(300_000)})
    await single.release_pass(a.sync)
    assert a.feed.outside
    before = rebuilds(a)
    fresh = OpReader(a.group)  # what a restart builds
    state = await fresh.read()
    assert rebuilds(a) == before
    assert set(state.files) == {"one.bin", "two.bin"}
    for lo, hi in a.feed.outside:  # released chunk entries still count as chunk entries (prune)
        assert fresh.chunk_entries[a.feed.key].contains_range(lo, hi)


async def test_prune_clears_released_entries_and_history_sees_them(members, tmp_path) -> None:
    a = await members("a")
    big = os.urandom(4 * MiB)
    await recorded(a, {"big.bin": big, "keep.txt": b"kept"})
    await single.release_pass(a.sync)
    # While the file holds them, the released version is available (it can be restored).
    docs = prune.mark_history(a.sync, "big.bin", await folder_history.history(a.sync, "big.bin"))
    assert [d["available"] for d in docs] == [True]
    out = tmp_path / "restored.bin"
    await folder_history.write_version(a.sync, a.sync.state.files["big.bin"], out, None)
    assert out.read_bytes() == big
    os.remove(a.root / "big.bin")
    await a.sync.round()
    single.index_of(a.sync).refresh()
    docs = prune.mark_history(a.sync, "big.bin", await folder_history.history(a.sync, "big.bin"))
    assert [d["available"] for d in docs if not d["deleted"]] == [False]  # its file is gone
    outside = a.feed.outside_bytes
    assert outside >= 4 * MiB
    result = await prune.prune(a.sync, 0)
    assert result.expired == 1 and result.cleared_entries > 0
    assert a.feed.outside_bytes <= outside - 4 * MiB
    assert not any(a.feed.outside.intersection(lo, hi) for lo, hi in a.feed.cleared)


async def test_the_service_releases_once_the_folder_is_quiet(members) -> None:
    """``single:NAME`` (single.run): no call from the test; the store shrinks by itself after the
    folder's round, and a later file is released too."""
    import asyncio

    a = await members("a")
    (a.root / "one.bin").write_bytes(os.urandom(2 * MiB))
    task = asyncio.ensure_future(single.run(a.sync, True, quiet=0.2))
    try:
        await a.sync.round()
        await until(lambda: task.done() or a.feed.outside_bytes >= 2 * MiB, timeout=30, what="the first release")
        if task.done():
            task.result()
        (a.root / "two.bin").write_bytes(os.urandom(MiB))
        await a.sync.round()
        await until(lambda: a.feed.outside_bytes >= 3 * MiB, timeout=30, what="the second release")
        assert a.group.stored_bytes() < 0.1 * 3 * MiB
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_service_waits_while_peers_are_taking_entries_from_here(members, monkeypatch) -> None:
    """A release pass reads and seals every chunk again: not while a peer is still fetching
    (the served counter moves), but once it has stopped for the quiet time."""
    import asyncio

    monkeypatch.setattr(single, "POLL", 0.02)
    a = await members("a")
    (a.root / "one.bin").write_bytes(os.urandom(2 * MiB))
    served = [0]

    def serving() -> int:
        served[0] += 1 if fetching else 0  # a peer fetching: bytes go out between two looks
        return served[0]

    fetching = True
    task = asyncio.ensure_future(single.run(a.sync, True, quiet=0.2, served=serving))
    try:
        await a.sync.round()
        await until(lambda: served[0] > 100, timeout=30, what="the service to look many times")
        assert a.feed.outside_bytes == 0 and not task.done()  # 2 s of looks, each one serving: nothing released
        fetching = False
        await until(lambda: task.done() or a.feed.outside_bytes >= 2 * MiB, timeout=30, what="the release")
        if task.done():
            task.result()
        # In a group whose peers never stop fetching, a pass still runs after MAX_DEFER.
        monkeypatch.setattr(single, "MAX_DEFER", 0.5)
        fetching = True
        (a.root / "two.bin").write_bytes(os.urandom(MiB))
        await a.sync.round()
        await until(lambda: task.done() or a.feed.outside_bytes >= 3 * MiB, timeout=30, what="the deferred release")
        if task.done():
            task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_single_copy_off_releases_nothing_but_serves_what_was_released(members) -> None:
    import asyncio

    a = await members("a")
    await recorded(a, {"one.bin": os.urandom(MiB)})
    await single.release_pass(a.sync)
    released = a.feed.outside_bytes
    (a.root / "two.bin").write_bytes(os.urandom(MiB))
    await a.sync.round()
    task = asyncio.ensure_future(single.run(a.sync, False, quiet=0.0))
    try:
        await until(lambda: task.done() or single.index_of(a.sync).ready.is_set(), timeout=10, what="the index")
        assert a.feed.outside_bytes == released
        out = await a.feed.get_range(0, a.feed.length)  # what was released is still served, rebuilt
        assert len(out) == a.feed.length
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_disk_use_in_words_shows_what_the_files_hold() -> None:
    from cobox.commands_show import disk_text

    text = disk_text({"folder_bytes": 30 * MiB, "stored_bytes": MiB, "outside_bytes": 29 * MiB,
                      "history_bytes": 0, "reclaimable_bytes": 0})
    assert text.startswith("folder 30 MiB, stored 1.0 MiB, 29 MiB more in your files (history")
    assert "in your files" not in disk_text({"folder_bytes": 1, "stored_bytes": 1, "history_bytes": 0,
                                             "reclaimable_bytes": 0})


async def test_a_remote_change_keeps_the_replaced_version_in_history(members, tmp_path) -> None:
    """B released A's chunks (its file holds them); A edits the file and removes another; before
    B overwrites and removes its files, it stores again what only they held, so B can still
    restore the old versions (its history), and the new version's chunks stay released."""
    old = os.urandom(3 * MiB)
    gone = os.urandom(MiB)
    a, b, replica = await released_by_b(members, {"data.bin": old, "gone.bin": gone})
    assert replica.outside_bytes >= 4 * MiB
    v_old, v_gone = b.sync.state.files["data.bin"], b.sync.state.files["gone.bin"]
    new = bytearray(old)
    new[MiB:MiB + 100] = os.urandom(100)  # one chunk changes
    (a.root / "data.bin").write_bytes(bytes(new))
    os.remove(a.root / "gone.bin")
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert (b.root / "data.bin").read_bytes() == bytes(new) and not (b.root / "gone.bin").exists()
    for v, content in ((v_old, old), (v_gone, gone)):
        assert prune.available(b.sync, v)
        out = tmp_path / f"restored-{v.path}"
        await folder_history.write_version(b.sync, v, out, None)
        assert out.read_bytes() == content
    # Only what the old versions alone held was stored again: the shared chunks stay in the file.
    assert replica.outside_bytes >= 2 * MiB and not replica.cleared


async def test_a_member_fetches_back_a_replica_entry_its_file_no_longer_holds(members) -> None:
    """B released A's chunks; B's file changes locally; the entry B can no longer rebuild is
    fetched back from A (it is history B keeps), not left missing for good."""
    a, b, replica = await released_by_b(members, {"data.bin": os.urandom(2 * MiB)})
    ref = b.sync.state.files["data.bin"].chunks[0]
    assert ref.seq in replica.outside
    with open(b.root / "data.bin", "r+b") as f:
        f.write(b"edited on b")
    try:
        await replica.get(ref.seq)
    except EntryMissingError:
        pass
    else:
        raise AssertionError("an entry its file no longer holds was rebuilt")
    await until(lambda: ref.seq in replica.have and ref.seq not in replica.outside, timeout=30,
                what="b to fetch the entry back from a")
    assert not replica.cleared
    assert await replica.get(ref.seq) == await a.feed.get(ref.seq)


async def test_unbinding_the_folder_stores_its_entries_again(members) -> None:
    """The group's data must not depend on files this device stops watching."""
    a = await members("a")
    data = os.urandom(2 * MiB)
    await recorded(a, {"data.bin": data})
    await single.release_pass(a.sync)
    assert a.feed.outside_bytes >= 2 * MiB
    await a.sync.stop()
    restored = await single.forget(a.group)
    assert restored >= 2 * MiB and not a.feed.outside and not a.feed.cleared
    os.remove(a.root / "data.bin")  # the files may go now: the store holds everything again
    entries = await a.feed.get_range(0, a.feed.length)
    assert len(entries) == a.feed.length and a.group.stored_bytes() >= 2 * MiB


# -- what the review found: a hostile claim at one place, a busy folder, a repeated chunk ------

def test_a_place_claiming_another_chunk_at_the_same_entry_is_passed_over(tmp_path) -> None:
    """A hostile member's op may name entry (feed, 5) as a chunk it is not; a local file then
    indexes that entry with another chunk's bytes. The rebuild knows the entry's leaf and takes
    only the place whose sealed entry has it: the right chunk, whatever the order."""
    from cobox.entries import encode_chunk
    from cobox.entries_seal import seal
    from cobox.folders.chunking import chunk_id
    from storage.tree import leaf_hash

    key, feed = os.urandom(32), os.urandom(32)
    right, wrong = os.urandom(5000), os.urandom(5000)
    (tmp_path / "right.bin").write_bytes(right)
    (tmp_path / "wrong.bin").write_bytes(wrong)
    entry = seal(key, feed, 5, encode_chunk(right))
    places = [single.Place("wrong.bin", 0, len(wrong), chunk_id(wrong)),
              single.Place("right.bin", 0, len(right), chunk_id(right))]
    out = single._rebuild(str(tmp_path), key, feed, [5], [places], [leaf_hash(entry)])
    assert out == [entry]
    # Only the wrong place left: nothing (missing), never the wrong bytes.
    assert single._rebuild(str(tmp_path), key, feed, [5], [places[:1]], [leaf_hash(entry)]) == [None]


class _Sync:
    """What the index reads of a folder: its Synced records and merged state."""

    def __init__(self, root, state, synced) -> None:  # type: ignore[no-untyped-def]
        self.root, self.state, self._synced, self.marks = root, state, synced, 0
        import asyncio

        self.settled = asyncio.Event()
        self.settled.set()


def _state_with(paths: dict[str, int], ref):  # type: ignore[no-untyped-def]
    """A merged state where each path's version repeats the chunk ``ref`` ``n`` times."""
    from cobox.folders.merge import FolderState
    from cobox.folders.model import Put, Stamp
    from cobox.folders.plan import Synced

    ops = [Put(path, n * ref.size, 0o644, 1, (ref,) * n, k + 1, b"d" * 32, None)
           for k, (path, n) in enumerate(paths.items())]
    state = FolderState.merge(ops)
    synced = {}
    for op in ops:
        v = state.versions[op.path][op.stamp]
        synced[op.path] = Synced(Stamp(op.clock, op.author), op.size, op.mtime, v.content)
    return state, synced


def test_a_file_repeating_one_chunk_is_dropped_from_the_index_in_one_step(tmp_path) -> None:
    """Zeros or a sparse image repeat one chunk thousands of times under one entry: dropping
    such a file must not search a list once per place (quadratic, the loop blocked for tens of
    seconds at 20,000 places). 100,000 places each; the test's timeout bounds it."""
    from cobox.folders.model import ChunkRef

    ref = ChunkRef(os.urandom(32), os.urandom(32), 7, 16 * 1024)
    state, synced = _state_with({"a.img": 100_000, "b.img": 100_000}, ref)
    sync = _Sync(tmp_path, state, synced)
    index = single.ChunkIndex(sync)  # type: ignore[arg-type]
    index.refresh()
    assert len(index.places(ref.feed, ref.seq)) == 200_000
    assert index.only_in(["a.img"]) == set() and index.only_in(["a.img", "b.img"]) == {(ref.feed, ref.seq)}
    del sync._synced["a.img"]
    sync.marks += 1
    index.refresh()
    at = index.places(ref.feed, ref.seq)
    assert len(at) == 100_000 and {p.path for p in at} == {"b.img"}
    assert index.only_in(["b.img"]) == {(ref.feed, ref.seq)}


async def test_a_miss_while_the_folder_moves_files_is_answered_later_not_lost(tmp_path) -> None:
    """While a round moves or replaces files the index lags behind them: a rebuild that misses
    then raises RebuildUnavailableError (the entry stays held), and once the round is done the
    same miss is a real one (None: lost)."""
    import pytest

    from cobox.folders.model import ChunkRef
    from storage.errors import RebuildUnavailableError

    ref = ChunkRef(os.urandom(32), os.urandom(32), 3, 4096)
    state, synced = _state_with({"moved.bin": 1}, ref)  # indexed at a path that no longer holds it
    sync = _Sync(tmp_path, state, synced)
    index = single.ChunkIndex(sync)  # type: ignore[arg-type]
    index.refresh()
    index.ready.set()
    rebuilder = single.FolderRebuilder(index, os.urandom(32))
    sync.settled.clear()  # a round is applying its actions
    with pytest.raises(RebuildUnavailableError):
        await rebuilder.rebuild(ref.feed, [ref.seq], [None])
    sync.settled.set()
    assert await rebuilder.rebuild(ref.feed, [ref.seq], [None]) == [None]


async def test_an_edited_file_is_written_from_the_unchanged_chunks_of_the_local_file(members) -> None:
    """A remote edit of a large file: the chunks the new version shares with the old one are read
    from the local file (checked against their ids), not rebuilt from it and opened again."""
    a, b = await members("a"), await members("b")
    data = bytearray(os.urandom(6 * MiB))
    await recorded(a, {"big.bin": bytes(data)})
    connect(a, b)
    await b.caught_up(a, timeout=30)
    await b.sync.round()
    await single.build(b.sync)
    await single.release_pass(b.sync)  # B's replica is held in B's file now
    assert b.store.feed(a.feed.key).outside
    before = rebuilds(b)
    data[3 * MiB:3 * MiB + 1000] = os.urandom(1000)
    (a.root / "big.bin").write_bytes(bytes(data))
    await a.sync.round()
    await b.caught_up(a, timeout=30)
    await b.sync.round()
    assert (b.root / "big.bin").read_bytes() == bytes(data)
    # One rebuild: keep_history storing again the replaced chunks (the old version's history).
    # The shared chunks came from the file; read from the store they were 4 more rebuilds here.
    assert rebuilds(b) - before <= 1


def test_a_local_chunk_that_changed_on_disk_is_not_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cobox.folders.chunking import chunk_id
    from cobox.folders.fetch import local_chunk
    from cobox.folders.model import ChunkRef

    (tmp_path / "f").write_bytes(b"0123456789")
    ref = ChunkRef(chunk_id(b"3456"), b"k" * 32, 7, 4)
    place = single.Place("f", 3, 4, ref.id)
    assert local_chunk(tmp_path, ref, [place]) == b"3456"
    (tmp_path / "f").write_bytes(b"012xxx6789")
    assert local_chunk(tmp_path, ref, [place]) is None
    assert local_chunk(tmp_path, ref, [single.Place("gone", 0, 4, ref.id)]) is None


async def test_two_small_batches_replacing_files_that_share_a_released_chunk_keep_it(members, monkeypatch) -> None:
    """Small downloads run two batches at once (smallbatch.SMALL_IN_FLIGHT). Files X and Y hold the
    same released chunk; both are replaced by a remote change, X in one batch and Y in the
    other. Each batch's keep_history saw the other file still holding the chunk (the index
    learns of a replacement only when its batch marks it), so neither stored it again and the
    old version's chunk was gone with both files. Each batch now counts the other's paths."""
    from cobox.folders import smallbatch

    monkeypatch.setattr(smallbatch, "SMALL_BATCH", 1)
    same = os.urandom(200_000)
    a, b, replica = await released_by_b(members, {"x.bin": same, "y.bin": same})
    shared = {(c.feed, c.seq) for c in b.sync.state.files["x.bin"].chunks}
    assert shared == {(c.feed, c.seq) for c in b.sync.state.files["y.bin"].chunks}
    assert all(s in replica.outside for _, s in shared)
    (a.root / "x.bin").write_bytes(os.urandom(150_000))
    (a.root / "y.bin").write_bytes(os.urandom(150_000))
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert (b.root / "x.bin").read_bytes() == (a.root / "x.bin").read_bytes()
    assert (b.root / "y.bin").read_bytes() == (a.root / "y.bin").read_bytes()
    # The old version is history here: its chunk is stored again, not lost with both files.
    assert all(s in replica.have and s not in replica.outside for _, s in shared), shared
    assert not replica.cleared

