"""Content-defined chunking (FastCDC 2020, normalized chunking), keyed per group, streamed.

Theory of operation
-------------------
A file is cut into chunks whose boundaries depend on the content only, so that an edit moves
the boundaries near it and nowhere else, and equal content yields equal chunks on every device
(which is what deduplication needs).

The cutting is FastCDC 2020 (Xia et al., "The Design of Fast and Lightweight Resemblance
Detection and Deduplication", as ``pyfastcdc`` 0.3 implements it in Cython, the loop running
without the GIL): a gear hash ``h = (h << 1) + G[b]`` over the bytes, rolled two bytes per step,
tested against a spread mask, with normalized chunking at level 2 (a harder mask before the
average size, an easier one after it), no cut before ``min`` bytes and a forced cut at ``max``.
Sizes: ``AVG`` 128 KiB, ``MIN`` 32 KiB, ``MAX`` 512 KiB (FastCDC skips the first ``min`` bytes of
each chunk, so the mean chunk is about ``avg + min``, 160 KiB). The last chunk is what remains;
an empty stream has no chunks. These parameters and the seed derivation below are a format
constant: changing them moves every boundary (no deduplication against older data).

Why 128 KiB (64 KiB until 2026-12-04): every chunk is a feed entry, and each entry costs both
devices a row, tree nodes, a share of a proof, an encryption, a hash call and the interpreter's
steps around them; fewer entries, less CPU (``bench/README.md``, session 14). Larger chunks
make an edit send more: the chunks around the edit's ends travel whole. ``bench/edit_chunks.py``
(60 seeds and places of a 1 MiB edit, with a 1 GiB file's chunk list): 128 KiB sends a median
1.58 MiB, 2.21 MiB at most, and over 2 MiB in 4 of 60; 64 KiB 1.74 MiB, 2.15, 2 of 60; 256 KiB
(64 KiB to 1 MiB) 1.71 MiB but 3.4 at most and over 2 MiB in 18 of 60. Syncthing's blocks for
large files are 128 KiB to 512 KiB. What was recorded with the old sizes stays valid (a version
lists its chunks with their sizes); only a file recorded again after the change is cut anew, so
its first new version after it shares no chunks with the ones before.

Keyed boundaries (the hostile-member issue): a backup peer holds only ciphertext, but it sees
entry sizes; if it could chunk a candidate file the group's way it could tell which known file
is stored. So the gear table is secret per group: ``G[i] = GEAR[i] XOR seed``, with ``GEAR``
FastCDC's public table and ``seed`` 63 bits of keyed BLAKE3 of ``SEED_LABEL`` under the group's
chunker key (``networker.keys.chunker_key``, derived from the encryption key; members only).
Every member derives the same seed, so equal content still yields equal chunks across the
group (deduplication works); content ids (``content_id``) are per group too. ``UNKEYED`` (a
seed from a public BLAKE3 context) is for tests and tools only, never for a group's data.

What the seed is worth, written down: there are 2**63 seeds (pyfastcdc takes ``seed << 1`` as a
uint64), and without the chunker key the seed is uniformly random (BLAKE3 is a PRF under its key). The masks of FastCDC
2020 use bits 12..47 of the hash, and a left-shifting gear hash carries only upwards, so the
cuts depend on the low 48 bits of the seed: an exhaustive test is 2**48 chunkings of the
candidate. A search bit-group by bit-group is conceivable (the low mask bits depend on the low
seed bits only), but each guess can only be checked against chunk sizes seen through Padmé
size classes (:mod:`cobox.folders.padding`: a 128 KiB chunk is seen to about 4 KiB), which
leaves many cut candidates per observed chunk. This is weaker than the 256 secret words the
numpy chunker used before; it is what a compiled chunker from a maintained package offers (a
3-4x faster sender). What leaks without the key is what leaked before: the number of chunk
entries and their size classes.

Memory: at most ``2 * max`` bytes of buffer (pyfastcdc's stream buffer, 1 MiB), plus one chunk
handed out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

import blake3
from pyfastcdc import FastCDC

SEED_CONTEXT = "cobox 2026-12 folders fastcdc2020 seed v1"  # the unkeyed (test) seed only
SEED_LABEL = b"cobox 2026-12 fastcdc2020 seed"  # hashed under a group's chunker key
NORMALIZATION = 2  # FastCDC's normalized chunking level
READ_SIZE = 1024 * 1024  # bytes per read of a file
AVG, MIN, MAX = 128 * 1024, 32 * 1024, 512 * 1024


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def _seed(digest: bytes) -> int:
    # 63 bits: pyfastcdc computes ``seed << 1`` as a uint64; 0 would mean FastCDC's public table
    return (int.from_bytes(digest[:8], "little") & (2**63 - 1)) or 1


def chunker_seed(key: bytes) -> int:
    """The 63-bit gear seed of a group, from its 32-byte chunker key."""
    if type(key) is not bytes or len(key) != 32:
        raise ValueError("a chunker key is 32 bytes")
    return _seed(blake3.blake3(SEED_LABEL, key=key).digest(length=8))


UNKEYED_SEED = _seed(blake3.blake3(derive_key_context=SEED_CONTEXT).update(b"seed").digest(length=8))


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """A chunk's identity: its BLAKE3 hash (32 bytes)."""
    return blake3.blake3(data, max_threads=1).digest()


