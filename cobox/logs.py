"""``cobox logs [-n N] [--follow]``: the daemon log of a home, read as a file.

Theory of operation
-------------------
``cobox start`` sends the daemon's output to ``HOME/daemon.log`` (0600); this module reads that
file and needs no running daemon, so it also shows why a daemon stopped. :func:`tail` returns
the last ``n`` lines, reading backwards in blocks so a large log costs only what is shown.
:func:`follow` then yields each line appended after it, polling the file (a log is written a
few lines a second at most; no inotify dependency): a partial last line is held back until its
newline arrives, and a file that was replaced (rotated: another inode at the path) or truncated
(copy-truncate; seen when the file is shorter than what was read, as ``tail -F`` sees it) is
reopened and read from its start, so ``--follow`` survives rotation. A daemon
run under systemd logs to the journal instead (``journalctl --user -u cobox``), which the error
for a missing log says.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from .errors import NoLogError

BLOCK = 64 * 1024
POLL = 0.2  # seconds between looks at a followed file that has nothing new


def tail(path: Path, n: int) -> tuple[list[str], int]:
    """The last ``n`` complete lines of ``path`` (without their newlines), and the offset just
    after them (where :func:`follow` goes on, so no line is lost or shown twice)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    cut = data.rfind(b"\n") + 1  # a partial last line is left to follow()
    lines = data[:cut].decode(errors="replace").splitlines()
    return (lines[-n:] if n > 0 else []), end - (len(data) - cut)


def log_path(home_log: Path) -> Path:
    if not home_log.exists():
        raise NoLogError(f"no daemon log at {home_log}: the daemon writes it when started with `cobox start`; "
                         "under systemd see `journalctl --user -u cobox`, and `cobox daemon` logs to its terminal")
    return home_log


async def follow(path: Path, offset: int | None = None, *, poll: float = POLL) -> AsyncIterator[str]:
    """Every complete line of ``path`` from ``offset`` (default: its end) on, across rotation
    and truncation; runs until the caller stops iterating."""
    f = open(path, "rb")  # noqa: SIM115 (reopened on rotation)
    try:
        if offset is None:
            f.seek(0, os.SEEK_END)
        else:
            f.seek(offset)
        partial = b""
        while True:
            chunk = f.read(BLOCK)
            if chunk:
                partial += chunk
                *lines, partial = partial.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
                continue
            if _replaced(path, f):
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                partial = b""
                continue
            await asyncio.sleep(poll)
    finally:
        f.close()


def _replaced(path: Path, f: object) -> bool:
    """Whether ``path`` is now another file than the open ``f`` (rotated) or shorter than what
    was read of it (truncated)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False  # mid-rotation: keep the old file until the new one appears
    own = os.fstat(f.fileno())  # type: ignore[attr-defined]
    return (st.st_ino, st.st_dev) != (own.st_ino, own.st_dev) or st.st_size < f.tell()  # type: ignore[attr-defined]


async def show(home_log: Path, n: int, follow_it: bool) -> int:
    """Print the last ``n`` lines, then (``follow_it``) every new one until interrupted."""
    path = log_path(home_log)
    lines, end = tail(path, n)
    for line in lines:
        print(line)
    if follow_it:
        print(flush=True, end="")
        async for line in follow(path, end):
            print(line, flush=True)
    return 0
