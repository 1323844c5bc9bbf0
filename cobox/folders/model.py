"""Folder operation records and their encoding: what a device writes into its feed.

Theory of operation
-------------------
Every change a device makes to a synced folder is one record, encrypted as one entry of the
device's own feed of the group (``Group.seal``). Three records exist:

``Put(path, size, mode, mtime, chunks, clock, author, base)``
    The file at ``path`` now has this content: the concatenation of ``chunks``, each a
    ``ChunkRef(id, feed, seq, size)`` naming the BLAKE3 id of the plaintext chunk and where its
    encrypted bytes live (entry ``seq`` of feed ``feed``), so a reader can fetch and verify it.
``Delete(path, clock, author, base)``
    The file at ``path`` is gone.
``Rename(src, dst, size, mode, mtime, chunks, clock, author, base, dst_base)``
    ``src`` moved to ``dst``: for the merge exactly a ``Delete(src, base)`` plus a
    ``Put(dst, ..., dst_base)`` with the same stamp, written as one record so it lands
    atomically and so a device that holds ``src`` can move its file instead of downloading it.
    It carries the content (same chunk refs, nothing re-stored).

A record carries no author: its ``author`` is the device that owns the feed it is in, as
established by the feed's admission (``cobox.admission``), and ``decode_op`` takes it from the
caller. So nothing inside an entry can claim another device. Each record has a Lamport
``clock``: a device gives a new record ``1 + the highest clock it has seen``
(``FolderState.next_clock``). The pair ``Stamp(clock, author)`` identifies a version of a path
and totally orders versions. ``base`` is the stamp of the version of that path the author saw
when it made the change (``None``: it saw none); the merge uses it to tell an edit that follows
another from a concurrent one. ``mtime`` is in nanoseconds since the epoch, ``mode`` the
permission bits (``0o7777`` at most; ``apply`` keeps only the rwx bits).

Clock space: a record at entry ``seq`` of its feed may carry a clock of at most
``clock_bound(seq) = (seq + 1) * 2**32``. The rule is a function of the record and its place
alone, so every device accepts the same records whatever order they arrive in; an honest
device (one more than the highest clock seen, per record) never gets near it, and no single
value a member writes can push the clocks of the group to the end of their range: to lift the
highest clock by ``n * 2**32`` a member has to write ``n`` entries. A device whose next clock
is above the bound of its own next entry first appends that many tiny ``FILLER`` entries
(``{"type": "filler"}``, skipped by every reader): the same cost as the member's, once. Clocks
are unsigned 64-bit integers in msgpack; the bound stays below ``2**64`` for the first
``2**32 - 1`` entries of a feed.

Encoding: a msgpack map with a ``type`` (``folder/put``, ``folder/delete``, ``folder/rename``),
a format version ``v`` (1) and short keys. Chunk refs are ``[id, feed index, seq, size]`` into
a table ``f`` of feed keys, which keeps a ``Put`` of ``MAX_CHUNKS`` chunks under the feed's entry
size limit. ``decode_op`` is strict and total: exact key set, exact types (a bool is not an
int), 32-byte ids, normalized paths, sizes that add up (at most ``MAX_FILE_BYTES`` per op),
``base.clock < clock``, the clock bound; anything else raises ``MalformedOpError`` and nothing
else (the caller skips that entry and reports it). ``decode_chunk`` is the same for chunk
entries ``{"type": "chunk", "data": ...}`` (``MalformedChunkError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack

from cobox.errors import MalformedChunkError, MalformedOpError

from .chunking import content_id
from .padding import chunk_of
from .paths import is_normal

FORMAT = 1
ID_BYTES = 32
MAX_CHUNKS = 65536
MAX_CHUNK_BYTES = 4 * 1024 * 1024 - 64 * 1024 - 1  # the largest chunk whose padded entry fits one feed entry
MAX_INT = 2**63 - 1
MAX_CLOCK = 2**64 - 1  # msgpack uint64
CLOCK_STEP = 2**32  # clock room per entry of a feed
MAX_FILE_BYTES = 64 * 1024**3  # content of one Put or Rename
MAX_ENTRY_BYTES = 8 * 1024 * 1024  # no feed entry is larger (storage caps it lower)
TYPES = ("folder/put", "folder/delete", "folder/rename")


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


Op = Put | Delete | Rename


# -- encoding -----------------------------------------------------------------------------------

def _stamp_out(s: Stamp | None) -> list[Any] | None:
    return None if s is None else [s.clock, s.author]


def _chunks_out(chunks: tuple[ChunkRef, ...]) -> tuple[list[bytes], list[list[Any]]]:
    feeds: dict[bytes, int] = {}
    out = []
    for c in chunks:
        out.append([c.id, feeds.setdefault(c.feed, len(feeds)), c.seq, c.size])
    return list(feeds), out


FILLER = msgpack.packb({"type": "filler"}, use_bin_type=True)  # clock room, nothing else


def fillers_needed(clock: int, seq: int) -> int:
    """How many entries must precede, at ``seq``, a record with ``clock`` for it to be valid."""
    return max(0, -(-clock // CLOCK_STEP) - 1 - seq)


def clock_bound(seq: int) -> int:
    """The highest clock a record at entry ``seq`` of its feed may carry."""
    return min((seq + 1) * CLOCK_STEP, MAX_CLOCK)


def encode_op(op: Op) -> bytes:
    """The plaintext of a feed entry for ``op`` (to be sealed with the group key). The author
    is not written: readers take it from the feed's owner."""
    obj: dict[str, Any] = {"v": FORMAT, "k": op.clock, "b": _stamp_out(op.base)}
    if isinstance(op, Delete):
        obj.update(type="folder/delete", p=op.path)
    else:
        feeds, chunks = _chunks_out(op.chunks)
        obj.update(s=op.size, m=op.mode, t=op.mtime, f=feeds, c=chunks)
        if isinstance(op, Put):
            obj.update(type="folder/put", p=op.path)
        else:
            obj.update(type="folder/rename", p=op.src, d=op.dst, db=_stamp_out(op.dst_base))
    # validate what we write exactly as what we read
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as e:
        raise MalformedOpError(f"an op that cannot be encoded: {e}") from None
    if decode_op(data, author=op.author, seq=None) != op:
        raise MalformedOpError("an op does not survive its own encoding")
    return data


