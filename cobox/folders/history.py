"""A folder's history and restoring an old version: the folder's business, not the API's.

Both first merge every operation read so far (``FolderSync.read_ops``). A restore in place is a
new Put of the old version's content recorded through ``FolderSync.record``, which takes the
next clock of this device (above every merged operation and every one being recorded beside
it), so a restore never reuses a clock an in-flight operation took; the folder's task is then
woken to apply it, and ``restore`` waits (at most ``wait`` seconds) until the file on disk has
the restored version's size and mtime, so "restored" is said only once it is in place
(``in_place`` False: recorded, the folder's next round writes it).

A restore ``to`` a path writes the old content there and records nothing. The target may be a
directory (the file keeps its name inside it); an existing file there is replaced only with
``force``, and then only if it does not change while the old content is written
(``apply.write_file``'s ``expect``).
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any

from ..errors import FolderError, UsageError
from . import fetch
from .merge import FolderState, Version
from .paths import normalize_path
from .plan import LocalFile
from .sync import FolderSync

POLL = 0.05  # seconds between two looks at the restored file


async def history(sync: FolderSync, file: str) -> list[dict[str, Any]]:
    """Every known version of ``file``, oldest first; ``current`` marks the one shown. A
    deletion's ``mtime`` is when it was recorded."""
    path = normalize_path(file)
    await sync.read_ops()
    shown = sync.state.files.get(path)
    return [{"version": version_id(v), "author": v.stamp.author.hex(), "clock": v.stamp.clock,
             "mtime": v.mtime / 1e9, "size": v.size, "deleted": v.deleted,
             "current": shown is not None and shown.stamp == v.stamp}
            for v in sync.state.history(path)]


async def restore(sync: FolderSync, file: str, version: str | None, to: str | None, *,
                  force: bool = False, wait: float = 0.0) -> dict[str, Any]:
    """Restore ``version`` of ``file`` (the newest if None) in place, or write it to ``to``."""
    path = normalize_path(file)
    await sync.read_ops()
    v = find_version(sync.state, path, version)
    if to:
        target, expect = restore_target(Path(to).expanduser().absolute(), path, force)
        await write_version(sync, v, target, expect)
        return {"written": str(target), "version": version_id(v)}
    put = sync.state.restore(path, v.stamp, sync.group.device_id)
    await sync.record(put)  # (with another clock, maybe: the same content and mtime)
    sync.wake()
    placed = await in_place(sync.root / path, put.size, put.mtime, wait)
    return {"restored": path, "version": version_id(v), "in_place": placed}



def version_id(v: Version) -> str:
    return f"{v.stamp.clock}-{v.stamp.author.hex()[:8]}"


def find_version(state: FolderState, path: str, vid: str | None) -> Version:
    history = [v for v in state.history(path) if not v.deleted]
    if not history:
        raise FolderError(f"no version of {path!r} is known")
    if vid is None:
        return history[-1]
    for v in history:
        if version_id(v) == vid:
            return v
    raise FolderError(f"{path!r} has no version {vid!r} (see `cobox folder history`)")

def restore_target(to: Path, path: str, force: bool) -> tuple[Path, LocalFile | None]:
    """Where a restore ``to`` writes, and the file it may replace there (``None``: none)."""
    if to.is_dir():
        to = to / path.rsplit("/", 1)[-1]
    try:
        st = to.lstat()
    except FileNotFoundError:
        return to, None
    if stat.S_ISDIR(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{to} exists and is not a regular file: give another --to")
    if not force:
        raise UsageError(f"{to} exists: add --force to replace it, or give another --to")
    return to, LocalFile(st.st_size, st.st_mtime_ns)


async def write_version(sync: FolderSync, v: Version, target: Path, expect: LocalFile | None) -> None:
    """Write an old version to ``target`` (outside or inside the folder), chunks verified
    (:func:`cobox.folders.fetch.write_version`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    await fetch.write_version(sync.group, v, target.parent, target.name, expect)


async def in_place(file: Path, size: int, mtime: int, wait: float) -> bool:
    """Whether ``file`` has ``size`` and ``mtime`` (ns), looking again until ``wait`` seconds passed."""
    deadline = time.monotonic() + wait
    while True:
        try:
            st = os.stat(file)
            if (st.st_size, st.st_mtime_ns) == (size, mtime):
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL)
