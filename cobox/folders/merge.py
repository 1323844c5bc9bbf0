"""The folder's state: a deterministic, incremental merge of every member's operations.

Theory of operation
-------------------
Input: a set of ops (``model``) from any number of devices, in any order and in any batches.
Output: which file each path holds, identical on every device that holds the same set.
``FolderState.update(ops)`` folds new ops into the state in place; ``FolderState.merge(ops)``
is ``update`` on an empty state and ``add`` an ``update`` of a copy. Nothing depends on arrival
order or batching: the state is a function of the set of ops.

1. Each op becomes *versions* of paths: a ``Put`` (or a ``Mkdir``: a version of kind ``dir``,
   no content) one version of its path, a ``Delete`` one
   deletion, a ``Rename`` a deletion of ``src`` (base ``base``) and a version of ``dst`` (base
   ``dst_base``), both with the op's stamp. A version is identified by ``(path, stamp)``; two
   different versions claiming the same one (a writer reusing its own clock, or a hostile one)
   are resolved by keeping the one whose fingerprint (BLAKE2b of a canonical encoding of every
   field) sorts last: a function of the two versions, so every device keeps the same one.
2. Per path, the versions form a tree through ``base``. The *heads* are the versions that no
   other version of that path names as its base: the ones nobody has built on yet. One head:
   it is the state. Several heads: they are concurrent (neither author saw the other's).
3. Among the heads of a path:
   - if any head is a put, the file exists and holds the put head with the highest stamp
     ``(clock, author)``; every other put head is kept as a *conflict copy* at
     ``paths.conflict_path(path, loser author, loser mtime)``; deletion heads are dropped
     (delete vs concurrent edit keeps the edit); a losing directory makes no conflict copy
     (two devices that made one directory made the same thing);
   - if all heads are deletions, the path is absent. A deletion whose base is the current
     version is the only head, so it removes the file.
4. A conflict copy is itself a version (the loser's stamp and content, base ``None``) of its
   conflict path, merged with whatever real ops name that path: a device that deletes or edits
   the copy writes an op on the conflict path with the loser's stamp as base, which supersedes
   it; a real version wins a clash of stamps with a copy. Paths are resolved in the order
   (length, then text) and a conflict path is longer than its origin; when a long name had to
   be shortened, the copy may sort before its origin. A copy never lands on its own origin nor
   on a path resolved before its origin: one that sorts at or before the origin and has real
   versions or a copy from a path that sorts before the origin. Then the next free ``-2``,
   ``-3``... name is used. These are functions of the set of ops, so the name is deterministic.

Incremental bookkeeping (what makes an op cost about ``log n``, not a recompute): per path the
versions and the heads (one version, or a dict when there are several: ``versions.SmallMap``),
a count of how often each ``(path, stamp)`` is named as a base, the conflict copies placed on
it and the ones it placed. A new version touches only its path: the head set changes by at
most two entries and the path is marked *dirty*. ``_settle`` re-resolves dirty paths shortest
first (a heap); a path whose losers changed marks the paths of the copies it adds or removes
dirty in turn. A path's resolution costs ``O(heads)``, and a path is resolved once per batch, however many of the
batch's ops touch it. Cycles through shortened conflict names (only possible among paths whose
last component is 255 bytes long, i.e. crafted) are cut after ``MAX_RESOLVES`` resolutions of
one path in one batch; that is logged.

Lamport clocks make the highest stamp the latest edit that saw the others: a device stamps a
new op with ``next_clock()`` (one more than any clock it has merged), so an op made after
seeing a version always outranks it. Equal clocks are concurrent; the author id breaks the tie.

History: every version of every path stays in ``versions``; ``history(path)`` lists them,
oldest first, and ``restore`` makes a new ``Put`` that re-puts an old one on top of the
current state (its chunks are referenced, not stored again). Ops themselves are not kept: a
version holds everything the state needs (memory, see ``bench/merge.py``).

Threads: ``update`` may run in a worker thread while the event loop reads the state. Reads of
single entries are atomic under the GIL; ``files`` iterates over a snapshot taken in one C call
(``list(dict)``), so a reader never sees "dictionary changed size during iteration". A reader
may see a state between two ops of a batch; the daemon plans only after ``update`` returned.
"""

