"""Compacting the blob file where the file system cannot punch holes.

Theory of operation
-------------------
Freed blob-file extents are normally given back by punching holes (``storage/blobs.py``). A file
system that cannot (``EOPNOTSUPP``: some network and FUSE file systems) leaves them in
``blob_free``, counted as reclaimable. When the store opens and finds at least
``COMPACT_MIN_BYTES`` and at least a quarter of the file reclaimable that way, :func:`compact`
rewrites the file without them:

1. every extent a row points at is copied, in offset order, into ``cobox.blobs.new`` (created
   0600), which is then synced;
2. one transaction gives every moved row its new offset, empties ``blob_free``, sets the new
   ``blob_end`` and sets ``blob_pending`` in ``meta``; a full checkpoint makes it durable;
3. ``cobox.blobs.new`` replaces ``cobox.blobs`` (``rename``, then the directory is synced), the
   store reads the new file, and ``blob_pending`` is deleted.

A crash at any point loses nothing; :func:`settle`, run before the blob file is opened, finishes
or undoes what a crash left:

- ``blob_pending`` unset: the rows point into ``cobox.blobs``; a ``cobox.blobs.new`` is the debris
  of a compaction that never committed (step 1 or 2) and is deleted;
- ``blob_pending`` set (step 2 committed): the rows point into the new file. If
  ``cobox.blobs.new`` still exists, the rename of step 3 did not happen and is done now; either way
  the flag is then deleted.

The rename happens only after the checkpoint succeeded, so a power loss cannot take back the
transaction of step 2 while the old file is already gone. Compaction runs only while the store
opens, before anything reads from it, so no reader can hold an offset into the old file; a
daemon on such a file system therefore gets its space back at its next start. The copy needs
the space of the live entries; a full disk ends the attempt (the partial file is deleted, the
store opens as it was, and a warning is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import aiosqlite

from . import db, rows
from .blobs import BlobFile, map_os_error
from .errors import StorageError

log = logging.getLogger(__name__)
COMPACT_MIN_BYTES = 32 * 1024 * 1024  # reclaimable bytes below which a compaction is not worth it
COPY_BYTES = 8 * 1024 * 1024  # bytes per copy call


class Compactable(Protocol):
    """What a compaction needs of a store (``storage.store.Store`` is one)."""

    blobs: BlobFile
    rows: rows.Rows
    writer: db.Writer


def new_path(blob_path: Path) -> Path:
    return blob_path.with_name(blob_path.name + ".new")


async def settle(conn: aiosqlite.Connection, blob_path: Path, *, readonly: bool) -> Path:
    """Finish or undo what a crash left of a compaction (see the module docstring); return the
    path the blob file is to be read from (a read-only store cannot rename: it reads the new
    file where it is)."""
    pending = await rows.read_meta(conn, rows.BLOB_PENDING)
    new = new_path(blob_path)
    if readonly:
        return new if pending and new.exists() else blob_path
    if not pending:
        with contextlib.suppress(FileNotFoundError):
            new.unlink()  # a compaction that never committed
        return blob_path
    if new.exists():
        try:
            os.replace(new, blob_path)
            _sync_dir(blob_path.parent)
        except OSError as e:
            raise map_os_error(e) from None
    await rows.clear_meta(conn, rows.BLOB_PENDING)
    return blob_path


def worth_it(reclaimable: int, end: int) -> bool:
    return reclaimable >= COMPACT_MIN_BYTES and 4 * reclaimable >= end


async def compact(store: Compactable) -> int:
    """Rewrite the blob file without the extents nothing points at (see the module docstring);
    return the bytes the file shrank by (0 when it was not done)."""
    blobs = store.blobs
    extents = await store.rows.blob_extents()
    new = new_path(blobs.path)
    try:
        moves, end = await asyncio.to_thread(_copy, blobs, new, extents)
    except StorageError as e:
        with contextlib.suppress(FileNotFoundError):
            new.unlink()
        log.warning("could not compact the blob file (%s); its freed space stays reclaimable", e)
        return 0
    before = blobs.end
    try:
        await store.rows.move_blobs(moves, end)
    except StorageError as e:
        with contextlib.suppress(FileNotFoundError):
            new.unlink()
        log.warning("could not compact the blob file (%s); its freed space stays reclaimable", e)
        return 0
    # The rows now point into the new file: from here on the store reads it, renamed or not.
    renamed = await store.writer.checkpoint("TRUNCATE")
    if renamed:
        try:
            os.replace(new, blobs.path)
            _sync_dir(blobs.path.parent)
        except OSError as e:
            log.warning("the compacted blob file could not replace the old one (%s)", e.strerror)
            renamed = False
    if not renamed:  # read it where it is; the next open renames it (blob_pending stays set)
        blobs.reopen(end, path=new)
        return 0
    blobs.reopen(end)
    with contextlib.suppress(StorageError):
        await store.rows.forget_meta(rows.BLOB_PENDING)  # if not, the next open deletes it
    log.info("compacted the blob file: %d bytes given back", before - end)
    return before - end


def _copy(blobs: BlobFile, new: Path, extents: Sequence[tuple[int, int, int]]) -> tuple[list[tuple[int, int]], int]:
    """Copy ``extents`` (``(key, offset, size)`` in offset order) to ``new`` back to back and sync
    it; ``([(new offset, key)], new end)``."""
    moves: list[tuple[int, int]] = []
    try:
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise map_os_error(e) from None
    try:
        pos = 0
        for key, offset, size in extents:
            moves.append((pos, key))
            done = 0
            while done < size:
                data = blobs.read(offset + done, min(COPY_BYTES, size - done))
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, pos)
                    view = view[n:]
                    pos += n
                done += len(data)
        os.fdatasync(fd)
    except OSError as e:
        raise map_os_error(e) from None
    finally:
        os.close(fd)
    return moves, pos


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
