"""The formats of every entry inside a group's feeds, in one place: encode, strict decode, seal, open.

Theory of operation
-------------------
Every entry of a member's feed is ``seal(key, feed_key, seq, plaintext)``: XChaCha20-Poly1305
under the group's encryption key, a random 24-byte nonce in front of the ciphertext, and
``feed key || u64(seq)`` as associated data, so an entry cannot be moved to another feed or
position unnoticed; ``open_entry`` returns ``None`` for anything that does not authenticate.
A plaintext is one msgpack map with a ``type``: ``log`` (the group log), ``chunk`` (a piece of a
file), ``folder/put``, ``folder/delete``, ``folder/rename`` (folder operations),
``device/profile`` (a device's name) or ``filler`` (clock room). Decoders are strict and total
and raise only their own ``MalformedRecordError`` subclass (``MalformedLogEntryError``,
``MalformedChunkError``, ``MalformedOpError``, ``MalformedProfileError``); the
caller skips the entry and reports it. The folder records' types (``Stamp``, ``ChunkRef``,
``Put``, ``Delete``, ``Rename``) are the folder model (:mod:`cobox.folders.model`).

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
3.2 % for 2**16..2**31 bytes (64 KiB chunks), under 6.3 % for 256 bytes..64 KiB (small files
are one chunk each). Sizes below ``MIN_PADDED`` are padded to ``MIN_PADDED``. The msgpack header
of ``data`` depends only on the padded length, so the entry size is a function of the class.

``unpad`` is strict: the padding must be exactly ``0x80`` then zeros, the chunk non-empty, and
the total exactly the class of the chunk's length (one valid padding per chunk); anything else,
and any other shape of entry, is :class:`MalformedChunkError` (the record is refused).

Device profiles
~~~~~~~~~~~~~~~
``{"type": "device/profile", "v": 1, "d": device id, "n": name, "k": kind, "t": time_ms, "s": sig}``:
a device's name in the group (:mod:`cobox.devices` signs and verifies it; it travels in the
device's own feed and, for backup peers that have no feed, as a channel extension with the same
bytes). ``decode_profile`` is strict: exact keys, ``v`` 1, a 32-byte id, a name of 1 to
``MAX_NAME`` UTF-8 bytes without control characters or surrounding spaces, ``kind`` ``member``
or ``backup``, ``time_ms`` an integer from 0 to ``MAX_TIME`` seconds, a 64-byte signature;
anything else raises :class:`MalformedProfileError`.

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

Epoch records
~~~~~~~~~~~~~
A device removal (:mod:`cobox.epochs`) is the one entry that is *not* sealed with the group key:
a backup peer must read it too. It is ``EPOCH_MAGIC || sig(64) || body``, ``body`` the msgpack
map ``{"type": "epoch", "v": 1, "parent", "epoch", "remover", "removed", "members", "seeds",
"time"}``: the discovery key of the epoch it ends (``parent``) and of the one it makes
(``epoch``), the removing device, the removed devices (1 to ``MAX_REMOVED``), and for each
remaining member and backup peer ``[device id, sealed box]`` (at most ``MAX_EPOCH_DEVICES`` in
all; a box is ``SEALED_BYTES``). ``sig`` is the remover's Ed25519 signature over
``EPOCH_SIGN_CONTEXT || body`` (the exact bytes). ``is_epoch_entry`` tells such an entry from a
sealed one (a random nonce starts with the magic with probability 2**-128); every other reader
skips it. ``decode_epoch`` is strict and raises only ``MalformedEpochRecordError``.

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
import os
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.bindings
import nacl.exceptions
from blake3 import blake3

from .errors import (
    MalformedChunkError,
    MalformedEpochRecordError,
    MalformedLogEntryError,
    MalformedOpError,
    MalformedProfileError,
)
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


# -- sealing ------------------------------------------------------------------------------------

NONCE_BYTES = 24
TAG_BYTES = 16
_U64 = struct.Struct(">Q")


def seal(key: bytes, feed_key: bytes, seq: int, plain: bytes) -> bytes:
    """The stored form of entry ``seq`` of ``feed_key``: nonce + ciphertext bound to its place."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, feed_key + _U64.pack(seq), nonce, key)


def open_entry(key: bytes | None, feed_key: bytes, seq: int, data: bytes) -> bytes | None:
    """The plaintext of a stored entry; ``None`` if there is no key or it does not authenticate."""
    if key is None or len(data) < NONCE_BYTES + TAG_BYTES:
        return None
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            data[NONCE_BYTES:], feed_key + _U64.pack(seq), data[:NONCE_BYTES], key)
    except nacl.exceptions.CryptoError:
        return None


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


# -- device profiles ----------------------------------------------------------------------------

PROFILE_TYPE = "device/profile"
PROFILE_KINDS = ("member", "backup")
MAX_NAME = 64  # bytes of UTF-8
SIG_BYTES = 64
MAX_PROFILE_BYTES = 512
_PROFILE_KEYS = {"type", "v", "d", "n", "k", "t", "s"}