def content_id(chunk_ids: Iterable[bytes]) -> bytes:
    """A file version's content identity: BLAKE3 over its chunk ids in order.

    Both a scanner (from the file) and a reader of a ``Put`` (from its chunk list) can compute
    it, so it tells whether a local file holds a given version without fetching anything."""
    h = blake3.blake3()
    for cid in chunk_ids:
        h.update(cid)
    return h.digest()


class _IterReader:
    """``readinto`` over an iterator of bytes (pieces of any size)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._it = iter(pieces)
        self._left = memoryview(b"")

    def readinto(self, buf: memoryview) -> int:
        while not self._left:
            piece = next(self._it, None)
            if piece is None:
                return 0
            self._left = memoryview(piece)
        n = min(len(buf), len(self._left))
        buf[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def _check(avg: int, min: int, max: int) -> None:
    if not (64 <= min < avg < max):
        raise ValueError("chunk sizes must satisfy 64 <= min < avg < max")
    if avg & (avg - 1) or avg < 256:
        raise ValueError("the average chunk size must be a power of two, at least 256")
    if max < 1024:
        raise ValueError("the maximum chunk size is at least 1024")


def views(stream: BinaryIO | _Readable | Iterable[bytes], cdc: FastCDC) -> Iterator[memoryview]:
    """The chunks of ``stream`` as memoryviews into the chunker's buffer, each valid only
    until the next is asked for (copy what you keep)."""
    reader = stream if hasattr(stream, "readinto") or hasattr(stream, "read") else _IterReader(stream)  # type: ignore[arg-type]
    for c in cdc.cut_stream(reader):  # type: ignore[arg-type]
        yield c.data


def chunks(stream: BinaryIO | _Readable | Iterable[bytes], avg: int = AVG, min: int = MIN,
           max: int = MAX, *, seed: int = UNKEYED_SEED) -> Iterator[bytes]:
    """Cut a binary file object (``readinto`` or ``read``) or an iterator of bytes into chunks
    (with the unkeyed seed unless ``seed`` is given: use :class:`Chunker` for a group's data)."""
    _check(avg, min, max)
    cdc = FastCDC(avg, min_size=min, max_size=max, normalized_chunking=NORMALIZATION, seed=seed)
    for view in views(stream, cdc):
        yield bytes(view)


def hash_content(stream: BinaryIO | _Readable | Iterable[bytes], *, seed: int = UNKEYED_SEED) -> tuple[bytes, int]:
    """``(content_id, size)`` of a stream, chunked with the default sizes, in bounded memory."""
    return Chunker.from_seed(seed).hash_content(stream)


class Chunker:
    """A group's chunker: FastCDC 2020 with the gear seed of the group's chunker key."""

    __slots__ = ("avg", "max", "min", "seed")

    def __init__(self, key: bytes | None, avg: int = AVG, min: int = MIN, max: int = MAX) -> None:
        _check(avg, min, max)
        self.seed = chunker_seed(key) if key is not None else UNKEYED_SEED
        self.avg, self.min, self.max = avg, min, max

    @classmethod
    def from_seed(cls, seed: int) -> Chunker:
        c = cls(None)
        c.seed = seed
        return c

    def __repr__(self) -> str:
        return f"Chunker(avg={self.avg})"  # never the seed

    def cdc(self) -> FastCDC:
        """A FastCDC cutter with this group's seed (one per thread: it is not thread-safe)."""
        return FastCDC(self.avg, min_size=self.min, max_size=self.max, normalized_chunking=NORMALIZATION,
                       seed=self.seed)

    def chunks(self, stream: BinaryIO | _Readable | Iterable[bytes]) -> Iterator[bytes]:
        return chunks(stream, self.avg, self.min, self.max, seed=self.seed)

    def views(self, stream: BinaryIO | _Readable | Iterable[bytes]) -> Iterator[memoryview]:
        """Chunks as short-lived memoryviews (see :func:`views`): no copy."""
        return views(stream, self.cdc())

    def hash_content(self, stream: BinaryIO | _Readable | Iterable[bytes]) -> tuple[bytes, int]:
        """``(content_id, size)`` of a stream as this group chunks it."""
        h = blake3.blake3()
        size = 0
        for view in self.views(stream):
            h.update(chunk_id(view))
            size += len(view)
        return h.digest(), size


UNKEYED = Chunker(None)
