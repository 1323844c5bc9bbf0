"""Chunk entries padded to size classes (issue 11 item 11): the ciphertext size of a chunk entry
does not tell the chunk size, and a badly padded entry is refused."""

import io
import random
from types import SimpleNamespace

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cobox.errors import MalformedChunkError
from cobox.folders.chunking import Chunker
from cobox.folders.padding import (
    MARK,
    MIN_PADDED,
    chunk_of,
    decode_chunk,
    encode_chunk,
    pad,
    padded_size,
    unpad,
)
from cobox.groups import Group
from networker.keys import GroupKeys

GROUP = SimpleNamespace(keys=GroupKeys.from_address(b"\x05" * 32))
FEED = b"\xfe" * 32


def entry_size(chunk: bytes) -> int:
    """What a backup peer sees: the size of the sealed entry."""
    return len(Group.seal(GROUP, FEED, 7, encode_chunk(chunk)))  # type: ignore[arg-type]


def test_chunks_that_differ_by_a_few_bytes_have_the_same_entry_size() -> None:
    for base in (1000, 5000, 16_000, 40_000, 65_000, 100_000, 250_000):
        sizes = {entry_size(bytes(n)) for n in range(base, base + 8)}
        assert len(sizes) == 1, (base, sizes)
    # Without padding the entry would be the chunk plus a constant: the attack's fingerprint.
    assert entry_size(bytes(65_000)) - 65_000 != entry_size(bytes(64_000)) - 64_000


def test_class_boundaries_and_bound() -> None:
    for n in range(1, 300_000, 37):
        p = padded_size(n)
        assert p >= n and p >= MIN_PADDED and padded_size(p) == p
        if n > 4096:
            assert (p - n) / n < 0.032 if n >= 65536 else (p - n) / n < 0.063
    assert padded_size(65536) == 65536 and padded_size(65537) == 65536 + 2048


@given(st.binary(min_size=1, max_size=70_000))
def test_round_trip(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) == padded_size(len(data) + 1)
    assert unpad(padded) == data
    assert decode_chunk(encode_chunk(data)) == data


def test_malformed_padding_is_refused() -> None:
    data = b"chunk" * 100
    good = pad(data)
    bad = [
        good[:-1] + b"\x01",  # a non-zero byte after the mark
        data + bytes(len(good) - len(data)),  # no mark at all
        good + bytes(padded_size(len(good) + 1) - len(good)),  # a whole class more of zeros
        bytes([MARK]) + bytes(MIN_PADDED - 1),  # an empty chunk
        bytes(MIN_PADDED),  # only zeros
        b"short\x80",  # below the smallest class
        good[:-1],  # not a class size
    ]
    for b in bad:
        with pytest.raises(MalformedChunkError):
            unpad(b)
        with pytest.raises(MalformedChunkError):
            decode_chunk(msgpack.packb({"type": "chunk", "data": b}, use_bin_type=True))
    for obj in ({"type": "chunk"}, {"type": "chunk", "data": "text"}, {"type": "chunk", "data": good, "x": 1},
                {"type": "put", "data": good}, [1, 2], 5, {"type": "chunk", "data": 7}):
        with pytest.raises(MalformedChunkError):
            chunk_of(obj)
        with pytest.raises(MalformedChunkError):
            decode_chunk(msgpack.packb(obj, use_bin_type=True))


@given(st.binary(max_size=600))
def test_decoder_raises_only_its_own_error(data: bytes) -> None:
    try:
        decode_chunk(data)
    except MalformedChunkError:
        pass


@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=300),
                 st.dictionaries(st.text(max_size=5), st.one_of(st.binary(max_size=300), st.text(max_size=5)),
                                 max_size=3)))
def test_chunk_of_raises_only_its_own_error(obj: object) -> None:
    try:
        chunk_of(obj)
    except MalformedChunkError:
        pass


def test_overhead_on_realistic_chunks() -> None:
    """Large files (64 KiB average chunks) cost < 3 %; small files (1-16 KiB, one chunk each)
    cost what the test prints (measured, see the report)."""
    rng = random.Random(4)
    data = rng.randbytes(8 * 1024 * 1024)
    big = [len(c) for c in Chunker(b"\x03" * 32).chunks(io.BytesIO(data))]
    small = [rng.randint(1024, 16 * 1024) for _ in range(2000)]

    def overhead(sizes: list[int]) -> float:
        return sum(len(pad(bytes(n))) - n for n in sizes) / sum(sizes)

    assert overhead(big) < 0.03
    assert overhead(small) < 0.06