def check_name(name: object) -> str:
    """A device name as it may be published; ``MalformedProfileError`` (a ``CoboxError``) if not."""
    if type(name) is not str or name != name.strip() or not name:
        raise MalformedProfileError("name: expected non-empty text without surrounding spaces")
    try:
        if len(name.encode()) > MAX_NAME:
            raise MalformedProfileError(f"name: more than {MAX_NAME} bytes")
    except UnicodeEncodeError:
        raise MalformedProfileError("name: not valid Unicode") from None
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise MalformedProfileError("name: control or unassigned characters")
    return name


def encode_profile(device: bytes, name: str, kind: str, time_ms: int, signature: bytes) -> bytes:
    """The plaintext of a profile entry (and the body of the profile extension)."""
    data: bytes = msgpack.packb({"type": PROFILE_TYPE, "v": FORMAT, "d": device, "n": name, "k": kind,
                                 "t": time_ms, "s": signature}, use_bin_type=True)
    decode_profile(data)  # we write only what we would read
    return data


def decode_profile(data: bytes) -> tuple[bytes, str, str, int, bytes]:
    """``(device, name, kind, time_ms, signature)`` of a profile's bytes; ``MalformedProfileError``
    unless exactly valid (the signature is checked by :mod:`cobox.devices`)."""
    if type(data) is not bytes or len(data) > MAX_PROFILE_BYTES:
        raise MalformedProfileError("profile: not bytes, or too long")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_map_len=len(_PROFILE_KEYS),
                              max_array_len=0, max_ext_len=0)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise MalformedProfileError(f"profile: not msgpack ({type(e).__name__})") from None
    return profile_of(obj)


def profile_of(obj: Any) -> tuple[bytes, str, str, int, bytes]:
    """``decode_profile`` of an entry already unpacked."""
    if type(obj) is not dict or obj.get("type") != PROFILE_TYPE or set(obj) != _PROFILE_KEYS:
        raise MalformedProfileError("not a profile (unexpected or missing fields)")
    if type(obj["v"]) is not int or obj["v"] != FORMAT:
        raise MalformedProfileError("profile: unknown format version")
    device, kind, when, sig = obj["d"], obj["k"], obj["t"], obj["s"]
    if type(device) is not bytes or len(device) != ID_BYTES:
        raise MalformedProfileError(f"profile: the device id must be {ID_BYTES} bytes")
    name = check_name(obj["n"])
    if type(kind) is not str or kind not in PROFILE_KINDS:
        raise MalformedProfileError("profile: kind must be member or backup")
    if type(when) is not int or not 0 <= when <= MAX_TIME * 1000:
        raise MalformedProfileError("profile: time must be milliseconds since the epoch")
    if type(sig) is not bytes or len(sig) != SIG_BYTES:
        raise MalformedProfileError(f"profile: the signature must be {SIG_BYTES} bytes")
    return device, name, kind, when, sig


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
    end = len(padded.rstrip(b"\0")) - 1
    if end < 1 or padded[end] != MARK:
        raise MalformedChunkError("chunk entry: bad padding")
    if padded_size(end + 1) != len(padded):
        raise MalformedChunkError("chunk entry: padding longer than its size class")
    return padded[:end]


def encode_chunk(data: bytes) -> bytes:
    """The plaintext of the entry that stores ``data`` (a chunk)."""
    return msgpack.packb({"type": CHUNK_TYPE, "data": pad(data)}, use_bin_type=True)


def is_chunk_record(obj: Any) -> bool:
    """Whether a decoded entry claims to be a chunk (then decode it with ``chunk_of``)."""
    return type(obj) is dict and obj.get("type") == CHUNK_TYPE


def chunk_of(obj: Any) -> bytes:
    """The chunk a decoded entry stores; ``MalformedChunkError`` for anything else."""
    if type(obj) is not dict or len(obj) != 2 or obj.get("type") != CHUNK_TYPE or "data" not in obj:
        raise MalformedChunkError("not a chunk entry")
    return unpad(obj["data"])


def decode_chunk_entry(plain: bytes) -> bytes:
    """The chunk stored in an entry's plaintext; ``MalformedChunkError`` for anything else."""
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


# -- epoch records (device removal; cobox.epochs) ----------------------------------------------

EPOCH_MAGIC = b"cobox/epoch/v1\n\x00"
EPOCH_SIGN_CONTEXT = b"cobox/epoch-record/v1"
EPOCH_KEYS = {"type", "v", "parent", "epoch", "remover", "removed", "members", "seeds", "time"}
SIG_BYTES = 64
SEALED_BYTES = 32 + 16 + 32  # a libsodium sealed box of a 32-byte secret
MAX_REMOVED = 64
MAX_EPOCH_DEVICES = 1024
MAX_EPOCH_ENTRY = len(EPOCH_MAGIC) + SIG_BYTES + 256 * 1024


