"""The formats of every entry inside a group's feeds, in one place: encode, strict decode, seal, open.

Theory of operation
-------------------
Every entry of a member's feed is ``seal(key, feed_key, seq, plaintext)``: XChaCha20-Poly1305
under the group's encryption key, a synthetic 24-byte nonce in front of the ciphertext (the same
place and plaintext always seal to the same bytes), and
``feed key || u64(seq)`` as associated data, so an entry cannot be moved to another feed or
position unnoticed; ``open_entry`` returns ``None`` for anything that does not authenticate.
Sealing has a module of its own (:mod:`cobox.entries_seal`: the synthetic nonce, and why it is
safe).

A plaintext is one msgpack map with a ``type``: ``log`` (the group log), ``chunk`` (a piece of a
file), ``folder/put``, ``folder/delete``, ``folder/rename``, ``folder/dir`` (folder operations),
``device/profile`` (a device's name) or ``filler`` (clock room). Decoders are strict and total
and raise only their own ``MalformedRecordError`` subclass (``MalformedLogEntryError``,
``MalformedChunkError``, ``MalformedOpError``, ``MalformedProfileError``); the
caller skips the entry and reports it. The folder records' types (``Stamp``, ``ChunkRef``,
``Put``, ``Delete``, ``Rename``) are the folder model (:mod:`cobox.folders.model`).

One entry is not sealed: an epoch record (a device removal), which a backup peer must read too.
It starts with ``EPOCH_MAGIC``; ``is_epoch_entry`` tells it from a sealed entry (a random nonce
(a PRF output) starts with the magic with probability 2**-128) and every reader but ``cobox.removal`` skips it.

This module holds the envelope (``unpack``, ``record_type``, the entry kinds) and the formats
below; sealing and two formats have a module of their own, with the same rules:
:mod:`cobox.entries_seal`, :mod:`cobox.entries_profile` (device profiles) and
:mod:`cobox.entries_epoch` (epoch records).

Log entries
~~~~~~~~~~~
``{"type": "log", "text", "time"}``; the author is the feed's owner, never a field.
``decode_log`` is strict: exact keys, ``text`` a string of at most ``MAX_TEXT`` bytes, ``time``
a finite number between 0 and ``MAX_TIME``.

Chunk entries
~~~~~~~~~~~~~
A chunk entry is the msgpack map ``{"type": "chunk", "data": pad(chunk)}``, encrypted like every
entry of the group (``Group.seal``: nonce + XChaCha20-Poly1305). Without padding its size would
be the chunk size plus a constant, and chunk sizes of a known file are a fingerprint of it.

``pad`` appends one ``0x80`` byte and then zero bytes up to ``padded_size(len(chunk) + 1)``, a
Padmé size class (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
Communication with PURBs", PETS 2019): a length ``L`` with ``E = floor(log2 L)`` keeps its top
``floor(log2 E) + 1`` bits and has the lower ones rounded up, so at most ``O(log log L)`` bits
of the length remain visible and the overhead is below ``1 / 2**(floor(log2 E) + 1)``: under
3.2 % for 2**16..2**31 bytes (chunks: 32 KiB to 512 KiB), under 6.3 % for 256 bytes..64 KiB (small files
are one chunk each). Sizes below ``MIN_PADDED`` are padded to ``MIN_PADDED``. The msgpack header
of ``data`` depends only on the padded length, so the entry size is a function of the class.

``unpad`` is strict: the padding must be exactly ``0x80`` then zeros, the chunk non-empty, and
the total exactly the class of the chunk's length (one valid padding per chunk); anything else,
and any other shape of entry, is :class:`MalformedChunkError` (the record is refused).

Folder operations
~~~~~~~~~~~~~~~~~
Every change a device makes to a synced folder is one record, encrypted as one entry of the
device's own feed of the group (``Group.seal``). Four records exist:

``Put(path, size, mode, mtime, chunks, clock, author, base)``
    The file at ``path`` now has this content: the concatenation of ``chunks``, each a
    ``ChunkRef(id, feed, seq, size)`` naming the BLAKE3 id of the plaintext chunk and where its
    encrypted bytes live (entry ``seq`` of feed ``feed``), so a reader can fetch and verify it.
``Delete(path, clock, author, base, mtime)``
    The file at ``path`` is gone; ``mtime`` is when the deletion was recorded (what
    ``folder history`` shows as its date).
``Rename(src, dst, size, mode, mtime, chunks, clock, author, base, dst_base)``
    ``src`` moved to ``dst``: for the merge exactly a ``Delete(src, base)`` plus a
    ``Put(dst, ..., dst_base)`` with the same stamp, written as one record so it lands
    atomically and so a device that holds ``src`` can move its file instead of downloading it.
    It carries the content (same chunk refs, nothing re-stored).
``Mkdir(path, mode, clock, author, base)``
    A directory is at ``path`` (so empty directories are synced too); removed by a ``Delete``.

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

Encoding: a msgpack map with a ``type`` (``folder/put``, ``folder/delete``, ``folder/rename``, ``folder/dir``),
a format version ``v`` (1) and short keys. Chunk refs are ``[id, feed index, seq, size]`` into
a table ``f`` of feed keys, which keeps a ``Put`` of ``MAX_CHUNKS`` chunks under the feed's entry
size limit. ``decode_op`` is strict and total: exact key set, exact types (a bool is not an
int), 32-byte ids, normalized paths, sizes that add up (at most ``MAX_FILE_BYTES`` per op),
``base.clock < clock``, the clock bound; anything else raises ``MalformedOpError`` and nothing
else (the caller skips that entry and reports it). ``decode_chunk`` is the same for chunk
entries ``{"type": "chunk", "data": ...}`` (``MalformedChunkError``).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack

from .errors import MalformedChunkError, MalformedLogEntryError, MalformedOpError
from .folders.model import ChunkRef, Delete, Mkdir, Op, Put, Rename, Stamp
from .folders.paths import is_normal

FORMAT = 1
ID_BYTES = 32
MAX_CHUNKS = 65536
MAX_CHUNK_BYTES = 4 * 1024 * 1024 - 64 * 1024 - 1  # the largest chunk whose padded entry fits one feed entry
MAX_INT = 2**63 - 1
MAX_CLOCK = 2**64 - 1  # msgpack uint64
CLOCK_STEP = 2**32  # clock room per entry of a feed
MAX_FILE_BYTES = 64 * 1024**3  # content of one Put or Rename
MAX_ENTRY_BYTES = 8 * 1024 * 1024  # no feed entry is larger (storage caps it lower)
TYPES = ("folder/put", "folder/delete", "folder/rename", "folder/dir")
PROFILE_TYPE = "device/profile"  # its codec: cobox.entries_profile
EPOCH_MAGIC = b"cobox/epoch/v1\n\x00"  # starts an epoch record, the one entry not sealed (cobox.entries_epoch)


def is_epoch_entry(data: bytes) -> bool:
    """Whether a stored entry is an epoch record (unsealed) rather than a sealed entry."""
    return data[:len(EPOCH_MAGIC)] == EPOCH_MAGIC


# -- log entries --------------------------------------------------------------------------------

MAX_TEXT = 64 * 1024
MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second ``datetime`` can show
_LOG_KEYS = {"type", "text", "time"}


def encode_log(text: str, when: float) -> bytes:
    if len(text.encode()) > MAX_TEXT:
        raise ValueError(f"an entry holds at most {MAX_TEXT} bytes of text")
    return msgpack.packb({"type": "log", "text": text, "time": when}, use_bin_type=True)


def decode_log(obj: Any) -> tuple[float, str]:
    """``(time, text)`` of an unpacked log entry; ``MalformedLogEntryError`` unless exactly valid."""
    if type(obj) is not dict or obj.get("type") != "log" or set(obj) != _LOG_KEYS:
        raise MalformedLogEntryError("not a log entry (unexpected or missing fields)")
    text, when = obj["text"], obj["time"]
    if type(text) is not str or len(text) > MAX_TEXT:
        raise MalformedLogEntryError("text: expected a string of at most 64 KiB")
    try:
        if len(text.encode()) > MAX_TEXT:
            raise MalformedLogEntryError("text: more than 64 KiB")
    except UnicodeEncodeError:
        raise MalformedLogEntryError("text: not valid Unicode") from None
    if type(when) not in (int, float) or not math.isfinite(when) or not 0 <= when <= MAX_TIME:
        raise MalformedLogEntryError("time: expected a finite number of seconds since the epoch")
    return float(when), text


# -- chunk entries ------------------------------------------------------------------------------

CHUNK_TYPE = "chunk"
MARK = 0x80
MIN_PADDED = 256
MAX_PADDED = 4 * 1024 * 1024 - 128  # within one feed entry, with the nonce, tag and msgpack header


def padded_size(n: int) -> int:
    """The Padmé size class of a length ``n`` (at least ``MIN_PADDED``)."""
    if n <= MIN_PADDED:
        return MIN_PADDED
    e = n.bit_length() - 1
    low = e - e.bit_length()
    mask = (1 << low) - 1
    return (n + mask) & ~mask


def pad(data: bytes) -> bytes:
    if not data:
        raise ValueError("a chunk is never empty")
    n = len(data) + 1
    return b"".join((data, bytes([MARK]), bytes(padded_size(n) - n)))


def unpad(padded: bytes) -> bytes:
    if type(padded) is not bytes or not MIN_PADDED <= len(padded) <= MAX_PADDED:
        raise MalformedChunkError("chunk entry: padded data of a bad type or size")
    return padded[:_chunk_length(padded, 0, len(padded))]


def _chunk_length(buf: bytes, start: int, stop: int) -> int:
    """The length of the chunk padded in ``buf[start:stop]``, its padding strictly checked (see
    ``unpad``). The last non-zero byte is found by stripping ever longer tails, not a copy of
    the whole (the padding is a few percent of the size at most, 255 bytes below 256)."""
    tail = 1024
    while True:
        lo = max(start, stop - tail)
        kept = len(buf[lo:stop].rstrip(b"\0"))
        if kept or lo == start:
            break
        tail *= 8
    end = lo + kept - 1 - start  # where the mark must be
    if end < 1 or buf[start + end] != MARK:
        raise MalformedChunkError("chunk entry: bad padding")
    if padded_size(end + 1) != stop - start:
        raise MalformedChunkError("chunk entry: padding longer than its size class")
    return end


# msgpack of {"type": "chunk", "data": b""} without the empty bin's header: what precedes the
# header of ``data`` in every chunk entry (msgpack keeps a dict's order).
_CHUNK_PREFIX = msgpack.packb({"type": CHUNK_TYPE, "data": b""}, use_bin_type=True)[:-2]
_MARK_BYTE = bytes([MARK])
_BIN16, _BIN32 = struct.Struct(">BH"), struct.Struct(">BI")


def encode_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """The plaintext of the entry that stores ``data`` (a chunk): the bytes of
    ``msgpack.packb({"type": "chunk", "data": pad(data)})``, written in one copy (msgpack would
    copy the padded chunk three times: into ``pad``'s result, its buffer and the bytes it returns)."""
    if not data:
        raise ValueError("a chunk is never empty")
    n = len(data) + 1
    size = padded_size(n)  # at least MIN_PADDED (256): a bin 16 or bin 32
    header = _BIN16.pack(0xC5, size) if size < 1 << 16 else _BIN32.pack(0xC6, size)
    return b"".join((_CHUNK_PREFIX, header, data, _MARK_BYTE, bytes(size - n)))


def is_chunk_record(obj: Any) -> bool:
    """Whether a decoded entry claims to be a chunk (then decode it with ``chunk_of``)."""
    return type(obj) is dict and obj.get("type") == CHUNK_TYPE


def chunk_of(obj: Any) -> bytes:
    """The chunk a decoded entry stores; ``MalformedChunkError`` for anything else."""
    if type(obj) is not dict or len(obj) != 2 or obj.get("type") != CHUNK_TYPE or "data" not in obj:
        raise MalformedChunkError("not a chunk entry")
    return unpad(obj["data"])


def is_chunk_plaintext(plain: bytes) -> bool:
    """Whether ``plain`` starts the way ``encode_chunk`` writes a chunk entry (then
    ``decode_chunk_entry`` reads it in place); anything else is for ``unpack``."""
    return type(plain) is bytes and plain.startswith(_CHUNK_PREFIX)


def decode_chunk_entry(plain: bytes) -> bytes:
    """The chunk stored in an entry's plaintext; ``MalformedChunkError`` for anything else.
    The encoding ``encode_chunk`` writes is read in place (one copy: the chunk returned); any
    other encoding of the same map goes through msgpack, with the same checks."""
    if type(plain) is bytes and plain.startswith(_CHUNK_PREFIX):
        at = len(_CHUNK_PREFIX)
        tag = plain[at] if len(plain) > at else 0
        if tag == 0xC5 or tag == 0xC6:
            head = _BIN16 if tag == 0xC5 else _BIN32
            off = at + head.size
            size = head.unpack_from(plain, at)[1] if len(plain) >= off else -1
            if off + size == len(plain) and MIN_PADDED <= size <= MAX_PADDED:
                return plain[off:off + _chunk_length(plain, off, len(plain))]
    try:
        obj = msgpack.unpackb(plain, raw=False, max_bin_len=MAX_PADDED, max_str_len=16, max_array_len=0,
                              max_map_len=2, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise MalformedChunkError(f"chunk entry: not msgpack ({type(e).__name__})") from None
    return chunk_of(obj)


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
        obj.update(type="folder/delete", p=op.path, t=op.mtime)
    elif isinstance(op, Mkdir):
        obj.update(type="folder/dir", p=op.path, m=op.mode)
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
    "folder/delete": {"type", "v", "k", "b", "p", "t"},
    "folder/rename": {"type", "v", "k", "b", "p", "s", "m", "t", "f", "c", "d", "db"},
    "folder/dir": {"type", "v", "k", "b", "p", "m"},
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
        return Delete(path, clock, author, base, _int(obj["t"], "mtime"))
    if kind == "folder/dir":
        return Mkdir(path, _int(obj["m"], "mode", 0, 0o7777), clock, author, base)
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


