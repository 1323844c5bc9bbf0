"""Gathered writes of the blob file (and the folder spool): every byte lands where it belongs,
whatever the kernel takes per call and however many pieces there are."""

import os

import pytest

from storage import blobs
from storage.blobs import BlobFile, write_gathered


def _pieces(n: int) -> list[bytes]:
    return [bytes([k % 251]) * (k % 37) for k in range(n)]  # sizes 0..36, some empty


def test_more_pieces_than_one_call_takes_land_in_order_at_the_offset(tmp_path) -> None:
    pieces = _pieces(3 * blobs.IOV_MAX + 5)
    path = tmp_path / "f"
    path.write_bytes(b"head")
    fd = os.open(path, os.O_RDWR)
    try:
        write_gathered(fd, pieces, 4)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"head" + b"".join(pieces)


def test_at_the_file_position(tmp_path) -> None:
    pieces = _pieces(2 * blobs.IOV_MAX)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        write_gathered(fd, pieces[:10])
        write_gathered(fd, pieces[10:])
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(pieces)


@pytest.mark.parametrize("iov_max", [1024, 2])
@pytest.mark.parametrize("room", [1, 5, 100])
def test_short_writes_are_resumed_where_they_stopped(tmp_path, monkeypatch, room, iov_max) -> None:
    """The kernel may write fewer bytes than asked, stopping inside a piece (and a call takes
    at most ``IOV_MAX`` pieces)."""
    monkeypatch.setattr(blobs, "IOV_MAX", iov_max)
    calls = []

    def short_pwritev(fd, views, pos):
        assert len(views) <= iov_max
        data = b"".join(views)[:room]
        calls.append(len(data))
        return os.pwrite(fd, data, pos)

    def short_writev(fd, views):
        data = b"".join(views)[:room]
        calls.append(len(data))
        return os.write(fd, data)

    monkeypatch.setattr(blobs.os, "pwritev", short_pwritev)
    monkeypatch.setattr(blobs.os, "writev", short_writev)
    pieces = [os.urandom(k) for k in (7, 0, 13, 64, 1, 250)]
    for pos in (0, None):
        path = tmp_path / f"f{pos}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            write_gathered(fd, pieces, pos)
        finally:
            os.close(fd)
        assert path.read_bytes() == b"".join(pieces)
    assert max(calls) <= room and len(calls) >= 2 * (335 // room)


def test_a_write_that_makes_no_progress_is_an_error_not_a_spin(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(blobs.os, "pwritev", lambda fd, views, pos: 0)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="no progress"):
            write_gathered(fd, [b"abc"], 0)
    finally:
        os.close(fd)


def test_append_returns_each_blobs_offset_and_reads_back(tmp_path) -> None:
    f = BlobFile(tmp_path / "blobs", 0, readonly=False)
    first = [os.urandom(n) for n in (10, 0, 70_000, 3)]
    offsets = f.append(first)
    f.commit()
    more = [os.urandom(n) for n in (5, 6)]
    offsets += f.append(more)
    f.commit()
    everything = first + more
    assert offsets == [sum(map(len, everything[:k])) for k in range(len(everything))]
    try:
        assert [f.read(o, len(b)) for o, b in zip(offsets, everything)] == everything
    finally:
        f.close()