from __future__ import annotations

import copy
import heapq
import logging
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from cobox.errors import UnknownVersionError
from storage import RangeSet

from .model import ChunkRef, Delete, Mkdir, Op, Put, Rename, Stamp
from .paths import conflict_path, normalize_path
from .versions import (
    Files,
    SmallMap,
    Version,
    Versions,
    fingerprint,
    heads,
    small_get,
    small_list,
    small_pop,
    small_set,
    versions_of,
)

log = logging.getLogger(__name__)
MAX_RESOLVES = 16  # resolutions of one path in one batch before a (crafted) cycle is cut
MAX_NAME_MTIME = 253_402_300_799 * 10**9  # 9999-12-31: conflict names clamp mtimes to what a date can show


def _key(path: str) -> tuple[int, str]:
    return len(path), path


_Out = tuple[Version, str, Version]  # the loser, its copy's path, the copy


class FolderState:
    """The merged folder: ``files`` (path -> the version it shows), all ``versions`` (path ->
    stamp -> version) and ``clock`` (the highest Lamport clock merged)."""

    def __init__(self) -> None:
        self._vers: SmallMap = {}  # path -> its version, or its versions
        self.versions = Versions(self._vers)
        self.clock = 0
        self._files: dict[str, Version] = {}
        self.files = Files(self._files)
        self._heads: SmallMap = {}  # path -> its head, or its heads
        self._based: dict[tuple[str, int, bytes], int] = {}  # (path, clock, author) -> versions naming it base
        self._copies: dict[str, dict[Stamp, dict[str, Version]]] = {}  # target -> stamp -> origin -> copy
        self._out: dict[str, dict[Stamp, _Out]] = {}  # origin -> loser stamp -> where its copy went
        self._recheck: set[str] = set()  # origins whose copies' names must be chosen again
        self._skipped: dict[str, set[str]] = {}  # path -> origins whose copies found it taken
        self._dirty: list[tuple[int, str]] = []  # paths to resolve (a heap), during update
        self._queued: set[str] = set()
        self._conflicts: set[str] = set()  # paths showing a conflict copy
        self._known: dict[bytes, ChunkRef] = {}
        self._interned: dict[bytes, bytes] = {}  # device ids and feed keys, one object each
        self._modes: dict[int, int] = {}  # likewise for modes (an int above 256 is an object per op)
        self.names: dict[bytes, str] = {}  # device -> the name it first published (conflict copies; shared by copies)

    # -- merging -------------------------------------------------------------------------------

    @classmethod
    def merge(cls, ops: Iterable[Op]) -> FolderState:
        """The state of a set of ops."""
        return cls().update(ops)

    def add(self, ops: Iterable[Op]) -> FolderState:
        """A new state: this one's ops and more (this one is left as it is; copies it, O(n))."""
        return self.copy().update(ops)

    def copy(self) -> FolderState:
        new = copy.copy(self)
        new._vers = {p: dict(h) if type(h) is dict else h for p, h in self._vers.items()}
        new.versions = Versions(new._vers)
        new._files = dict(self._files)
        new.files = Files(new._files)
        new._heads = {p: dict(h) if type(h) is dict else h for p, h in self._heads.items()}
        new._based = dict(self._based)
        new._copies = {p: {s: dict(o) for s, o in c.items()} for p, c in self._copies.items()}
        new._out = {p: dict(o) for p, o in self._out.items()}
        new._recheck = set(self._recheck)
        new._skipped = {p: set(o) for p, o in self._skipped.items()}
        new._dirty, new._queued = [], set()
        new._conflicts = set(self._conflicts)
        new._known = dict(self._known)
        new._interned = dict(self._interned)
        return new

    def update(self, ops: Iterable[Op]) -> FolderState:
        """Fold ``ops`` into this state, in place; returns ``self``. Costs about ``log n`` per
        op plus ``O(heads)`` per path touched."""
        for op in ops:
            if op.clock > self.clock:
                self.clock = op.clock
            for v in self._versions(op):
                if self._add_version(v):
                    self._mark(v.path)
        self._settle()
        return self

    def _intern(self, b: bytes) -> bytes:
        return self._interned.setdefault(b, b)

    def _versions(self, op: Op) -> list[Version]:
        """``versions_of(op)``, sharing device ids, feed keys and base stamps with what the
        state already holds; also notes the op's chunks in ``known_chunks``."""
        stamp = Stamp(op.clock, self._intern(op.author))
        chunks: tuple[ChunkRef, ...] = ()
        if isinstance(op, Mkdir):
            return [Version(op.path, stamp, self._base(op.path, op.base), False,
                            mode=self._modes.setdefault(op.mode, op.mode), kind="dir")]
        if not isinstance(op, Delete):
            chunks = tuple(ChunkRef(c.id, self._intern(c.feed), c.seq, c.size) for c in op.chunks)
            known = self._known
            for c in chunks:
                prev = known.get(c.id)
                if prev is None or (c.feed, c.seq) < (prev.feed, prev.seq):
                    known[c.id] = c
        if isinstance(op, Delete):
            return [Version(op.path, stamp, self._base(op.path, op.base), True, mtime=op.mtime, kind="delete")]
        mode = self._modes.setdefault(op.mode, op.mode)
        if isinstance(op, Put):
            return [Version(op.path, stamp, self._base(op.path, op.base), False, op.size, mode, op.mtime, chunks)]
        return [Version(op.src, stamp, self._base(op.src, op.base), True, mtime=op.mtime, kind="rename-from"),
                Version(op.dst, stamp, self._base(op.dst, op.dst_base), False, op.size, mode, op.mtime, chunks,
                        kind="rename-to")]

    def _base(self, path: str, base: Stamp | None) -> Stamp | None:
        if base is None:
            return None
        v = small_get(self._vers, path, base)
        return v.stamp if v is not None else Stamp(base.clock, self._intern(base.author))

    def _add_version(self, v: Version) -> bool:
        """Note a real version; whether anything changed."""
        path, s = v.path, v.stamp
        if path not in self._vers:
            self._now_real(path)
        old = small_get(self._vers, path, s)
        if old is not None:
            if old == v or fingerprint(old) >= fingerprint(v):
                return False
            small_set(self._vers, path, v)
            if small_get(self._heads, path, s) is not None:
                small_set(self._heads, path, v)
            if old.base is not None:
                self._unbase(path, old.base)
        else:
            small_set(self._vers, path, v)
            if (path, s.clock, s.author) not in self._based:
                small_set(self._heads, path, v)
        if v.base is not None:
            k = (path, v.base.clock, v.base.author)
            n = self._based.get(k, 0)
            self._based[k] = n + 1
            if n == 0:
                small_pop(self._heads, path, v.base)
        return True

    def _unbase(self, path: str, base: Stamp) -> None:
        k = (path, base.clock, base.author)
        n = self._based[k] - 1
        if n:
            self._based[k] = n
            return
        del self._based[k]
        c = self._candidate(path, base)
        if c is not None:
            small_set(self._heads, path, c)

    def _now_real(self, path: str) -> None:
        """``path`` got its first real version: copies placed on it by a path that sorts at or
        after it must move on to their next name."""
        self._taken_changed(path, "")

    def _candidate(self, path: str, s: Stamp) -> Version | None:
        v = small_get(self._vers, path, s)
        if v is None:
            origins = self._copies.get(path, {}).get(s)
            if origins:
                v = origins[max(origins, key=_key)]
        return v

    # copies placed on a path
    def _copy_in(self, path: str, copy_: Version) -> None:
        s, origin = copy_.stamp, copy_.origin
        assert origin is not None
        self._copies.setdefault(path, {}).setdefault(s, {})[origin] = copy_
        self._taken_changed(path, origin)
        if small_get(self._vers, path, s) is None and (path, s.clock, s.author) not in self._based:
            c = self._candidate(path, s)
            assert c is not None
            small_set(self._heads, path, c)

    def _copy_out(self, path: str, s: Stamp, origin: str) -> None:
        by_stamp = self._copies[path]
        origins = by_stamp[s]
        del origins[origin]
        if not origins:
            del by_stamp[s]
            if not by_stamp:
                del self._copies[path]
        self._taken_changed(path, origin)
        if small_get(self._vers, path, s) is None and (path, s.clock, s.author) not in self._based:
            c = self._candidate(path, s)
            if c is None:
                small_pop(self._heads, path, s)
            else:
                small_set(self._heads, path, c)

    def _taken_changed(self, path: str, by: str) -> None:
        """Whether ``path`` is taken for a copy may have changed (it got real versions, or a
        copy from ``by`` came or went): copies of paths that sort at or after it and sit on it
        or skipped it choose their names again. Normal conflict paths sort after their origin,
        so this finds nobody outside the shortened-name case."""
        if path not in self._skipped and path not in self._copies:
            return
        k = _key(path)
        origins = set(self._skipped.pop(path, ()))
        for by_origin in self._copies.get(path, {}).values():
            origins.update(by_origin)
        for origin in origins:
            if origin != by and _key(origin) >= k:
                self._recheck.add(origin)
                self._mark(origin)

    # resolution
    def _mark(self, path: str) -> None:
        if path not in self._queued:
            self._queued.add(path)
            heapq.heappush(self._dirty, _key(path))

    def _settle(self) -> None:
        dirty, queued = self._dirty, self._queued
        for origin in self._recheck:
            self._mark(origin)
        resolved: dict[str, int] = {}
        while dirty:
            _, path = heapq.heappop(dirty)
            queued.discard(path)
            n = resolved.get(path, 0) + 1
            if n > MAX_RESOLVES:
                log.warning("folder merge: conflict copies of %r cycle; left as they are", path)
                continue
            resolved[path] = n
            self._resolve(path)
        queued.clear()

    def _resolve(self, path: str) -> None:
        puts = [v for v in small_list(self._heads, path) if not v.deleted]
        winner = max(puts, key=lambda v: v.stamp) if len(puts) > 1 else puts[0] if puts else None
        if winner is None:
            self._files.pop(path, None)
            self._conflicts.discard(path)
        else:
            self._files[path] = winner
            if winner.kind == "conflict":
                self._conflicts.add(path)
            else:
                self._conflicts.discard(path)
        losers = {v.stamp: v for v in puts if v is not winner and v.kind != "dir"}  # a directory is no conflict
        recheck = path in self._recheck
        self._recheck.discard(path)
        out = self._out.get(path, {})
        if not losers and not out:
            return
        for s, (loser, cpath, _) in list(out.items()):
            if losers.get(s) is not loser or (recheck and self._copy_path(path, loser) != cpath):
                del out[s]
                self._copy_out(cpath, s, path)
                self._mark(cpath)
        for s, loser in losers.items():
            if s in out:
                continue
            cpath = self._copy_path(path, loser)
            c = Version(cpath, s, None, False, loser.size, loser.mode, loser.mtime, loser.chunks,
                        kind="conflict", origin=path)
            out[s] = (loser, cpath, c)
            self._copy_in(cpath, c)
            self._mark(cpath)
        if out:
            self._out[path] = out
        else:
            self._out.pop(path, None)

    def _copy_path(self, path: str, loser: Version) -> str:
        attempt, mtime = 1, min(max(loser.mtime, 0), MAX_NAME_MTIME)
        label = self.names.get(loser.stamp.author, "")
        cpath = conflict_path(path, loser.stamp.author, mtime, label=label)
        while self._taken(cpath, path):
            self._skipped.setdefault(cpath, set()).add(path)
            attempt += 1
            cpath = conflict_path(path, loser.stamp.author, mtime, attempt, label)
        return cpath

    def _taken(self, cpath: str, origin: str) -> bool:
        """Whether ``cpath`` is resolved before ``origin`` (so no copy of it may land there)."""
        if cpath == origin:
            return True
        k = _key(origin)
        if _key(cpath) > k:
            return False
        if cpath in self._vers:
            return True
        return any(_key(o) < k for by_origin in self._copies.get(cpath, {}).values() for o in by_origin)

    # -- queries -----------------------------------------------------------------------------

    def next_clock(self) -> int:
        """The Lamport clock for this device's next op."""
        return self.clock + 1

    def head(self, path: str) -> Stamp | None:
        """The stamp a new op on ``path`` names as its base: the version shown, else the latest
        head (a deletion), else ``None``."""
        shown = self._files.get(path)
        if shown is not None:
            return shown.stamp
        hs = [v.stamp for v in small_list(self._heads, path) if small_get(self._vers, path, v.stamp) is v]
        return max(hs) if hs else None

    def history(self, path: str) -> list[Version]:
        """Every version of ``path`` written by an op (puts, deletions, renames), oldest first."""
        return sorted(small_list(self._vers, normalize_path(path)), key=lambda v: v.stamp)

    def conflicts(self) -> dict[str, Version]:
        """The conflict copies shown: conflict path -> version (``origin`` is the contested path)."""
        return {p: v for p in list(self._conflicts) if (v := self._files.get(p)) is not None}

    def known_chunks(self) -> Mapping[bytes, ChunkRef]:
        """Every chunk id referenced by an op, with one place to read it (the lowest feed/seq):
        a chunk found here is referenced by a new ``Put``, not stored again. A live read-only
        view, kept up to date by ``update`` (no scan)."""
        return MappingProxyType(self._known)

    def forget_chunks(self, cleared: Mapping[bytes, RangeSet]) -> None:
        """Stop offering chunks whose entries were cleared here (``cobox.folders.prune``) for
        dedup: a new ``Put`` with that content stores it again."""
        for cid, ref in list(self._known.items()):
            if ref.seq in cleared.get(ref.feed, ()):
                del self._known[cid]

    # -- making ops --------------------------------------------------------------------------

    def restore(self, path: str, version: Stamp, author: bytes, *, mtime: int | None = None) -> Put:
        """A ``Put`` that makes ``path`` hold the content of an older ``version`` again."""
        path = normalize_path(path)
        old = small_get(self._vers, path, version)
        if old is None:
            shown = self._files.get(path)
            old = shown if shown is not None and shown.stamp == version else None
        if old is None or old.deleted or old.kind == "dir":
            raise UnknownVersionError(f"{path!r} has no content version {version}")
        return Put(path, old.size, old.mode, old.mtime if mtime is None else mtime, old.chunks,
                   self.next_clock(), author, self.head(path))

    def put(self, path: str, size: int, mode: int, mtime: int, chunks: tuple[ChunkRef, ...],
            author: bytes, base: Stamp | None) -> Put:
        return Put(normalize_path(path), size, mode, mtime, chunks, self.next_clock(), author, base)

    def delete(self, path: str, author: bytes, base: Stamp | None = None, *, when: int | None = None) -> Delete:
        """A ``Delete`` of ``path`` dated ``when`` (ns; default: now, the time it is recorded)."""
        path = normalize_path(path)
        return Delete(path, self.next_clock(), author, self.head(path) if base is None else base,
                      time.time_ns() if when is None else when)

    def mkdir(self, path: str, mode: int, author: bytes, base: Stamp | None) -> Mkdir:
        return Mkdir(normalize_path(path), mode, self.next_clock(), author, base)

    def rename(self, src: str, dst: str, author: bytes) -> Rename:
        """Move the file shown at ``src`` to ``dst`` (same chunks, nothing re-stored)."""
        src, dst = normalize_path(src), normalize_path(dst)
        v = self._files.get(src)
        if v is None:
            raise UnknownVersionError(f"no file at {src!r}")
        return Rename(src, dst, v.size, v.mode, v.mtime, v.chunks, self.next_clock(), author,
                      v.stamp, self.head(dst))


__all__ = ["FolderState", "Version", "fingerprint", "heads", "versions_of"]
