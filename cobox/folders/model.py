"""The folder model: the records a device writes into its feed when its folder changes.

``Put(path, size, mode, mtime, chunks, clock, author, base)`` (the file now has the content of
``chunks``, each a ``ChunkRef(id, feed, seq, size)``), ``Delete(path, clock, author, base,
mtime)`` (``mtime``: when the deletion was recorded) and ``Rename(src, dst, ...)`` (a Delete of
``src`` plus a Put of ``dst`` with one stamp, written as one record), ``Mkdir(path, mode, ...)``
(a directory is there, empty or not: deleted with a ``Delete`` like a file); ``Stamp(clock, author)``
identifies a version of a path and totally orders versions (Lamport clock, then author). Their
encoding, the clock bound and the strict decoders live with every other entry format in
:mod:`cobox.entries` (which imports this module, never the other way round).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from .chunking import content_id

DIR_CONTENT = hashlib.blake2b(b"cobox/folder/directory", digest_size=32).digest()
"""The content id of a directory (no file's content id, a BLAKE3 over chunk ids, is this value)."""


@dataclass(frozen=True, order=True, slots=True)
class Stamp:
    """A version's identity and its place in the total order: Lamport clock, then author."""

    clock: int
    author: bytes

    def __str__(self) -> str:
        return f"{self.clock}-{self.author.hex()[:8]}"


@dataclass(frozen=True, slots=True)
class ChunkRef:
    id: bytes  # blake3 of the plaintext chunk
    feed: bytes  # the feed holding its encrypted bytes
    seq: int  # entry number in that feed
    size: int  # plaintext bytes


@dataclass(frozen=True)
class Put:
    path: str
    size: int
    mode: int
    mtime: int
    chunks: tuple[ChunkRef, ...]
    clock: int
    author: bytes
    base: Stamp | None = None

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.clock, self.author)

    @cached_property
    def content(self) -> bytes:
        return content_id(c.id for c in self.chunks)


@dataclass(frozen=True)
class Delete:
    path: str
    clock: int
    author: bytes
    base: Stamp | None = None
    mtime: int = 0  # when the deletion was recorded (ns since the epoch): what history shows

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.clock, self.author)


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str
    size: int
    mode: int
    mtime: int
    chunks: tuple[ChunkRef, ...]
    clock: int
    author: bytes
    base: Stamp | None = None  # the version of src that moved
    dst_base: Stamp | None = None  # what the author saw at dst (usually a deletion or nothing)

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.clock, self.author)


@dataclass(frozen=True)
class Mkdir:
    """A directory at ``path`` (synced whether empty or not; its mode, no mtime)."""

    path: str
    mode: int
    clock: int
    author: bytes
    base: Stamp | None = None

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.clock, self.author)


Op = Put | Delete | Rename | Mkdir
