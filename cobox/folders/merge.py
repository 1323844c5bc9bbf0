"""The folder's state: a deterministic merge of every member's operations.

Theory of operation
-------------------
Input: a set of ops (``model``) from any number of devices, in any order. Output: which file
each path holds, identical on every device that holds the same set. ``FolderState.merge`` is a
pure function of the set; nothing depends on arrival order.

1. Each op becomes *versions* of paths: a ``Put`` one version of its path, a ``Delete`` one
   deletion, a ``Rename`` a deletion of ``src`` (base ``base``) and a version of ``dst`` (base
   ``dst_base``), both with the op's stamp. A version is identified by ``(path, stamp)``; two
   different ops claiming the same one (a misbehaving writer) are resolved by keeping the one
   whose encoding sorts last.
2. Per path, the versions form a tree through ``base``. The *heads* are the versions that no
   other version of that path names as its base: the ones nobody has built on yet. One head:
   it is the state. Several heads: they are concurrent (neither author saw the other's).
3. Among the heads of a path:
   - if any head is a put, the file exists and holds the put head with the highest stamp
     ``(clock, author)``; every other put head is kept as a *conflict copy* at
     ``paths.conflict_path(path, loser author, loser mtime)``; deletion heads are dropped
     (delete vs concurrent edit keeps the edit);
   - if all heads are deletions, the path is absent. A deletion whose base is the current
     version is the only head, so it removes the file.
4. A conflict copy is itself a version (the loser's stamp and content, base ``None``) of its
   conflict path, merged with whatever real ops name that path: a device that deletes or edits
   the copy writes an op on the conflict path with the loser's stamp as base, which supersedes
   it. Paths are resolved shortest first and a conflict path is longer than its origin, so
   every copy is known before its path is resolved; when a long name had to be shortened and
   the copy's path is already resolved, the next free ``-2``, ``-3``... name is used. The
   order of resolution is a function of the set of ops, so this choice is deterministic too.

Lamport clocks make the highest stamp the latest edit that saw the others: a device stamps a
new op with ``next_clock()`` (one more than any clock it has merged), so an op made after
seeing a version always outranks it. Equal clocks are concurrent; the author id breaks the tie.

History: every version of every path stays in ``versions``; ``history(path)`` lists them,
oldest first, and ``restore`` makes a new ``Put`` that re-puts an old one on top of the
current state (its chunks are referenced, not stored again).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from cobox.errors import UnknownVersionError

from .chunking import content_id
from .model import ChunkRef, Delete, Op, Put, Rename, Stamp, encode_op
from .paths import conflict_path, normalize_path


@dataclass(frozen=True)
class Version:
    """One version of one path: a content (``deleted`` False) or a deletion."""

    path: str
    stamp: Stamp
    base: Stamp | None
    deleted: bool
    size: int = 0
    mode: int = 0
    mtime: int = 0
    chunks: tuple[ChunkRef, ...] = ()
    kind: str = "put"  # put, delete, rename-from, rename-to, conflict
    origin: str | None = None  # a conflict copy: the path it lost on

    @cached_property
    def content(self) -> bytes:
        """``chunking.content_id`` of this version's chunks (compare with a scanned file)."""
        return content_id(c.id for c in self.chunks)


def versions_of(op: Op) -> list[Version]:
    """The versions one op contributes (two for a rename)."""
    s = op.stamp
    if isinstance(op, Delete):
        return [Version(op.path, s, op.base, True, kind="delete")]
    if isinstance(op, Put):
        return [Version(op.path, s, op.base, False, op.size, op.mode, op.mtime, op.chunks)]
    return [Version(op.src, s, op.base, True, kind="rename-from"),
            Version(op.dst, s, op.dst_base, False, op.size, op.mode, op.mtime, op.chunks, kind="rename-to")]


def heads(versions: Iterable[Version]) -> list[Version]:
    """The versions nobody built on, oldest stamp first."""
    vs = list(versions)
    children = {v.base for v in vs if v.base is not None}
    return sorted((v for v in vs if v.stamp not in children), key=lambda v: v.stamp)


