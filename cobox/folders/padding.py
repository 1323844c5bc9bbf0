"""Chunk entries, padded to size classes so that their size does not tell a chunk's size.

Theory of operation
-------------------
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
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import MalformedChunkError

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


def decode_chunk(plain: bytes) -> bytes:
    """The chunk stored in an entry's plaintext; ``MalformedChunkError`` for anything else."""
    try:
        obj = msgpack.unpackb(plain, raw=False, max_bin_len=MAX_PADDED, max_str_len=16, max_array_len=0,
                              max_map_len=2, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise MalformedChunkError(f"chunk entry: not msgpack ({type(e).__name__})") from None
    return chunk_of(obj)
