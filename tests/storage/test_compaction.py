"""Compacting the blob file where holes cannot be punched (storage/compaction.py): the space
comes back at the next open, every kept entry reads back and proves, and a crash or a full disk
at any step of a compaction loses nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from storage import Store, blobs, compaction, verify_range
from storage.errors import EntryMissingError

BIG = 256 * 1024  # a blob-file entry


@pytest.fixture
def no_punch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that cannot punch holes; compaction worth it from the first byte."""
    monkeypatch.setattr(blobs, "_FALLOCATE", None)
    monkeypatch.setattr(compaction, "COMPACT_MIN_BYTES", 0)


async def _fill(path: Path) -> dict[bytes, list[bytes | None]]:
    """Two feeds of large and small entries, most large ones cleared; what each feed should hold
    (None: cleared)."""
    held: dict[bytes, list[bytes | None]] = {}
    async with await Store.open(path) as store:
        for n in (24, 8):
            feed = await store.create_feed()
            data = [os.urandom(BIG if k % 3 else 100) + k.to_bytes(2, "big") for k in range(n)]
            await feed.append(data)
            await feed.clear(0, n - 4)
            held[feed.key] = [None] * (n - 4) + data[n - 4:]
        assert (await store.disk_use()).unreclaimed > 12 * BIG  # nothing punched
    return held


async def _check(store: Store, held: dict[bytes, list[bytes | None]]) -> None:
    for key, data in held.items():
        feed = store.feed(key)
        for k, expect in enumerate(data):
            if expect is None:
                with pytest.raises(EntryMissingError):
                    await feed.get(k)
                continue
            assert await feed.get(k) == expect
            verify_range(feed.key, k, [expect], await feed.proof(k))


def _blob_path(path: Path) -> Path:
    return path / "cobox.blobs"


async def test_an_open_compacts_the_blob_file_when_holes_cannot_be_punched(tmp_path: Path, no_punch: None) -> None:
    path = tmp_path / "s"
    held = await _fill(path)
    before = os.stat(_blob_path(path)).st_size
    async with await Store.open(path) as store:
        use = await store.disk_use()
        assert use.unreclaimed == 0
        live = sum(len(e) for data in held.values() for e in data if e is not None and len(e) >= blobs.BLOB_THRESHOLD)
        assert os.stat(_blob_path(path)).st_size == live < before
        await _check(store, held)
        # Appends after a compaction go to the end of the new file and survive a reopen.
        feed = store.feed(next(iter(held)))
        more = [os.urandom(BIG), os.urandom(50)]
        await feed.append(more)
        held[feed.key] += more
    async with await Store.open(path) as store:
        await _check(store, held)
        assert not await store.read("SELECT 1 FROM meta WHERE key = 'blob_pending'")
    assert not compaction.new_path(_blob_path(path)).exists()


async def test_little_to_reclaim_is_left_for_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs, "_FALLOCATE", None)  # COMPACT_MIN_BYTES stays 32 MiB
    path = tmp_path / "s"
    held = await _fill(path)
    size = os.stat(_blob_path(path)).st_size
    async with await Store.open(path) as store:
        assert (await store.disk_use()).unreclaimed > 0
        assert os.stat(_blob_path(path)).st_size == size
        await _check(store, held)


async def test_a_compaction_that_never_committed_leaves_the_store_as_it_was(
    tmp_path: Path, no_punch: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed after the copy, before its transaction: the rows still point into the old file;
    the next open deletes the copy and compacts again."""
    path = tmp_path / "s"
    held = await _fill(path)

    async def crash(self: object, moves: object, end: int) -> None:
        raise KeyboardInterrupt  # as good as a kill: nothing after this line runs

    monkeypatch.setattr("storage.rows.Rows.move_blobs", crash)
    with pytest.raises(KeyboardInterrupt):
        await Store.open(path)
    assert compaction.new_path(_blob_path(path)).exists()  # the debris of the copy
    monkeypatch.undo()
    monkeypatch.setattr(blobs, "_FALLOCATE", None)
    monkeypatch.setattr(compaction, "COMPACT_MIN_BYTES", 0)
    async with await Store.open(path) as store:
        await _check(store, held)
        assert (await store.disk_use()).unreclaimed == 0
    assert not compaction.new_path(_blob_path(path)).exists()


@pytest.mark.parametrize("failing", ["checkpoint", "rename"])
async def test_a_committed_compaction_whose_rename_waits_is_read_from_the_new_file_then_finished(
    tmp_path: Path, no_punch: None, monkeypatch: pytest.MonkeyPatch, failing: str,
) -> None:
    """The transaction committed but the checkpoint (durability) or the rename did not happen:
    the store reads the new file where it is, a read-only open does too, and the next open
    renames it."""
    path = tmp_path / "s"
    held = await _fill(path)
    if failing == "checkpoint":
        async def no_checkpoint(self: object, mode: str = "PASSIVE") -> bool:
            return False

        monkeypatch.setattr("storage.db.Writer.checkpoint", no_checkpoint)
    else:
        def no_rename(src: object, dst: object) -> None:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(compaction.os, "replace", no_rename)
    async with await Store.open(path) as store:
        await _check(store, held)
    monkeypatch.undo()
    monkeypatch.setattr(blobs, "_FALLOCATE", None)
    assert compaction.new_path(_blob_path(path)).exists()
    async with await Store.open(path, readonly=True) as store:
        await _check(store, held)
    async with await Store.open(path) as store:
        await _check(store, held)
        assert not await store.read("SELECT 1 FROM meta WHERE key = 'blob_pending'")
    assert not compaction.new_path(_blob_path(path)).exists()


async def test_a_full_disk_during_the_copy_ends_the_attempt_and_loses_nothing(
    tmp_path: Path, no_punch: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "s"
    held = await _fill(path)

    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compaction.os, "pwrite", full)
    async with await Store.open(path) as store:
        await _check(store, held)
        assert (await store.disk_use()).unreclaimed > 12 * BIG
    assert "could not compact" in caplog.text and "no space left" in caplog.text.lower()
    assert not compaction.new_path(_blob_path(path)).exists()