@dataclass(frozen=True)
class FolderState:
    """The merged folder: ``files`` (path -> the version it shows) and all ``versions``."""

    files: dict[str, Version]
    versions: dict[str, dict[Stamp, Version]]
    clock: int
    ops: tuple[Op, ...] = field(repr=False)

    @classmethod
    def merge(cls, ops: Iterable[Op]) -> FolderState:
        chosen: dict[tuple[str, Stamp], tuple[Op, Version]] = {}
        for op in ops:
            for v in versions_of(op):
                prev = chosen.get((v.path, v.stamp))
                if prev is None or (prev[0] != op and encode_op(op) > encode_op(prev[0])):
                    chosen[(v.path, v.stamp)] = (op, v)
        versions: dict[str, dict[Stamp, Version]] = {}
        for (path, stamp), (_, v) in chosen.items():
            versions.setdefault(path, {})[stamp] = v
        all_ops = {id(op): op for op, _ in chosen.values()}
        files = cls._resolve(versions)
        clock = max((op.clock for op in all_ops.values()), default=0)
        ordered = tuple(sorted(all_ops.values(), key=lambda o: (o.stamp, type(o).__name__)))
        return cls(files, versions, clock, ordered)

    @staticmethod
    def _resolve(versions: dict[str, dict[Stamp, Version]]) -> dict[str, Version]:
        copies: dict[str, dict[Stamp, Version]] = {}
        queue = [(len(p), p) for p in versions]
        heapq.heapify(queue)
        queued = set(versions)
        files: dict[str, Version] = {}
        done: set[str] = set()
        while queue:
            _, path = heapq.heappop(queue)
            done.add(path)
            candidates = {**copies.get(path, {}), **versions.get(path, {})}  # a real op wins a clash
            puts = [v for v in heads(candidates.values()) if not v.deleted]
            if not puts:
                continue
            files[path] = puts[-1]
            for loser in puts[:-1]:
                attempt = 1
                cpath = conflict_path(path, loser.stamp.author, loser.mtime)
                while cpath in done:  # a shortened long name can land on a resolved path
                    attempt += 1
                    cpath = conflict_path(path, loser.stamp.author, loser.mtime, attempt)
                copies.setdefault(cpath, {})[loser.stamp] = Version(
                    cpath, loser.stamp, None, False, loser.size, loser.mode, loser.mtime, loser.chunks,
                    kind="conflict", origin=path)
                if cpath not in queued:
                    queued.add(cpath)
                    heapq.heappush(queue, (len(cpath), cpath))
        return files

    def add(self, ops: Iterable[Op]) -> FolderState:
        """The merge of this state's ops and more."""
        return FolderState.merge([*self.ops, *ops])

    # -- queries -----------------------------------------------------------------------------

    def next_clock(self) -> int:
        """The Lamport clock for this device's next op."""
        return self.clock + 1

    def head(self, path: str) -> Stamp | None:
        """The stamp a new op on ``path`` names as its base: the version shown, else the latest
        head (a deletion), else ``None``."""
        shown = self.files.get(path)
        if shown is not None:
            return shown.stamp
        hs = heads(self.versions.get(path, {}).values())
        return hs[-1].stamp if hs else None

    def history(self, path: str) -> list[Version]:
        """Every version of ``path`` written by an op (puts, deletions, renames), oldest first."""
        return sorted(self.versions.get(normalize_path(path), {}).values(), key=lambda v: v.stamp)

    def conflicts(self) -> dict[str, Version]:
        """The conflict copies shown: conflict path -> version (``origin`` is the contested path)."""
        return {p: v for p, v in self.files.items() if v.kind == "conflict"}

    def known_chunks(self) -> dict[bytes, ChunkRef]:
        """Every chunk id referenced by an op, with one place to read it (the lowest feed/seq):
        a chunk found here is referenced by a new ``Put``, not stored again."""
        out: dict[bytes, ChunkRef] = {}
        for op in self.ops:
            for c in getattr(op, "chunks", ()):
                prev = out.get(c.id)
                if prev is None or (c.feed, c.seq) < (prev.feed, prev.seq):
                    out[c.id] = c
        return out

    # -- making ops --------------------------------------------------------------------------

    def restore(self, path: str, version: Stamp, author: bytes, *, mtime: int | None = None) -> Put:
        """A ``Put`` that makes ``path`` hold the content of an older ``version`` again."""
        path = normalize_path(path)
        old = self.versions.get(path, {}).get(version)
        if old is None:
            shown = self.files.get(path)
            old = shown if shown is not None and shown.stamp == version else None
        if old is None or old.deleted:
            raise UnknownVersionError(f"{path!r} has no content version {version}")
        return Put(path, old.size, old.mode, old.mtime if mtime is None else mtime, old.chunks,
                   self.next_clock(), author, self.head(path))

    def put(self, path: str, size: int, mode: int, mtime: int, chunks: tuple[ChunkRef, ...],
            author: bytes, base: Stamp | None) -> Put:
        return Put(normalize_path(path), size, mode, mtime, chunks, self.next_clock(), author, base)

    def delete(self, path: str, author: bytes, base: Stamp | None = None) -> Delete:
        path = normalize_path(path)
        return Delete(path, self.next_clock(), author, self.head(path) if base is None else base)

    def rename(self, src: str, dst: str, author: bytes) -> Rename:
        """Move the file shown at ``src`` to ``dst`` (same chunks, nothing re-stored)."""
        src, dst = normalize_path(src), normalize_path(dst)
        v = self.files.get(src)
        if v is None:
            raise UnknownVersionError(f"no file at {src!r}")
        return Rename(src, dst, v.size, v.mode, v.mtime, v.chunks, self.next_clock(), author,
                      v.stamp, self.head(dst))
