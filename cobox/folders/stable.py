"""Wait until a local file is stable before recording it, as Syncthing does.

Theory of operation
-------------------
A scan is a snapshot: a file that a program is still writing shows whatever size it had at that
moment (often 0 bytes just after it was created). Recording it then puts a partial version in
the group's history and sends it to every member. So ``plan``'s ``RecordPut`` actions pass
through :meth:`StableFiles.admit` first, which lets a file be recorded only when it is *stable*:

- its mtime is at least ``interval`` older than now (nothing wrote to it for that long: a
  writer moves the mtime on each write), or
- two looks at least ``interval`` apart (on the monotonic clock) saw the same size and mtime.

A file that is not stable yet is left for a later round, and ``admit`` says when to look again
(the earliest moment one of the waiting files can become stable); the caller schedules a round
then. A file whose size or mtime moved between two looks starts waiting again. Only
``RecordPut`` waits: a deletion, a download or a removal is not a partial write. Files that no
longer wait (recorded, gone) are forgotten, so memory is bounded by the files waiting now.

``interval`` 0 turns the wait off. The clocks are injected (``monotonic``, ``wall`` in ns), so
the logic is tested with a fake clock and no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .plan import Action, LocalFile, RecordPut


@dataclass(frozen=True)
class Look:
    size: int
    mtime: int
    at: float  # monotonic seconds of the first look that saw this size and mtime


class StableFiles:
    def __init__(self, interval: float, *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], int] = time.time_ns) -> None:
        self.interval = interval
        self.monotonic = monotonic
        self.wall = wall
        self.looks: dict[str, Look] = {}  # path -> what the last look saw, while it waits

    def ready(self, path: str, local: LocalFile, now: float, wall: int) -> bool:
        """Whether ``path`` (as scanned: ``local``) may be recorded now; notes this look."""
        if self.interval <= 0 or wall - local.mtime >= self.interval * 1e9:
            self.looks.pop(path, None)
            return True
        seen = self.looks.get(path)
        if seen is None or (seen.size, seen.mtime) != (local.size, local.mtime):
            self.looks[path] = Look(local.size, local.mtime, now)
            return False
        if now - seen.at >= self.interval:
            del self.looks[path]
            return True
        return False

    def admit(self, actions: Sequence[Action]) -> tuple[list[Action], float | None]:
        """``actions`` without the ``RecordPut`` of files not stable yet, and in how many seconds
        to look again (``None``: nothing waits)."""
        now, wall = self.monotonic(), self.wall()
        kept: list[Action] = []
        waiting: set[str] = set()
        for a in actions:
            if isinstance(a, RecordPut) and not self.ready(a.path, a.local, now, wall):
                waiting.add(a.path)
                continue
            kept.append(a)
        for path in [p for p in self.looks if p not in waiting]:
            del self.looks[path]
        if not waiting:
            return kept, None
        return kept, max(0.0, min(self.looks[p].at + self.interval - now for p in waiting))

    @property
    def waiting(self) -> int:
        """How many files wait to become stable."""
        return len(self.looks)
