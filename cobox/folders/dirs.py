"""Directories on disk: what ``FolderSync`` does for the plan's actions on a directory.

Theory of operation
-------------------
``plan`` treats a directory as an item (``LocalFile.is_dir``, versions of kind ``dir``); the
actions are the same types as for files, and :func:`handles` tells the folder's executor which
ones are about a directory, so that :func:`act` carries them out instead of the file paths:

- ``Download`` of a ``dir`` version: make the directory (``make_dir``: every parent checked
  with ``lstat``, no symlink followed below the root, as ``apply.write_file`` does; a directory
  already there is fine, anything else there is left alone: ``FileChangedError``);
- ``RemoveLocal`` of a directory: ``rmdir``, only if it is empty. One that is not (it holds
  files the scan did not index: ignored ones, or ones written since) stays, and its ``Synced``
  record is dropped, so the next round sees a new local directory and records it again;
- ``RecordPut`` of a directory: record a ``Mkdir`` with the plan's base;
- ``MarkSynced`` of a ``dir`` version: note it with size and mtime 0, as the scanner reports it.

Deletions (``RecordDelete``) and ``Forget`` are the same for files and directories.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FileChangedError
from .apply import checked_path, file_mode
from .model import DIR_CONTENT
from .plan import Download, MarkSynced, RecordPut, RemoveLocal, Synced

if TYPE_CHECKING:
    from .sync import FolderSync


def handles(a: Any) -> bool:
    """Whether ``a`` is an action on a directory (for :func:`act`)."""
    if isinstance(a, Download | MarkSynced):
        return bool(a.version.kind == "dir")
    if isinstance(a, RemoveLocal):
        return a.expect.is_dir
    if isinstance(a, RecordPut):
        return a.local.is_dir
    return False


async def act(sync: FolderSync, a: Any) -> None:
    if isinstance(a, Download):
        await asyncio.to_thread(make_dir, sync.root, a.path, a.version.mode)
        await sync._mark(a.path, Synced(a.version.stamp, 0, 0, DIR_CONTENT))
    elif isinstance(a, MarkSynced):
        await sync._mark(a.path, Synced(a.version.stamp, 0, 0, DIR_CONTENT))
    elif isinstance(a, RemoveLocal):
        await asyncio.to_thread(remove_dir, sync.root, a.path)
        await sync._forget(a.path)  # removed, or kept (not empty): then recorded again next round
    elif isinstance(a, RecordPut):
        await record_all(sync, [a])


async def record_all(sync: FolderSync, actions: list[RecordPut]) -> None:
    """Record many new directories at once: their ``Mkdir`` ops in one append
    (:meth:`.record.Recorder.record_many` gives each its clock) and their ``Synced`` records in
    one commit, as files are recorded (a tree of many directories is not an append each)."""
    if not actions:
        return
    ops = [sync.state.mkdir(a.path, a.local.mode, sync.group.device_id, a.base) for a in actions]
    recorded = await sync.recorder.record_many(list(ops))
    await sync._mark_all([(a.path, Synced(op.stamp, 0, 0, DIR_CONTENT))
                          for a, op in zip(actions, recorded, strict=True)])


def make_dir(root: Path, path: str, mode: int) -> None:
    target = checked_path(root, path, create=True)
    try:
        target.mkdir()
    except FileExistsError:
        if not stat.S_ISDIR(target.lstat().st_mode):
            raise FileChangedError(f"{target} is there and is not a directory") from None
    os.chmod(target, file_mode(mode) | 0o700)  # the owner must be able to write inside it


def remove_dir(root: Path, path: str) -> bool:
    """Remove the directory ``root/path`` if it is empty; whether it was removed."""
    try:
        target = checked_path(root, path, create=False)
        st = target.lstat()
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise FileChangedError(f"{target} is no longer a directory")
    try:
        target.rmdir()
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True
