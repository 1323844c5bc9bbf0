"""A folder's conflict copies, listed and resolved (the dashboard's keep-one / keep-both).

Theory of operation
-------------------
The merge (:mod:`cobox.folders.merge`) keeps the losing side of a concurrent edit as a conflict
copy beside the contested path; the copy is a version of its own path whose stamp is the loser's.
Resolving writes ordinary operations through ``FolderSync.record``, each naming what it
supersedes as its base, so every member converges on the same result:

* ``original``: keep the file at the contested path; the copy is deleted (a ``Delete`` of the
  copy's path based on the copy's stamp);
* ``copy``: the copy's content becomes the file at the contested path (a ``Put`` based on the
  path's head) and the copy is deleted;
* ``both``: keep both files; the copy is re-recorded as a plain file of its own (a ``Put`` of the
  same content based on the copy's stamp), so it is no longer shown as a conflict.

The folder's task is woken to apply the result to the disk.
"""

from __future__ import annotations

from typing import Any

from ..errors import FolderError
from .paths import normalize_path
from .sync import FolderSync

CHOICES = ("original", "copy", "both")


async def listing(sync: FolderSync) -> list[dict[str, Any]]:
    """Each conflict copy shown, with the file it lost against (if that is still there)."""
    state = await sync.read_ops()
    files = state.files
    out = []
    for cpath, v in sorted(state.conflicts().items()):
        origin = files.get(v.origin) if v.origin else None
        out.append({"copy": cpath, "origin": v.origin, "size": v.size, "mtime": v.mtime / 1e9,
                    "author": v.stamp.author.hex(),
                    "origin_size": origin.size if origin is not None else None,
                    "origin_mtime": origin.mtime / 1e9 if origin is not None else None,
                    "origin_author": origin.stamp.author.hex() if origin is not None else None})
    return out


async def resolve(sync: FolderSync, copy: str, keep: str) -> dict[str, Any]:
    """Resolve the conflict shown at ``copy`` by keeping ``original``, ``copy`` or ``both``."""
    if keep not in CHOICES:
        raise FolderError(f"keep must be one of {', '.join(CHOICES)}, not {keep!r}")
    path = normalize_path(copy)
    state = await sync.read_ops()
    v = state.conflicts().get(path)
    if v is None or v.origin is None:
        raise FolderError(f"{path!r} is not a conflict copy in this folder (it may be resolved already)")
    me = sync.group.device_id
    if keep == "both":
        await sync.record(state.put(path, v.size, v.mode, v.mtime, v.chunks, me, v.stamp))
    else:
        if keep == "copy":
            await sync.record(state.put(v.origin, v.size, v.mode, v.mtime, v.chunks, me, state.head(v.origin)))
        await sync.record(state.delete(path, me, v.stamp))
    sync.wake()
    return {"resolved": path, "origin": v.origin, "kept": keep}


async def files(sync: FolderSync, query: str = "", limit: int = 200) -> dict[str, Any]:
    """The files shown (whose names contain ``query``, case-insensitive), by path, at most ``limit``."""
    q = query.lower()
    shown = (await sync.read_ops()).files
    matches = sorted(p for p in shown if q in p.lower())
    out = []
    for p in matches[:max(0, limit)]:
        v = shown.get(p)
        if v is not None:
            out.append({"path": p, "size": v.size, "mtime": v.mtime / 1e9, "author": v.stamp.author.hex()})
    return {"files": out, "total": len(matches)}
