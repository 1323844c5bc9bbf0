"""Files the folder writes as a stream leave few pages in the page cache behind them.

Theory of operation
-------------------
A download writes hundreds of megabytes that nobody reads back soon. Left to the kernel, every
byte takes a fresh page of the page cache and stays dirty until the final ``fsync``, which then
writes it all at once. Fresh pages are what that costs most: writing 256 MiB into new pages took
0.8-1.0 s of CPU on the test VM (a guest's free pages go back to the host and each one faults in
again), into pages just freed 0.1-0.2 s (``bench/README.md``). So, as the tools that stream to
disk do (``dd oflag=nocache``; RocksDB's ``bytes_per_sync``), :class:`Flusher` starts the
writeback of every ``FLUSH_BYTES`` written (``sync_file_range(SYNC_FILE_RANGE_WRITE)``: no
wait), and of the range before that, whose writeback has had the time of a range to finish,
waits for it and drops its pages (``POSIX_FADV_DONTNEED``: clean pages only). A file thus keeps
about two ranges in the cache, the pages it drops are the ones the next writes take (still warm),
the final ``fsync`` finds little left to write, and a large download no longer pushes out what
the machine's other programs had cached. :func:`drop` drops a whole file once it is synced.

Durability is unchanged: ``sync_file_range`` is a hint, not a sync (no metadata, no disk
cache); what makes a file durable is still its ``fsync`` before the rename. But a wait for
writeback *consumes* a writeback error for that open file (the kernel reports each error once
per file description): the later ``fsync`` would then return 0 for a file the disk failed to
write. So every failure of ``sync_file_range`` is raised (``OSError``: the caller removes its
temp file, as for a failed write), except the ones that say the file system does not support
it (``EINVAL``, ``ENOSYS``, ``ESPIPE``, ``EOPNOTSUPP``), which switch the flusher off for that
file. ``posix_fadvise`` consumes no error; its failure only leaves the pages cached. Where
``sync_file_range`` does not exist (not Linux) the flusher does nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

FLUSH_BYTES = 8 * 1024 * 1024  # written between two writeback starts
DROP_AFTER = 256 * 1024  # files at least this large are dropped from the page cache once synced
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_*
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ESPIPE, errno.EOPNOTSUPP}


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _sync_file_range()
_FADVISE = getattr(os, "posix_fadvise", None)


class Flusher:
    """Writeback behind a file written from ``start`` on (see the module docstring)."""

    def __init__(self, fd: int, start: int = 0, every: int | None = None) -> None:
        self.fd = fd
        self.every = every or FLUSH_BYTES
        self.head = start  # the end of the last range handed to the writeback
        self._running: tuple[int, int] | None = None  # that range: its writeback may still run
        self.on = _SYNC_FILE_RANGE is not None
        self.dropped = 0  # bytes asked out of the cache (tests)

    def due(self, end: int) -> bool:
        """Whether ``wrote(end)`` has work to do (a caller with a buffer flushes it first)."""
        return self.on and end - self.head >= self.every

    def wrote(self, end: int) -> None:
        """The file is written up to ``end``. Raises ``OSError`` for a failed writeback."""
        if not self.due(end):
            return
        lo, self.head = self.head, end
        if not self._sync(lo, end, _WRITE):
            return
        before, self._running = self._running, (lo, end)
        if before is not None and self._sync(*before, _WAIT_BEFORE | _WRITE | _WAIT_AFTER):
            self._drop(*before)

    def _sync(self, lo: int, hi: int, flags: int) -> bool:
        assert _SYNC_FILE_RANGE is not None
        if _SYNC_FILE_RANGE(self.fd, lo, hi - lo, flags) == 0:
            return True
        err = ctypes.get_errno()
        if err in _UNSUPPORTED:
            self.on = False
            return False
        raise OSError(err, f"writeback failed: {os.strerror(err)}")

    def _drop(self, lo: int, hi: int) -> None:
        if _FADVISE is not None:
            try:
                _FADVISE(self.fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
            except OSError:
                return
            self.dropped += hi - lo


def drop(fd: int, size: int) -> bool:
    """``fd`` was just synced: drop its pages from the cache (a file of ``DROP_AFTER`` or more).
    Returns whether it asked."""
    if size < DROP_AFTER or _FADVISE is None:
        return False
    try:
        _FADVISE(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        return False
    return True
