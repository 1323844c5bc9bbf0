"""Streaming writes leave few pages behind (cobox.folders.writeback): the flusher starts the
writeback of each range, waits for the one before and drops it; downloads and the spool use it,
and what they write is unchanged."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from cobox.folders import apply, spool, writeback
from cobox.folders.apply import FileWrite, finish_file, write_file, write_files

KiB = 1024


@pytest.mark.skipif(writeback._SYNC_FILE_RANGE is None, reason="sync_file_range is Linux's")
def test_the_flusher_drops_each_range_once_the_next_one_is_written(tmp_path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        f = writeback.Flusher(fd, every=64 * KiB)
        block = os.urandom(16 * KiB)
        written = 0
        seen = []
        for _ in range(20):  # 320 KiB: five ranges
            written += os.write(fd, block)
            f.wrote(written)
            seen.append(f.dropped)
        # Nothing is dropped before two ranges are written; then one range per range, the
        # last one always kept (its writeback may still run).
        assert seen[:7] == [0] * 7
        assert f.dropped == 4 * 64 * KiB
        assert f.head == 320 * KiB
        assert os.pread(fd, 320 * KiB, 0) == block * 20  # what was written stays
    finally:
        os.close(fd)


def test_a_flusher_written_backwards_or_by_little_does_nothing(tmp_path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        f = writeback.Flusher(fd, start=1000, every=64 * KiB)
        f.wrote(1000 + 64 * KiB - 1)
        assert (f.head, f.dropped) == (1000, 0)
    finally:
        os.close(fd)


def failing(err: int):  # type: ignore[no-untyped-def]
    """A sync_file_range that fails with ``err`` once writeback is waited for."""
    def fn(fd: int, offset: int, nbytes: int, flags: int) -> int:
        if flags == writeback._WRITE:
            return 0
        ctypes.set_errno(err)
        return -1
    return fn


def test_a_failed_writeback_is_raised_and_the_download_installs_nothing(tmp_path, monkeypatch) -> None:
    """Waiting for writeback consumes the error for the open file (its fsync would then return
    0): the flusher raises it, and write_file removes its temp file and leaves the target."""
    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", failing(errno.EIO))
    monkeypatch.setattr(writeback, "FLUSH_BYTES", 64 * KiB)
    (tmp_path / "kept.bin").write_bytes(b"old")
    old = apply.LocalFile(3, (tmp_path / "kept.bin").stat().st_mtime_ns, 0o644)
    data = [os.urandom(16 * KiB) for _ in range(20)]
    with pytest.raises(OSError) as e:
        write_file(tmp_path, "kept.bin", iter(data), size=320 * KiB, mode=0o644, mtime=1, expect=old)
    assert e.value.errno == errno.EIO
    assert (tmp_path / "kept.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.bin"]  # no temp file left


def test_a_file_system_without_sync_file_range_switches_the_flusher_off(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", failing(errno.EINVAL))
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        f = writeback.Flusher(fd, every=4 * KiB)
        for k in range(1, 6):
            os.write(fd, b"z" * 4 * KiB)
            f.wrote(k * 4 * KiB)
        assert not f.on and not f.due(100 * KiB) and f.dropped == 0
    finally:
        os.close(fd)


class Counting(writeback.Flusher):
    made: list[Counting] = []

    def __init__(self, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kw)
        Counting.made.append(self)
        self.calls = 0

    def wrote(self, end: int) -> None:
        self.calls += 1
        super().wrote(end)


@pytest.fixture
def counted(monkeypatch):  # type: ignore[no-untyped-def]
    Counting.made = []
    drops: list[int] = []
    monkeypatch.setattr(writeback, "FLUSH_BYTES", 64 * KiB)
    for mod in (apply, spool):
        monkeypatch.setattr(mod, "Flusher", Counting)
    real = writeback.drop
    monkeypatch.setattr(apply, "drop", lambda fd, size: drops.append(size) or real(fd, size))
    return drops


@pytest.mark.skipif(writeback._SYNC_FILE_RANGE is None, reason="sync_file_range is Linux's")
def test_downloads_and_the_spool_write_behind_a_flusher_and_drop_what_they_synced(tmp_path, counted,
                                                                                 monkeypatch) -> None:
    from cobox.folders.chunking import chunk_id
    from cobox.folders.model import ChunkRef

    data = [os.urandom(10 * KiB) for _ in range(60)]  # 600 KiB
    out = write_file(tmp_path, "big.bin", iter(data), size=600 * KiB, mode=0o644, mtime=1, expect=None)
    assert (tmp_path / "big.bin").read_bytes() == b"".join(data) and out.size == 600 * KiB
    assert (Counting.made[-1].calls, Counting.made[-1].head) == (8, 560 * KiB)  # every 70 KiB (10 KiB pieces)
    # The spool's run file, then finish_file appending the rest.
    s = spool.Spool(tmp_path, lambda n: True)
    monkeypatch.setattr(spool, "FILE_AFTER", 100 * KiB)
    feed = b"f" * 32
    for k, c in enumerate(data[:40]):
        s.chunk(feed, k, c)
    assert Counting.made[-1].head >= 320 * KiB  # the run's file has its flusher
    refs = [ChunkRef(chunk_id(c), feed, k, len(c)) for k, c in enumerate(data)]
    claimed = s.claim(refs)
    assert claimed is not None and claimed[1] == 40
    finish_file(tmp_path, "spooled.bin", claimed[0], iter(data[40:]), size=600 * KiB, mode=0o644, mtime=1,
                expect=None)
    assert (tmp_path / "spooled.bin").read_bytes() == b"".join(data)
    assert Counting.made[-1].head >= 400 * KiB  # finish_file's, from where the run ended
    # A batch of small files: the large enough ones are dropped once synced.
    results = write_files(tmp_path, [FileWrite("s1.bin", [b"x" * 300 * KiB], 300 * KiB, 0o644, 1, None),
                                     FileWrite("s2.txt", [b"y" * 100], 100, 0o644, 1, None)])
    assert [r.size for r in results] == [300 * KiB, 100]  # type: ignore[union-attr]
    assert counted == [600 * KiB, 600 * KiB, 300 * KiB]
