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

The table is derived from BLAKE3 with a fixed context (``GEAR_CONTEXT``): changing it, or the
masks, changes every boundary and so defeats deduplication against older data; treat them as
a format constant.

Memory: the reader keeps at most ``max`` bytes plus one read (``READ_SIZE`` for file objects,
one piece for an iterator of bytes) plus a hashing segment of ``SEGMENT`` words.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

import blake3
import numpy as np

GEAR_CONTEXT = "cobox 2025 folders fastcdc gear table v1"
GEAR = np.frombuffer(blake3.blake3(derive_key_context=GEAR_CONTEXT).update(b"gear").digest(length=256 * 8),
                     dtype="<u8").astype(np.uint64)
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


def window_hashes(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Gear hashes of every full 64-byte window of ``data``: item ``j`` is ``h(j + 63)``."""
    x = GEAR[np.frombuffer(data, dtype=np.uint8)]
    width = 1
    while width < WINDOW:
        x = x[width:] + (x[:-width] << np.uint64(width))
        width *= 2
    return x


def find_cut(view: memoryview, avg: int, lo: int, hi: int, final: bool) -> int:
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
        h = window_hashes(view[a - WINDOW:b - 1])  # h[j] tests length a + j
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
           max: int = MAX) -> Iterator[bytes]:
    """Cut a binary file object (anything with ``read``) or an iterator of bytes into chunks."""
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
            cut = find_cut(view, avg, lo, hi, final)
            out = bytes(view[:cut])
        del buf[:cut]
        yield out


def hash_content(stream: BinaryIO | _Readable | Iterable[bytes]) -> tuple[bytes, int]:
    """``(content_id, size)`` of a stream, chunked with the default sizes, in bounded memory."""
    h = blake3.blake3()
    size = 0
    for c in chunks(stream):
        h.update(chunk_id(c))
        size += len(c)
    return h.digest(), size