@dataclass(frozen=True)
class EpochRecord:
    """A decoded epoch record; ``body`` is what ``sig`` signs, ``digest`` orders records."""

    parent: bytes
    epoch: bytes
    remover: bytes
    removed: tuple[bytes, ...]
    members: tuple[tuple[bytes, bytes], ...]  # (device id, sealed address)
    seeds: tuple[tuple[bytes, bytes], ...]  # (device id, sealed replication key)
    time: float
    sig: bytes
    body: bytes
    digest: bytes

    def entry(self) -> bytes:
        return EPOCH_MAGIC + self.sig + self.body

    def box_for(self, device: bytes) -> tuple[str, bytes] | None:
        """``("member" | "seed", box)`` sealed to ``device``, if any."""
        for role, boxes in (("member", self.members), ("seed", self.seeds)):
            for dev, box in boxes:
                if dev == device:
                    return role, box
        return None


def is_epoch_entry(data: bytes) -> bool:
    return data[:len(EPOCH_MAGIC)] == EPOCH_MAGIC


def epoch_body(parent: bytes, epoch: bytes, remover: bytes, removed: list[bytes],
               members: list[tuple[bytes, bytes]], seeds: list[tuple[bytes, bytes]], when: float) -> bytes:
    return msgpack.packb({"type": "epoch", "v": 1, "parent": parent, "epoch": epoch, "remover": remover,
                          "removed": list(removed), "members": [list(m) for m in members],
                          "seeds": [list(m) for m in seeds], "time": float(when)}, use_bin_type=True)


def _eid(x: Any, what: str) -> bytes:
    if type(x) is not bytes or len(x) != ID_BYTES:
        raise MalformedEpochRecordError(f"epoch record: {what} is not a 32-byte id")
    return x


def _boxes(x: Any, what: str) -> tuple[tuple[bytes, bytes], ...]:
    if type(x) is not list or len(x) > MAX_EPOCH_DEVICES:
        raise MalformedEpochRecordError(f"epoch record: {what} is not a list of at most {MAX_EPOCH_DEVICES}")
    out = []
    for item in x:
        if type(item) is not list or len(item) != 2 or type(item[1]) is not bytes or len(item[1]) != SEALED_BYTES:
            raise MalformedEpochRecordError(f"epoch record: {what} holds something else than [id, sealed box]")
        out.append((_eid(item[0], what), item[1]))
    return tuple(out)


def decode_epoch(data: bytes) -> EpochRecord:
    """The epoch record of an entry (signature not checked here: ``cobox.epochs.verify``);
    ``MalformedEpochRecordError`` unless exactly well-formed."""
    if type(data) is not bytes or not is_epoch_entry(data) or len(data) > MAX_EPOCH_ENTRY:
        raise MalformedEpochRecordError("not an epoch record")
    sig, body = data[len(EPOCH_MAGIC):len(EPOCH_MAGIC) + SIG_BYTES], data[len(EPOCH_MAGIC) + SIG_BYTES:]
    if len(sig) != SIG_BYTES:
        raise MalformedEpochRecordError("epoch record: truncated")
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise MalformedEpochRecordError(f"epoch record: not msgpack ({type(e).__name__})") from None
    if type(obj) is not dict or set(obj) != EPOCH_KEYS or obj["type"] != "epoch":
        raise MalformedEpochRecordError("epoch record: unexpected or missing fields")
    if type(obj["v"]) is not int or obj["v"] != 1:
        raise MalformedEpochRecordError("epoch record: unknown format version")
    when = obj["time"]
    if type(when) is not float or not math.isfinite(when) or not 0 <= when <= MAX_TIME:
        raise MalformedEpochRecordError("epoch record: time out of range")
    removed = obj["removed"]
    if type(removed) is not list or not 1 <= len(removed) <= MAX_REMOVED:
        raise MalformedEpochRecordError(f"epoch record: removes 1 to {MAX_REMOVED} devices")
    removed_ids = tuple(_eid(r, "removed device") for r in removed)
    members, seeds = _boxes(obj["members"], "members"), _boxes(obj["seeds"], "seeds")
    if len(members) + len(seeds) > MAX_EPOCH_DEVICES:
        raise MalformedEpochRecordError("epoch record: too many devices")
    remover = _eid(obj["remover"], "remover")
    named = [d for d, _ in members] + [d for d, _ in seeds]
    if len(set(named)) != len(named) or len(set(removed_ids)) != len(removed_ids):
        raise MalformedEpochRecordError("epoch record: a device named twice")
    if set(removed_ids) & (set(named) | {remover}):
        raise MalformedEpochRecordError("epoch record: a removed device is also kept (or removes itself)")
    if remover not in {d for d, _ in members}:
        raise MalformedEpochRecordError("epoch record: the remover does not keep itself")
    return EpochRecord(_eid(obj["parent"], "parent"), _eid(obj["epoch"], "epoch"), remover, removed_ids, members,
                       seeds, when, sig, body, blake3(data).digest())
