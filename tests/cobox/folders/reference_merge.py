"""The merge as it was computed before it became incremental (main 66ae607): every op, from
scratch, in one pass. Kept as the oracle of the incremental ``FolderState`` (the rules are the
same; clashing stamps are broken by ``fingerprint`` as in the incremental merge)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from cobox.folders.merge import Version, fingerprint, heads, versions_of
from cobox.folders.model import Op, Stamp
from cobox.folders.paths import conflict_path


def reference(ops: Iterable[Op]) -> tuple[dict[str, Version], dict[str, dict[Stamp, Version]]]:
    """``(files, versions)`` of a set of ops."""
    chosen: dict[tuple[str, Stamp], Version] = {}
    for op in ops:
        for v in versions_of(op):
            prev = chosen.get((v.path, v.stamp))
            if prev is None or (prev != v and fingerprint(v) > fingerprint(prev)):
                chosen[(v.path, v.stamp)] = v
    versions: dict[str, dict[Stamp, Version]] = {}
    for (path, stamp), v in chosen.items():
        versions.setdefault(path, {})[stamp] = v
    copies: dict[str, dict[Stamp, Version]] = {}
    queue = [(len(p), p) for p in versions]
    heapq.heapify(queue)
    queued = set(versions)
    files: dict[str, Version] = {}
    done: set[str] = set()
    while queue:
        _, path = heapq.heappop(queue)
        done.add(path)
        candidates = {**copies.get(path, {}), **versions.get(path, {})}
        puts = [v for v in heads(candidates.values()) if not v.deleted]
        if not puts:
            continue
        files[path] = puts[-1]
        for loser in puts[:-1]:
            if loser.kind == "dir":
                continue  # a directory makes no conflict copy
            attempt = 1
            cpath = conflict_path(path, loser.stamp.author, loser.mtime)
            while cpath in done:
                attempt += 1
                cpath = conflict_path(path, loser.stamp.author, loser.mtime, attempt)
            copies.setdefault(cpath, {})[loser.stamp] = Version(
                cpath, loser.stamp, None, False, loser.size, loser.mode, loser.mtime, loser.chunks,
                kind="conflict", origin=path)
            if cpath not in queued:
                queued.add(cpath)
                heapq.heappush(queue, (len(cpath), cpath))
    return files, versions
