"""The receiver's spool (cobox.folders.spool): another member's run of chunk entries is written
into a temp file as the reader opens them, and a download whose references are exactly that run
only renames it; anything else (a run cut short, other chunks, a changed reference) goes the
normal way, and nothing a run does is left behind."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from cobox.errors import FileChangedError
from cobox.folders import reader as reader_mod
from cobox.folders import spool as spool_mod
from cobox.folders.apply import finish_file
from cobox.folders.chunking import chunk_id
from cobox.folders.model import ChunkRef
from cobox.folders.plan import LocalFile
from cobox.folders.spool import Spool
from cobox.folders.sync import FolderSync
from storage import RangeSet
from tests.helpers import until

from ..hostile import (
    connect,
    digests,
    members_fixture,  # noqa: F401 - the fixture "members"
    sent,
)

MiB = 1024 * 1024


def spooled(root) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.name for p in root.iterdir() if p.name.startswith(".cobox-tmp-")]


async def test_a_large_new_file_is_written_as_its_chunks_arrive_and_only_renamed(members) -> None:
    a, b = await members("a"), await members("b")
    (a.root / "sub").mkdir()
    files = {"sub/big.bin": os.urandom(20 * MiB)}
    for path, data in files.items():
        (a.root / path).write_bytes(data)
    await a.sync.round()
    await b.sync.round()  # B's reader has read A's feed (empty here): what comes next is spooled
    connect(a, b)
    await b.caught_up(a, timeout=30)
    await b.sync.round()
    assert digests(b.root) == digests(a.root)
    assert b.sync.spool.claimed == 1
    assert spooled(b.root) == [] and b.sync.spool.status()["runs"] == 0



async def test_large_files_recorded_among_small_ones_each_arrive_as_a_run_of_their_own(members) -> None:
    a, b = await members("a"), await members("b")
    await b.sync.round()
    files = {"a.txt": os.urandom(3000), "b-big.bin": os.urandom(20 * MiB), "c.txt": os.urandom(5000),
             "d-big.bin": os.urandom(18 * MiB), "e.txt": os.urandom(100)}
    await sent(a, b, files)
    assert b.sync.spool.claimed == 2
    assert b.sync.spool.taken >= 1  # the small files, from their runs kept in memory
    assert spooled(b.root) == []


async def test_a_folder_started_again_does_not_spool_what_its_device_held(members) -> None:
    a, b = await members("a"), await members("b")
    (a.root / "big.bin").write_bytes(os.urandom(20 * MiB))
    await a.sync.round()
    connect(a, b)
    await b.caught_up(a, timeout=30)  # stored while B's folder was not running (a daemon stopped)
    fresh = FolderSync(b.group, b.root, backoff=0.01)  # the folder of a new process
    await fresh.start()
    try:
        await until(lambda: digests(b.root) == digests(a.root), timeout=30, what="B has A's file")
    finally:
        await fresh.stop()
    assert fresh.spool.claimed == 0 and spooled(b.root) == []


# -- the spool alone ---------------------------------------------------------------------------

FEED, OTHER = b"f" * 32, b"o" * 32


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "FILE_AFTER", 1000)
    monkeypatch.setattr(spool_mod, "REORDER_BYTES", 2000)


def chunks(n: int, size: int = 300) -> list[bytes]:
    return [os.urandom(size + k) for k in range(n)]


def refs(data: list[bytes], first: int, feed: bytes = FEED) -> list[ChunkRef]:
    return [ChunkRef(chunk_id(c), feed, first + k, len(c)) for k, c in enumerate(data)]


def fed(tmp_path, data: list[bytes], first: int = 5, order=None, room=lambda n: True) -> Spool:  # type: ignore[no-untyped-def]
    s = Spool(tmp_path, room)
    s.begin({FEED: first})
    for k in order if order is not None else range(len(data)):
        s.chunk(FEED, first + k, data[k])
    return s


def claimed_bytes(s: Spool, want: list[ChunkRef]) -> tuple[bytes, int]:
    got = s.claim(want)
    assert got is not None
    path, k = got
    return path.read_bytes(), k


def test_a_run_in_order_is_claimed_whole_and_leaves_nothing(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = fed(tmp_path, data)
    s.other(FEED, 15)  # the Put
    content, k = claimed_bytes(s, refs(data, 5))
    assert (content, k) == (b"".join(data), 10)
    assert s.status() == {"runs": 0, "bytes": 0, "claimed": 1, "taken": 0}
    assert len(spooled(tmp_path)) == 1  # the claimed file, the caller's now


def test_entries_stored_out_of_order_are_put_back_in_order(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = fed(tmp_path, data, order=[0, 1, 3, 2, 5, 4, 6, 9, 7, 8])
    assert claimed_bytes(s, refs(data, 5)) == (b"".join(data), 10)


def test_a_version_whose_last_chunks_are_not_spooled_yet_gets_the_first_ones(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = fed(tmp_path, data, order=range(6))
    content, k = claimed_bytes(s, refs(data, 5))
    assert (content, k) == (b"".join(data[:6]), 6)


@pytest.mark.parametrize("change", ["first-seq", "other-feed", "first-id", "middle-id", "middle-size"])
def test_references_that_are_not_the_run_claim_nothing_or_only_what_matches(tmp_path, small_bounds, change) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = fed(tmp_path, data)
    want = refs(data, 5)
    if change == "first-seq":
        want = refs(data, 6)
    elif change == "other-feed":
        want = refs(data, 5, OTHER)
    elif change == "first-id":
        want[0] = ChunkRef(b"x" * 32, FEED, 5, want[0].size)
    elif change == "middle-id":
        want[4] = ChunkRef(b"x" * 32, FEED, 9, want[4].size)
    else:
        want[4] = ChunkRef(want[4].id, FEED, 9, want[4].size + 1)
    if change.startswith("middle"):
        assert claimed_bytes(s, want) == (b"".join(data[:4]), 4)
    else:
        assert s.claim(want) is None
        assert s.status()["runs"] == 1  # still there for the right version


def test_a_small_run_stays_in_memory_and_its_versions_are_taken_from_anywhere_in_it(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    data = chunks(3)  # three small files of one chunk each, then their operations
    s = fed(tmp_path, data)
    assert spooled(tmp_path) == []
    s.other(FEED, 8)
    assert s.claim(refs(data, 5)) is None  # no file to rename: small versions are taken
    assert s.take(refs(data[1:2], 6)) == [data[1]]
    assert s.take(refs(data[1:2], 6)) is None  # taken already: a duplicate reference reads the store
    assert s.take(refs(data[2:], 7)) == [data[2]] and s.take(refs(data[:1], 5)) == [data[0]]
    assert s.status() == {"runs": 0, "bytes": 0, "claimed": 0, "taken": 3}  # all let go


@pytest.mark.parametrize("change", ["seq", "feed", "id", "size", "beyond"])
def test_a_version_is_taken_only_if_the_run_holds_all_of_it_one_for_one(tmp_path, small_bounds, change) -> None:  # type: ignore[no-untyped-def]
    data = chunks(3)
    s = fed(tmp_path, data)
    s.other(FEED, 8)
    want = refs(data[:2], 5)
    if change == "seq":
        want = refs(data[:2], 6)
    elif change == "feed":
        want = refs(data[:2], 5, OTHER)
    elif change == "id":
        want[1] = ChunkRef(b"x" * 32, FEED, 6, want[1].size)
    elif change == "size":
        want[1] = ChunkRef(want[1].id, FEED, 6, want[1].size + 1)
    else:
        want = [*refs(data, 5), ChunkRef(b"x" * 32, FEED, 8, 10)]
    assert s.take(want) is None
    assert s.take(refs(data, 5)) == data  # nothing was taken out by the refusal


def test_what_ended_runs_keep_in_memory_is_bounded_and_goes_with_the_round(tmp_path, small_bounds, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(spool_mod, "KEPT_BYTES", 1000)
    s = Spool(tmp_path, lambda n: True)
    first, second = chunks(2), chunks(2)  # ~600 bytes each: the second does not fit beside the first
    for k, c in enumerate(first):
        s.chunk(FEED, k, c)
    s.other(FEED, 2)
    for k, c in enumerate(second):
        s.chunk(OTHER, k, c)
    s.other(OTHER, 2)
    assert s.take(refs(second, 0, OTHER)) is None  # dropped at once: the first run is what rounds reach first
    upto = s.mark()
    s.sweep(upto)
    assert s.take(refs(first, 0)) is None and s.status()["runs"] == 0  # the round that merged it ended


def test_a_gap_that_does_not_fill_is_passed_over(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    data = chunks(20)
    s = fed(tmp_path, data, order=[0, 1, 2, 3, *range(5, 20)])  # entry 9 never comes
    # The run before the gap ended; after it, a new run started at the first entry that waited.
    assert claimed_bytes(s, refs(data[:4], 5)) == (b"".join(data[:4]), 4)
    assert claimed_bytes(s, refs(data[5:], 10)) == (b"".join(data[5:]), 15)


def test_an_ended_run_goes_at_the_end_of_the_round_and_a_gap_after_a_while(tmp_path, small_bounds, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = fed(tmp_path, data[:5])
    s.sweep()
    assert len(spooled(tmp_path)) == 1  # still going on
    s.other(FEED, 10)
    s.chunk(OTHER, 1, data[5])  # OTHER's entry 0 is missing: this one waits
    s.sweep()
    assert spooled(tmp_path) == [] and s.claim(refs(data[:5], 5)) is None
    assert s.status()["runs"] == 0  # OTHER's chunk still waits for entry 0
    monkeypatch.setattr(spool_mod, "WAIT", 0.0)
    s.sweep()
    assert s.status()["runs"] == 1  # passed over: OTHER's run started, in memory


def test_a_run_that_ends_after_the_rounds_read_is_kept_for_the_next_round(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    # Reading ahead (OpReader.prefetch) may take a large file's Put while a round acts, after
    # that round's read: the round cannot have claimed the run, so its sweep must leave it.
    data = chunks(10)
    s = fed(tmp_path, data)
    upto = s.mark()  # the round's read
    s.other(FEED, 15)  # the Put, read ahead while the round acts
    s.sweep(upto)  # that round ends
    assert len(spooled(tmp_path)) == 1
    upto = s.mark()  # the next round's read merges the Put
    content, k = claimed_bytes(s, refs(data, 5))
    assert (content, k) == (b"".join(data), 10)
    s.sweep(upto)
    (tmp_path / "x").mkdir()
    other = fed(tmp_path / "x", data)
    other.other(FEED, 15)
    other.sweep(other.mark())  # ended before the read: its round had the chance
    assert other.status()["runs"] == 0


def test_no_room_on_the_disk_means_no_spooling(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = fed(tmp_path, data, room=lambda n: False)
    assert spooled(tmp_path) == [] and s.claim(refs(data, 5)) is None


def test_a_failed_write_drops_the_run(tmp_path, small_bounds, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = fed(tmp_path, data[:4])
    assert len(spooled(tmp_path)) == 1

    def full(fd: int, views: list[memoryview]) -> int:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(spool_mod.os, "writev", full)
    s.chunk(FEED, 9, data[4])
    assert spooled(tmp_path) == [] and s.status()["runs"] == 0


def test_runs_are_bounded_and_close_removes_them(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    s = Spool(tmp_path, lambda n: True)
    feeds = [bytes([k]) * 32 for k in range(spool_mod.MAX_RUNS + 2)]
    for f in feeds:
        for seq, c in enumerate(chunks(5)):
            s.chunk(f, seq, c)
    assert s.status()["runs"] == spool_mod.MAX_RUNS == len(spooled(tmp_path))
    s.close()
    assert s.status()["runs"] == 0 and spooled(tmp_path) == []


def test_what_a_feed_held_at_start_is_not_spooled_and_a_send_only_folder_spools_nothing(tmp_path, small_bounds) -> None:  # type: ignore[no-untyped-def]
    data = chunks(10)
    s = Spool(tmp_path, lambda n: True)
    s.begin({FEED: 8})
    for k, c in enumerate(data):
        s.chunk(FEED, 5 + k, c)
    assert s.claim(refs(data, 5)) is None
    assert claimed_bytes(s, refs(data[3:], 8)) == (b"".join(data[3:]), 7)
    off = Spool(tmp_path / "x", lambda n: True, enabled=lambda: False)
    for k, c in enumerate(data):
        off.chunk(FEED, k, c)
    assert off.status()["runs"] == 0


def test_finish_file_appends_the_rest_and_checks_like_any_download(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "d").mkdir()
    tmp = tmp_path / ".cobox-tmp-spool-1"
    tmp.write_bytes(b"head")
    out = finish_file(tmp_path, "d/f.bin", tmp, [b"-", b"tail"], size=9, mode=0o644, mtime=10**18, expect=None)
    assert (tmp_path / "d/f.bin").read_bytes() == b"head-tail" and not tmp.exists()
    assert out.size == 9 and out.mtime == 10**18
    tmp.write_bytes(b"head")  # short: refused, the temp file removed, the target untouched
    with pytest.raises(ValueError):
        finish_file(tmp_path, "d/f.bin", tmp, [], size=9, mode=0o644, mtime=1, expect=out)
    assert not tmp.exists() and (tmp_path / "d/f.bin").read_bytes() == b"head-tail"
    tmp.write_bytes(b"other-txt")  # the target changed since the plan: refused too
    with pytest.raises(FileChangedError):
        finish_file(tmp_path, "d/f.bin", tmp, [], size=9, mode=0o644, mtime=1, expect=LocalFile(1, 1, 0o644))
    assert not tmp.exists() and (tmp_path / "d/f.bin").read_bytes() == b"head-tail"


def test_the_reader_waits_a_moment_for_a_hole_where_a_spooled_run_goes_on(tmp_path, small_bounds, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    r = reader_mod.OpReader(None)  # type: ignore[arg-type]
    woken: list[float] = []
    r.on_hold = woken.append
    feed = SimpleNamespace(key=FEED, writable=False)
    done = RangeSet([(0, 5)])
    assert not r._hold(feed, done, 5, 7)  # no spool: read on
    r.spool = fed(tmp_path, chunks(10)[:4], first=1)  # a run with its file, going on at 5
    assert r.spool.wants(FEED, 5)
    assert not r._hold(feed, done, 7, 7)  # no hole
    assert not r._hold(feed, done, 4, 7)  # 4 was read: the run is not waiting there
    assert not r._hold(SimpleNamespace(key=OTHER, writable=False), done, 5, 7)  # no run of that feed
    now = [1000.0]
    monkeypatch.setattr(reader_mod.time, "monotonic", lambda: now[0])
    assert r._hold(feed, done, 5, 7) and woken == [reader_mod.HOLD]  # 5 and 6 missing: wait, and be woken
    now[0] += reader_mod.HOLD / 2
    assert r._hold(feed, done, 5, 7) and woken == [reader_mod.HOLD]
    now[0] += reader_mod.HOLD
    assert not r._hold(feed, done, 5, 7)  # it may never fill: read past it
    r.spool.other(FEED, 5)  # the run ended: nothing to wait for
    assert not r.spool.wants(FEED, 5)


def test_what_runs_hold_in_memory_together_is_bounded(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(spool_mod, "FILE_AFTER", 10_000)
    monkeypatch.setattr(spool_mod, "HELD_BYTES", 2_000)
    s = Spool(tmp_path, lambda n: True)
    for seq, c in enumerate(chunks(3)):  # ~900 bytes: below both bounds, in memory
        s.chunk(FEED, seq, c)
    assert spooled(tmp_path) == []
    for seq, c in enumerate(chunks(4)):  # together above HELD_BYTES: the run growing gets its file
        s.chunk(OTHER, seq, c)
    assert len(spooled(tmp_path)) == 1 and s.wants(OTHER, 4) and not s.wants(FEED, 3)


def test_a_large_run_still_in_memory_is_waited_for_at_a_hole(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replication stores a large file's entries a little out of order from its first megabytes
    on. The reader waited only where a run with a file went on, so the first hole (more than
    ``REORDER_BYTES`` behind it) ended the run still in memory, and the file was written again
    from the store after its operation came (256 MiB: a second of the round, measured). A run in
    memory of ``HOLD_AFTER`` bytes is waited for too; a small one (small files) is not."""
    monkeypatch.setattr(spool_mod, "HOLD_AFTER", 2000)
    monkeypatch.setattr(spool_mod, "FILE_AFTER", 3000)
    r = reader_mod.OpReader(None)  # type: ignore[arg-type]
    r.on_hold = lambda _delay: None
    feed = SimpleNamespace(key=FEED, writable=False)
    data = chunks(8)  # about 2,400 bytes: above HOLD_AFTER, below FILE_AFTER
    r.spool = fed(tmp_path, data[:4], first=1)
    done = RangeSet([(0, 5)])
    assert not r.spool.wants(FEED, 5) and not r._hold(feed, done, 5, 7)  # small: read on
    r.spool = fed(tmp_path, data, first=1)
    done = RangeSet([(0, 9)])
    assert spooled(tmp_path) == []  # still in memory
    assert r.spool.wants(FEED, 9) and r._hold(feed, done, 9, 11)  # large: the hole is waited for
    # What the hold spares: the entries after the hole reach the spool only once it filled,
    # so the run goes on whole (into its file now) and a download claims all of it.
    more = chunks(3)
    for k, c in enumerate(more):
        r.spool.chunk(FEED, 9 + k, c)
    assert claimed_bytes(r.spool, refs(data + more, 1)) == (b"".join(data + more), 11)
