import io
import os
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from pyfastcdc import FastCDC

from cobox.folders.chunking import (
    AVG,
    MAX,
    MIN,
    UNKEYED,
    UNKEYED_SEED,
    Chunker,
    chunk_id,
    chunker_seed,
    chunks,
    content_id,
    hash_content,
)
from networker.keys import GroupKeys, chunker_key


def reference_cuts(data: bytes, avg: int, lo: int, hi: int, seed: int = UNKEYED_SEED) -> list[int]:
    """FastCDC 2020 over the whole buffer at once (no streaming), with the same seed."""
    cdc = FastCDC(avg, min_size=lo, max_size=hi, normalized_chunking=2, seed=seed)
    return [c.length for c in cdc.cut_buf(data)]


def rand(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_streaming_matches_the_whole_buffer_cut() -> None:
    data = rand(2_000_000, 7)
    sizes = [len(c) for c in chunks(io.BytesIO(data), avg=1024, min=256, max=4096)]
    assert sizes == reference_cuts(data, 1024, 256, 4096)
    assert [len(c) for c in chunks(io.BytesIO(data))] == reference_cuts(data, AVG, MIN, MAX)
    assert (AVG, MIN, MAX) == (128 * 1024, 32 * 1024, 512 * 1024)  # a format constant: see the module


def test_deterministic_and_lossless_whatever_the_pieces() -> None:
    data = rand(3_000_000)
    a = list(chunks(io.BytesIO(data)))
    rng = random.Random(3)

    def pieces() -> Iterator[bytes]:
        i = 0
        while i < len(data):
            n = rng.choice([1, 100, 4096, 70_000, 300_000])
            yield data[i:i + n]
            i += n

    b = list(chunks(pieces()))
    assert a == b
    assert b"".join(a) == data


def test_bounds() -> None:
    data = rand(10_000_000, 2)
    sizes = [len(c) for c in chunks(io.BytesIO(data))]
    assert all(MIN <= s <= MAX for s in sizes[:-1])
    assert 0 < sizes[-1] <= MAX
    assert AVG < sum(sizes) / len(sizes) < 1.4 * (AVG + MIN)  # around avg + min (FastCDC skips min)


def test_runs_of_equal_bytes_cut_at_max() -> None:
    sizes = [len(c) for c in chunks(io.BytesIO(b"\0" * 4_000_000))]
    assert sizes[:3] == [MAX] * 3 and sum(sizes) == 4_000_000


def test_insertion_changes_only_nearby_chunks() -> None:
    data = rand(16_000_000, 5)
    edited = data[:400_000] + b"an insertion" + data[400_000:]
    before = [chunk_id(c) for c in chunks(io.BytesIO(data))]
    after = [chunk_id(c) for c in chunks(io.BytesIO(edited))]
    assert len(set(after) - set(before)) <= 2
    assert len(set(before) - set(after)) <= 2
    assert before[-20:] == after[-20:]


def test_empty_and_small() -> None:
    assert list(chunks(io.BytesIO(b""))) == []
    assert list(chunks(iter([b"", b"abc", b""]))) == [b"abc"]
    assert hash_content(io.BytesIO(b"")) == (content_id([]), 0)


def test_bad_sizes() -> None:
    with pytest.raises(ValueError):
        list(chunks(io.BytesIO(b"x"), avg=1000, min=100, max=4000))
    with pytest.raises(ValueError):
        list(chunks(io.BytesIO(b"x"), avg=1024, min=32, max=4096))
    with pytest.raises(ValueError):
        list(chunks(io.BytesIO(b"x"), avg=512, min=128, max=900))


def test_bounded_memory_on_a_large_stream() -> None:
    total = 200 * 1024 * 1024
    block = os.urandom(1024 * 1024)

    def generate() -> Iterator[bytes]:
        for i in range(total // len(block)):
            yield bytes([i % 256]) + block[1:]  # fresh bytes each time, never all held

    tracemalloc.start()
    try:
        n = size = 0
        for c in chunks(generate()):
            n += 1
            size += len(c)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total and n > 800
    assert peak < 6 * 1024 * 1024, peak  # the stream buffer (2 * MAX), a chunk, the source's blocks


# --- keyed boundaries (issue 11 item 11) ------------------------------------------------------

KEY_A, KEY_B = chunker_key(b"\x01" * 32), chunker_key(b"\x02" * 32)


def test_keyed_chunker_matches_the_definition_with_its_own_table() -> None:
    data = rand(200_000, 8)
    small = Chunker(KEY_A, avg=1024, min=256, max=4096)
    assert [len(c) for c in small.chunks(io.BytesIO(data))] == reference_cuts(data, 1024, 256, 4096,
                                                                             chunker_seed(KEY_A))


def test_same_key_same_boundaries_on_every_member() -> None:
    address = b"\x09" * 32
    a, b = GroupKeys.from_address(address), GroupKeys.from_address(address)  # two members
    assert a.chunker_key == b.chunker_key == chunker_key(a.encryption_key)  # type: ignore[arg-type]
    assert GroupKeys.from_replication_key(a.replication_key).chunker_key is None  # a backup peer has none
    data = rand(2_000_000, 9)
    cuts_a = list(Chunker(a.chunker_key).chunks(io.BytesIO(data)))
    cuts_b = list(Chunker(b.chunker_key).chunks(io.BytesIO(data)))
    assert cuts_a == cuts_b and b"".join(cuts_a) == data
    copy = data[:500_000] + b"edit" + data[500_000:]  # dedup within the group still works
    assert len({chunk_id(c) for c in Chunker(a.chunker_key).chunks(io.BytesIO(copy))}
               - {chunk_id(c) for c in cuts_a}) <= 2


def test_boundaries_of_a_known_file_cannot_be_predicted_without_the_key() -> None:
    """The attack: a backup peer chunks a candidate file with the public table (or any key it
    can guess) and compares the chunk sizes with the entry sizes it stores."""
    known = rand(4_000_000, 10)
    group = [len(c) for c in Chunker(KEY_A).chunks(io.BytesIO(known))]
    for guess in (UNKEYED, Chunker(KEY_B), Chunker(chunker_key(bytes(32)))):
        sizes = [len(c) for c in guess.chunks(io.BytesIO(known))]
        assert sizes != group
        shared = set(sizes) & set(group)
        assert len(shared) <= 2, shared  # (equal sizes by chance: max-size chunks)
    assert Chunker(KEY_A).hash_content(io.BytesIO(known)) != UNKEYED.hash_content(io.BytesIO(known))
    assert repr(Chunker(KEY_A)) == f"Chunker(avg={AVG})"


def test_keyed_seeds_are_distinct_and_checked() -> None:
    seeds = {chunker_seed(KEY_A), chunker_seed(KEY_B), UNKEYED_SEED}
    assert len(seeds) == 3 and all(0 < s < 2**63 for s in seeds)
    with pytest.raises(ValueError):
        chunker_seed(b"short")


def test_the_views_are_the_chunks() -> None:
    data = rand(1_500_000, 11)
    c = Chunker(KEY_A)
    assert [bytes(v) for v in c.views(io.BytesIO(data))] == list(c.chunks(io.BytesIO(data)))
    assert c.hash_content(io.BytesIO(data)) == (content_id(chunk_id(x) for x in c.chunks(io.BytesIO(data))),
                                                len(data))
