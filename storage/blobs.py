"""The blob file: large entries, appended once, outside SQLite.

Theory of operation
-------------------
SQLite in WAL mode writes every byte twice (into the WAL, then into the database at a
checkpoint), which caps large-entry throughput at about half the disk's speed. Entries of
``BLOB_THRESHOLD`` bytes or more are therefore appended to one file per store
(``cobox.blobs``), and their rows in ``entries`` hold only ``(blob_offset, blob_size)``.

Only the writer task appends, at ``end``; a transaction that references new blob bytes writes
them *before* it commits, and records the new ``end`` in the ``meta`` table in the same
transaction. So a committed row never points past written blob bytes (a killed process loses
nothing the OS has), and bytes past the recorded end belong to a transaction that never
committed: the store truncates them when it opens. A failed write leaves ``end`` unchanged, so
the next write overwrites the debris.

Power loss: with ``durability="normal"`` (SQLite ``synchronous=NORMAL``) the database is made
durable at checkpoints, and the writer syncs the blob file right before each checkpoint; the
transactions since the last checkpoint may be lost, as SQLite's own NORMAL mode allows. With
``durability="full"`` every commit syncs the blob file first and SQLite runs
``synchronous=FULL``.

Freeing space (clearing, leaving)
---------------------------------
The file is never rewritten in place: an extent whose row was deleted (``Feed.clear``,
``Store.delete_feed``) is recorded in the ``blob_free`` table in the deleting transaction, and
after the commit :meth:`BlobFile.punch` deallocates it with ``fallocate(FALLOC_FL_PUNCH_HOLE |
FALLOC_FL_KEEP_SIZE)``: the file keeps its length (offsets stay valid) and the file system frees
the blocks wholly inside the extent (the few bytes of a partial block at either edge are zeroed,
and stay allocated). Measured on ext4 (the test machine): 4 MiB punched out of an 8 MiB file takes
``st_blocks`` from 8 MiB to 4 MiB. Where the file system cannot punch holes (``EOPNOTSUPP``:
e.g. some network file systems) the extent stays in ``blob_free`` (counted as reclaimable by
``Store.disk_use``), and when enough has piled up the store compacts the file the next time it
opens (``storage/compaction.py``: the live extents copied into a new file, crash-safe). A
crash between the commit and the punch leaves the row in ``blob_free``; the store punches it when it next opens.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import StorageError, StoreFullError, StoreReadOnlyError

BLOB_THRESHOLD = 8 * 1024
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's ``fallocate(fd, mode, offset, len)``, or None where there is none (not Linux)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _fallocate()


def _iov_max() -> int:
    try:
        n = os.sysconf("SC_IOV_MAX")
    except (ValueError, OSError, AttributeError):
        return 16  # POSIX's least
    return min(n, 1024) if n > 0 else 16


IOV_MAX = _iov_max()  # pieces one writev takes


def write_gathered(fd: int, pieces: Sequence[bytes | bytearray | memoryview], pos: int | None = None) -> None:
    """Write ``pieces`` one after another at ``pos`` (or at the file position), with as few
    system calls as the kernel allows (``pwritev``/``writev`` of up to ``IOV_MAX`` pieces).

    One call for many pieces matters beyond the syscalls: each call lets go of the GIL, and a
    thread that lets go of it while the event loop's thread is busy waits up to a switch
    interval (5 ms) to have it back, so a writer issuing a call per 64 KiB piece stalls."""
    views = [memoryview(p).cast("B") for p in pieces if len(p)]
    while views:
        batch = views[:IOV_MAX]
        n = os.writev(fd, batch) if pos is None else os.pwritev(fd, batch, pos)
        if n <= 0:
            raise OSError(errno.EIO, "a write made no progress")
        if pos is not None:
            pos += n
        done = 0
        while done < len(batch) and n >= len(batch[done]):
            n -= len(batch[done])
            done += 1
        views = views[done:]
        if n:
            views[0] = views[0][n:]


class BlobFile:
    def __init__(self, path: Path, end: int, *, readonly: bool, sync_each_write: bool = False) -> None:
        self.path = path
        self.sync_each_write = sync_each_write
        self.end = end
        self.pending_end = end
        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
        try:
            self._fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            self._fd = -1  # read-only store that never stored a large entry
        except OSError as e:
            raise map_os_error(e) from None
        if not readonly and os.fstat(self._fd).st_size > end:
            os.ftruncate(self._fd, end)  # debris of a transaction that never committed

    def append(self, blobs: Sequence[bytes]) -> list[int]:
        """Write ``blobs`` at the end and make them durable; return their offsets. ``end``
        moves only when :meth:`commit` is called (after the referencing transaction)."""
        offsets = []
        pos = self.end
        for blob in blobs:
            offsets.append(pos)
            pos += len(blob)
        try:
            write_gathered(self._fd, blobs, self.end)
            if self.sync_each_write:
                os.fdatasync(self._fd)
        except OSError as e:
            raise map_os_error(e) from None
        self.pending_end = pos
        return offsets

    def sync(self) -> None:
        if self._fd >= 0:
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                raise map_os_error(e) from None

    def commit(self) -> None:
        self.end = self.pending_end

    def read(self, offset: int, size: int) -> bytes:
        if self._fd < 0 or offset + size > self.end:
            raise StorageError("an entry points outside the blob file")
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as e:
            raise map_os_error(e) from None
        if len(data) != size:
            raise StorageError("the blob file is shorter than the store expects")
        return data

    def punch(self, offset: int, size: int) -> bool:
        """Deallocate ``[offset, offset + size)`` (bytes no row points at any more); False when
        the file system cannot punch holes (the extent then waits for a compaction)."""
        if self._fd < 0 or size <= 0 or _FALLOCATE is None:
            return self._fd >= 0 and size <= 0
        if _FALLOCATE(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, size) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise map_os_error(OSError(err, os.strerror(err)))

    def reopen(self, end: int, *, path: Path | None = None) -> None:
        """Read and write the file now at ``path`` (a compaction replaced it, or left the new
        file beside it: then ``path`` names it), ``end`` bytes long."""
        self.close()
        if path is not None:
            self.path = path
        try:
            self._fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            raise map_os_error(e) from None
        self.end = self.pending_end = end

    def allocated(self) -> int:
        """The bytes the file system has allocated to the blob file (``st_blocks``)."""
        if self._fd < 0:
            return 0
        return os.fstat(self._fd).st_blocks * 512

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def map_os_error(e: OSError) -> StorageError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StoreFullError(f"no space left for the blob file: {e.strerror}")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreReadOnlyError(f"the blob file is not writable: {e.strerror}")
    return StorageError(f"blob file error: {e.strerror}")
