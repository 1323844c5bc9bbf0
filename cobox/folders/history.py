"""A folder's history and restoring an old version: the folder's business, not the API's.

Both first merge every operation read so far (``FolderSync.read_ops``). A restore in place is a
new Put of the old version's content recorded through ``FolderSync.record``, which takes the
next clock of this device (above every merged operation and every one being recorded beside
it), so a restore never reuses a clock an in-flight operation took; the folder's task is then
woken to apply it. A restore ``to`` a path writes the old content there and records nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .paths import normalize_path
from .sync import FolderSync, find_version, version_id


async def history(sync: FolderSync, file: str) -> list[dict[str, Any]]:
    """Every known version of ``file``, oldest first; ``current`` marks the one shown."""
    path = normalize_path(file)
    await sync.read_ops()
    shown = sync.state.files.get(path)
    return [{"version": version_id(v), "author": v.stamp.author.hex(), "clock": v.stamp.clock,
             "mtime": v.mtime / 1e9, "size": v.size, "deleted": v.deleted,
             "current": shown is not None and shown.stamp == v.stamp}
            for v in sync.state.history(path)]


async def restore(sync: FolderSync, file: str, version: str | None, to: str | None) -> dict[str, Any]:
    """Restore ``version`` of ``file`` (the newest if None) in place, or write it to ``to``."""
    path = normalize_path(file)
    await sync.read_ops()
    v = find_version(sync.state, path, version)
    if to:
        await sync.write_version(v, Path(to).expanduser().resolve())
        return {"written": to, "version": version_id(v)}
    await sync.record(sync.state.restore(path, v.stamp, sync.group.device_id))
    sync.wake()
    return {"restored": path, "version": version_id(v)}
