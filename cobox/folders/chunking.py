"""Content-defined chunking (FastCDC with normalized chunking), streamed.

Theory of operation
-------------------
A file is cut into chunks whose boundaries depend on the content only, so that an edit moves
the boundaries near it and nowhere else, and equal content yields equal chunks on every device
(which is what deduplication needs).

The boundary test is FastCDC's gear hash. With a table ``GEAR`` of 256 pseudo-random 64-bit
words, the hash of the 64-byte window ending at byte ``i`` is::

    h(i) = sum(GEAR[b[i - k]] << k for k in range(64))  mod 2**64

which is what the classic loop ``h = (h << 1) + GEAR[b]`` computes once 64 bytes have gone
through it (older bytes are shifted out). Here the hash is always the full 64-byte window
(``min >= 64`` keeps the window inside the chunk), so it does not depend on where the chunk
started, and it is computed for a whole segment at once with numpy in six shift-and-add steps
(window 1, 2, 4, ... 64).

A chunk of length ``L`` may end after byte ``L - 1`` when ``min <= L < max`` and
``h(L - 1) & mask == 0``, where ``mask`` is ``MASK_S`` (bits(avg) + 2 top bits, harder) while
``L < avg`` and ``MASK_L`` (bits(avg) - 2 top bits, easier) from ``avg`` on: FastCDC's
normalized chunking (level 2), which keeps sizes close to ``avg``. The first length that passes
is the cut; with none before ``max``, the chunk is ``max`` bytes. Top bits are used because the
low bits of a gear hash depend on the last few bytes only. The last chunk is what remains (it
may be shorter than ``min``; an empty stream has no chunks).

Keyed boundaries: the table is secret per group. :class:`Chunker` derives it from the group's
chunker key (``networker.keys.chunker_key``, itself derived from the encryption key) as 256
words of BLAKE3 keyed-hash output, as restic picks a random polynomial per repository and Borg a
chunker seed. Every member holds the key, so equal content still yields equal chunks across the
group (deduplication works), but someone holding only ciphertext (a backup peer) cannot chunk a
candidate file the way the group does, so chunk sizes do not tell which known file is stored
(entry sizes are also padded, :mod:`cobox.folders.padding`). Content ids (``content_id``) are
therefore per group too. The masks stay public; changing the table derivation or the masks
changes every boundary (no deduplication against older data): treat them as a format constant.
``UNKEYED`` (a table from a public BLAKE3 context) is for tests and tools only, never for a
group's data.

Memory: the reader keeps at most ``max`` bytes plus one read (``READ_SIZE`` for file objects,
one piece for an iterator of bytes) plus a hashing segment of ``SEGMENT`` words.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

import blake3
import numpy as np

GEAR_CONTEXT = "cobox 2025 folders fastcdc gear table v1"  # the unkeyed (test) table only
GEAR_LABEL = b"cobox 2026-12 fastcdc gear table"  # hashed under a group's chunker key


def _table(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def gear_table(key: bytes) -> np.ndarray:
    """The 256-word gear table of a group, from its 32-byte chunker key."""
    if type(key) is not bytes or len(key) != 32:
        raise ValueError("a chunker key is 32 bytes")
    return _table(blake3.blake3(GEAR_LABEL, key=key).digest(length=256 * 8))


GEAR = _table(blake3.blake3(derive_key_context=GEAR_CONTEXT).update(b"gear").digest(length=256 * 8))
WINDOW = 64
READ_SIZE = 64 * 1024
SEGMENT = 16 * 1024  # lengths tested per numpy pass
AVG, MIN, MAX = 64 * 1024, 16 * 1024, 256 * 1024


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def chunk_id(data: bytes | memoryview) -> bytes:
    """A chunk's identity: its BLAKE3 hash (32 bytes)."""
    return blake3.blake3(data).digest()


def content_id(chunk_ids: Iterable[bytes]) -> bytes:
    """A file version's content identity: BLAKE3 over its chunk ids in order.

    Both a scanner (from the file) and a reader of a ``Put`` (from its chunk list) can compute
    it, so it tells whether a local file holds a given version without fetching anything."""
    h = blake3.blake3()
    for cid in chunk_ids:
        h.update(cid)
    return h.digest()


def masks(avg: int) -> tuple[int, int]:
    """``(MASK_S, MASK_L)`` for an average size: top bits(avg)+2 and bits(avg)-2 bits set."""
    bits = avg.bit_length() - 1
    def top(n: int) -> int:
        return ((1 << n) - 1) << (64 - n)
    return top(bits + 2), top(bits - 2)