_KEYS = {
    "folder/put": {"type", "v", "k", "b", "p", "s", "m", "t", "f", "c"},
    "folder/delete": {"type", "v", "k", "b", "p"},
    "folder/rename": {"type", "v", "k", "b", "p", "s", "m", "t", "f", "c", "d", "db"},
}


def _int(x: Any, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise MalformedOpError(f"{what}: expected an integer in [{lo}, {hi}]")
    return x


def _id(x: Any, what: str) -> bytes:
    if type(x) is not bytes or len(x) != ID_BYTES:
        raise MalformedOpError(f"{what}: expected {ID_BYTES} bytes")
    return x


def _path(x: Any, what: str) -> str:
    if type(x) is not str or not is_normal(x):
        raise MalformedOpError(f"{what}: not a normalized folder path")
    return x


def _stamp(x: Any, what: str, clock: int) -> Stamp | None:
    if x is None:
        return None
    if type(x) is not list or len(x) != 2:
        raise MalformedOpError(f"{what}: expected [clock, author] or nil")
    s = Stamp(_int(x[0], what, 1, MAX_CLOCK), _id(x[1], what))
    if s.clock >= clock:
        raise MalformedOpError(f"{what}: a base must be older than the record (Lamport clock)")
    return s


def _content(obj: dict[str, Any]) -> tuple[int, int, int, tuple[ChunkRef, ...]]:
    size = _int(obj["s"], "size", 0, MAX_FILE_BYTES)
    mode = _int(obj["m"], "mode", 0, 0o7777)
    mtime = _int(obj["t"], "mtime")
    feeds, raw = obj["f"], obj["c"]
    if type(feeds) is not list or type(raw) is not list or len(raw) > MAX_CHUNKS or len(feeds) > len(raw):
        raise MalformedOpError("chunk list: malformed or too long")
    feeds = [_id(f, "feed key") for f in feeds]
    if len(set(feeds)) != len(feeds):
        raise MalformedOpError("chunk list: a feed key listed twice")
    refs = []
    for r in raw:
        if type(r) is not list or len(r) != 4:
            raise MalformedOpError("chunk ref: expected [id, feed index, seq, size]")
        refs.append(ChunkRef(_id(r[0], "chunk id"), feeds[_int(r[1], "feed index", 0, len(feeds) - 1)],
                             _int(r[2], "seq"), _int(r[3], "chunk size", 1, MAX_CHUNK_BYTES)))
    if sum(c.size for c in refs) != size:
        raise MalformedOpError("chunk sizes do not add up to the file size")
    if {c.feed for c in refs} != set(feeds):
        raise MalformedOpError("chunk list: an unused feed key")
    return size, mode, mtime, tuple(refs)


def unpack(data: bytes) -> Any:
    """msgpack-decode an entry's plaintext (bounded by the entry's size); ``MalformedOpError``
    for anything that is not msgpack."""
    if type(data) is not bytes or len(data) > MAX_ENTRY_BYTES:
        raise MalformedOpError("not an entry plaintext")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise MalformedOpError(f"not a msgpack record: {type(e).__name__}") from None


def decode_op(data: bytes, *, author: bytes, seq: int | None) -> Op:
    """Parse a decrypted feed entry into an op of ``author`` (the feed's owner) at entry ``seq``
    of its feed (``None``: our own record before it has a place); ``MalformedOpError`` unless
    exactly valid."""
    return op_from(unpack(data), author=author, seq=seq)


def op_from(obj: Any, *, author: bytes, seq: int | None) -> Op:
    """``decode_op`` of an entry already unpacked."""
    kind = record_type(obj)
    if kind not in _KEYS:
        raise MalformedOpError(f"not a folder record (type {str(kind)[:40]!r})")
    if set(obj) != _KEYS[kind]:
        raise MalformedOpError(f"{kind}: unexpected or missing fields")
    if type(obj["v"]) is not int or obj["v"] != FORMAT:
        raise MalformedOpError(f"{kind}: unknown format version")
    author = _id(author, "author")
    clock = _int(obj["k"], "clock", 1, MAX_CLOCK if seq is None else clock_bound(seq))
    base = _stamp(obj["b"], "base", clock)
    path = _path(obj["p"], "path")
    if kind == "folder/delete":
        return Delete(path, clock, author, base)
    size, mode, mtime, chunks = _content(obj)
    if kind == "folder/put":
        return Put(path, size, mode, mtime, chunks, clock, author, base)
    dst = _path(obj["d"], "rename destination")
    if dst == path:
        raise MalformedOpError("a rename onto itself")
    return Rename(path, dst, size, mode, mtime, chunks, clock, author, base, _stamp(obj["db"], "dst base", clock))


def record_type(obj: Any) -> str | None:
    """The ``type`` of a decoded entry map, if it is a map with a text type; else ``None``."""
    if type(obj) is not dict:
        return None
    kind = obj.get("type")
    return kind if type(kind) is str else None


def decode_chunk(obj: Any) -> bytes:
    """The chunk of a chunk entry already unpacked (``{"type": "chunk", "data": pad(chunk)}``,
    strictly unpadded: :mod:`.padding`); ``MalformedChunkError`` for anything else."""
    if record_type(obj) != "chunk":
        raise MalformedChunkError("not a chunk entry")
    data = chunk_of(obj)
    if len(data) > MAX_CHUNK_BYTES:
        raise MalformedChunkError("a chunk entry with oversized data")
    return data


def is_folder_record(obj: Any) -> bool:
    """Whether a decoded group entry claims to be a folder record (type ``folder/...``), vs a
    log entry, a chunk...; total: any object gives an answer."""
    kind = record_type(obj)
    return kind is not None and kind.startswith("folder/")
