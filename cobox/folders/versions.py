"""Versions of folder paths, and the read-only views the merged state is read through.

Theory of operation
-------------------
A ``Version`` is what the merge (``merge.FolderState``) keeps of an op for one path: the path,
the op's stamp, its base, and the content (size, mode, mtime, chunk refs) or a deletion; a
rename gives two (``versions_of``). ``fingerprint`` is a digest of every field in a canonical
encoding: when two different versions claim one ``(path, stamp)``, the merge keeps the one
whose fingerprint sorts last, on every device alike.

Most paths have one version and one head, so the state keeps per path either one ``Version``
or a dict ``stamp -> Version`` (``SmallMap`` and its ``small_*`` helpers), which saves a dict per path (a dict of
one entry is 224 bytes). ``Files`` and ``Versions`` are the read-only views over those maps:
single lookups are plain dict lookups; iteration works on a snapshot taken in one C call
(``list(dict)``, atomic under the GIL), so the event loop can read while a worker thread merges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .chunking import content_id
from .model import DIR_CONTENT, ChunkRef, Delete, Mkdir, Op, Put, Stamp


@dataclass(frozen=True, slots=True)
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
    kind: str = "put"  # put, delete, rename-from, rename-to, conflict, dir
    origin: str | None = None  # a conflict copy: the path it lost on

    @property
    def content(self) -> bytes:
        """``chunking.content_id`` of this version's chunks (compare with a scanned file);
        ``DIR_CONTENT`` for a directory."""
        return DIR_CONTENT if self.kind == "dir" else content_id(c.id for c in self.chunks)


def versions_of(op: Op) -> list[Version]:
    """The versions one op contributes (two for a rename)."""
    s = op.stamp
    if isinstance(op, Delete):
        return [Version(op.path, s, op.base, True, mtime=op.mtime, kind="delete")]
    if isinstance(op, Put):
        return [Version(op.path, s, op.base, False, op.size, op.mode, op.mtime, op.chunks)]
    if isinstance(op, Mkdir):
        return [Version(op.path, s, op.base, False, mode=op.mode, kind="dir")]
    return [Version(op.src, s, op.base, True, mtime=op.mtime, kind="rename-from"),
            Version(op.dst, s, op.dst_base, False, op.size, op.mode, op.mtime, op.chunks, kind="rename-to")]


def heads(versions: Iterable[Version]) -> list[Version]:
    """The versions nobody built on, oldest stamp first."""
    vs = list(versions)
    children = {v.base for v in vs if v.base is not None}
    return sorted((v for v in vs if v.stamp not in children), key=lambda v: v.stamp)


def fingerprint(v: Version) -> bytes:
    """A digest of every field of ``v`` in a canonical encoding (length-prefixed, integers in
    decimal so no width limits them): the tie-break between two versions with one identity."""
    h = hashlib.blake2b(digest_size=32)

    def put(x: bytes) -> None:
        h.update(len(x).to_bytes(4, "big"))
        h.update(x)

    def num(n: int) -> None:
        put(str(n).encode())

    put(v.kind.encode())
    put(v.path.encode("utf-8", "surrogatepass"))
    num(v.stamp.clock)
    put(v.stamp.author)
    if v.base is None:
        put(b"")
    else:
        num(v.base.clock)
        put(v.base.author)
    for n in (int(v.deleted), v.size, v.mode, v.mtime, len(v.chunks)):
        num(n)
    for c in v.chunks:
        put(c.id)
        put(c.feed)
        num(c.seq)
        num(c.size)
    return h.digest()


class Files(Mapping[str, Version]):
    """Path -> the version shown: a read-only view whose iteration works on a snapshot, so it
    is safe to read on the event loop while ``update`` runs in a worker thread."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, Version]) -> None:
        self._d = d

    def __getitem__(self, path: str) -> Version:
        return self._d[path]

    def get(self, path: str, default: Any = None) -> Any:
        return self._d.get(path, default)

    def __contains__(self, path: object) -> bool:
        return path in self._d

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._d))

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(self._d)

    def values(self) -> list[Version]:  # type: ignore[override]
        return list(self._d.values())

    def items(self) -> list[tuple[str, Version]]:  # type: ignore[override]
        return list(self._d.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._d) == dict(other.items())

    def __repr__(self) -> str:
        return f"Files({self._d!r})"


SmallMap = dict[str, "Version | dict[Stamp, Version]"]  # path -> one version, or a dict of several


def small_get(d: SmallMap, path: str, s: Stamp) -> Version | None:
    h = d.get(path)
    if h is None or type(h) is dict:
        return None if h is None else h.get(s)
    return h if h.stamp == s else None  # type: ignore[union-attr]


def small_set(d: SmallMap, path: str, v: Version) -> None:
    h = d.get(path)
    if h is None:
        d[path] = v
    elif type(h) is dict:
        h[v.stamp] = v
    elif h.stamp == v.stamp:  # type: ignore[union-attr]
        d[path] = v
    else:
        d[path] = {h.stamp: h, v.stamp: v}  # type: ignore[union-attr, dict-item]


def small_pop(d: SmallMap, path: str, s: Stamp) -> None:
    h = d.get(path)
    if h is None:
        return
    if type(h) is dict:
        if h.pop(s, None) is not None and len(h) == 1:
            d[path] = next(iter(h.values()))
    elif h.stamp == s:  # type: ignore[union-attr]
        del d[path]


def small_list(d: SmallMap, path: str) -> list[Version]:
    h = d.get(path)
    return [] if h is None else list(h.values()) if type(h) is dict else [h]  # type: ignore[list-item, union-attr]


def small_dict(h: Version | dict[Stamp, Version]) -> dict[Stamp, Version]:
    return dict(h) if type(h) is dict else {h.stamp: h}  # type: ignore[union-attr, dict-item, arg-type]


class Versions(Mapping[str, dict[Stamp, Version]]):
    """Path -> stamp -> version, for every path an op wrote: a read-only view (one version is
    kept without a dict of its own; ``[path]`` builds one), iterated over a snapshot."""

    __slots__ = ("_d",)

    def __init__(self, d: SmallMap) -> None:
        self._d = d

    def __getitem__(self, path: str) -> dict[Stamp, Version]:
        return small_dict(self._d[path])

    def __contains__(self, path: object) -> bool:
        return path in self._d

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._d))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and len(self) == len(other) and all(
            p in other and self[p] == other[p] for p in self)

    def __repr__(self) -> str:
        return f"Versions({dict(self.items())!r})"


__all__ = ["Files", "SmallMap", "Version", "Versions", "fingerprint", "heads", "small_dict", "small_get", "small_list",
           "small_pop", "small_set", "versions_of"]