def window_hashes(data: bytes | bytearray | memoryview, gear: np.ndarray = GEAR) -> np.ndarray:
    """Gear hashes of every full 64-byte window of ``data``: item ``j`` is ``h(j + 63)``."""
    x = gear[np.frombuffer(data, dtype=np.uint8)]
    width = 1
    while width < WINDOW:
        x = x[width:] + (x[:-width] << np.uint64(width))
        width *= 2
    return x


def find_cut(view: memoryview, avg: int, lo: int, hi: int, final: bool, gear: np.ndarray = GEAR) -> int:
    """The length of the chunk that starts at ``view[0]``; ``view`` holds at least ``hi``
    bytes unless ``final`` (the stream has ended)."""
    n = len(view)
    if n <= lo:
        return n
    mask_s, mask_l = masks(avg)
    end = hi if n >= hi else n  # lengths tested: [lo, end)
    a = lo
    while a < end:
        b = a + SEGMENT if a + SEGMENT < end else end
        h = window_hashes(view[a - WINDOW:b - 1], gear)  # h[j] tests length a + j
        if a < avg:
            k = (avg if avg < b else b) - a
            hits = np.flatnonzero((h[:k] & np.uint64(mask_s)) == 0)
            if hits.size:
                return a + int(hits[0])
            if b > avg:
                hits = np.flatnonzero((h[k:] & np.uint64(mask_l)) == 0)
                if hits.size:
                    return avg + int(hits[0])
        else:
            hits = np.flatnonzero((h & np.uint64(mask_l)) == 0)
            if hits.size:
                return a + int(hits[0])
        a = b
    return end  # no boundary: a chunk of max bytes, or the rest of the stream


def _pieces(stream: BinaryIO | _Readable | Iterable[bytes]) -> Iterator[bytes]:
    read = getattr(stream, "read", None)
    if read is not None:
        while piece := read(READ_SIZE):
            yield piece
    else:
        for piece in stream:  # type: ignore[union-attr]
            if piece:
                yield piece


def chunks(stream: BinaryIO | _Readable | Iterable[bytes], avg: int = AVG, min: int = MIN,
           max: int = MAX, *, gear: np.ndarray = GEAR) -> Iterator[bytes]:
    """Cut a binary file object (anything with ``read``) or an iterator of bytes into chunks
    (with the unkeyed table unless ``gear`` is given: use :class:`Chunker` for a group's data)."""
    lo, hi = min, max
    if not (WINDOW <= lo < avg < hi):
        raise ValueError("chunk sizes must satisfy 64 <= min < avg < max")
    if avg & (avg - 1):
        raise ValueError("the average chunk size must be a power of two")
    buf = bytearray()
    source = _pieces(stream)
    final = False
    while True:
        while not final and len(buf) < hi:
            piece = next(source, None)
            if piece is None:
                final = True
            else:
                buf += piece
        if not buf:
            return
        with memoryview(buf) as view:
            cut = find_cut(view, avg, lo, hi, final, gear)
            out = bytes(view[:cut])
        del buf[:cut]
        yield out


def hash_content(stream: BinaryIO | _Readable | Iterable[bytes], *, gear: np.ndarray = GEAR) -> tuple[bytes, int]:
    """``(content_id, size)`` of a stream, chunked with the default sizes, in bounded memory."""
    return _content_of(chunks(stream, gear=gear))


def _content_of(pieces: Iterable[bytes]) -> tuple[bytes, int]:
    h = blake3.blake3()
    size = 0
    for c in pieces:
        h.update(chunk_id(c))
        size += len(c)
    return h.digest(), size


class Chunker:
    """A group's chunker: FastCDC with the gear table of the group's chunker key."""

    __slots__ = ("avg", "gear", "max", "min")

    def __init__(self, key: bytes | None, avg: int = AVG, min: int = MIN, max: int = MAX) -> None:
        self.gear = gear_table(key) if key is not None else GEAR
        self.avg, self.min, self.max = avg, min, max

    def __repr__(self) -> str:
        return f"Chunker(avg={self.avg})"  # never the table

    def chunks(self, stream: BinaryIO | _Readable | Iterable[bytes]) -> Iterator[bytes]:
        return chunks(stream, self.avg, self.min, self.max, gear=self.gear)

    def hash_content(self, stream: BinaryIO | _Readable | Iterable[bytes]) -> tuple[bytes, int]:
        """``(content_id, size)`` of a stream as this group chunks it."""
        return _content_of(self.chunks(stream))


UNKEYED = Chunker(None)
