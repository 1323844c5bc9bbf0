"""Folder activity in words, for the dashboard's recent events ("family: 3 files updated").

The daemon records peer events (connected, disconnected); what happens in folders is seen by
comparing one status document's folders with the next (:func:`folder_changes`), which the
dashboard does on every refresh. Only what a person cares about is told: files added, changed
or removed, a download finishing, a new conflict, an error appearing or clearing. ``Activity``
keeps the latest ``LIMIT`` of them (memory stays bounded).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

LIMIT = 30

Doc = dict[str, Any]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def folder_changes(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences for what changed between two lists of folder status documents."""
    old = {f["group"]: f for f in before}
    out = []
    for f in after:
        name = f["group"]
        was = old.get(name)
        if was is None:
            out.append(f"{name}: folder added ({f['path']})")
            continue
        added = f["files"] - was["files"]
        if added > 0:
            out.append(f"{name}: {_plural(added, 'file')} added")
        elif added < 0:
            out.append(f"{name}: {_plural(-added, 'file')} removed")
        elif f["bytes"] != was["bytes"]:
            out.append(f"{name}: files updated")
        if was["pending_down"] and not f["pending_down"]:
            out.append(f"{name}: downloads finished")
        new_conflicts = set(f["conflicts"]) - set(was["conflicts"])
        if new_conflicts:
            out.append(f"{name}: {_plural(len(new_conflicts), 'conflict')} to resolve")
        if f["error"] and f["error"] != was["error"]:
            out.append(f"{name}: error: {f['error']}")
        elif was["error"] and not f["error"]:
            out.append(f"{name}: error cleared")
    gone = set(old) - {f["group"] for f in after}
    out.extend(f"{name}: folder removed" for name in sorted(gone))
    return out


class Activity:
    def __init__(self, limit: int = LIMIT) -> None:
        self.items: deque[Doc] = deque(maxlen=limit)
        self._last: list[Mapping[str, Any]] | None = None

    def observe(self, t: float, folders: Sequence[Mapping[str, Any]]) -> None:
        """Compare ``folders`` with the previous observation; the first one only sets the baseline."""
        if self._last is not None:
            for text in folder_changes(self._last, folders):
                self.items.append({"time": round(t, 3), "text": text})
        self._last = list(folders)

    def recent(self) -> list[Doc]:
        return list(self.items)
