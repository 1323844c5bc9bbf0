"""Reading ahead: entries decoded as they arrive (``OpReader.prefetch``), merged by a round."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from cobox.entries import encode_chunk
from tests.helpers import until

from ..hostile import (
    connect,
    digests,
    members_fixture,  # noqa: F401 - the fixture "members"
)

MiB = 1024 * 1024


async def test_arrived_entries_are_decoded_ahead_and_merged_only_by_the_next_read(members) -> None:
    a, b = await members("a"), await members("b")
    files = {"notes.txt": os.urandom(3000), "big.bin": os.urandom(2 * MiB)}
    for path, data in files.items():
        (a.root / path).write_bytes(data)
    await a.sync.round()
    connect(a, b)
    await b.caught_up(a, timeout=30)
    r = b.sync.reader

    await r.prefetch()
    assert sorted(op.path for op in r._ops) == sorted(files)  # decoded...
    assert b.sync.state.files == {}  # ...but the state a round acts on is not touched
    assert len(r.chunk_entries[a.feed.key]) > 1  # the chunk entries were counted (on the loop)

    taken = []
    real = r.take
    r.take = lambda feed, seq, data: taken.append(seq) or real(feed, seq, data)  # type: ignore[method-assign]
    await b.sync.round()
    assert taken == []  # the round's read merged what the prefetch decoded, and read nothing again
    assert digests(b.root) == digests(a.root)


async def test_a_device_leaves_its_own_feed_to_the_read(members) -> None:
    a = await members("a")
    (a.root / "notes.txt").write_bytes(b"mine")
    await a.sync.round()  # recorded after the round's read: its Put is not read yet
    await a.sync.reader.prefetch()
    assert a.sync.reader._ops == []  # its chunks are skipped once appended; a walk would decrypt them
    state = await a.sync.read_ops()
    assert list(state.files) == ["notes.txt"]


async def test_a_running_folder_reads_ahead_by_itself(members) -> None:
    a, b = await members("a"), await members("b")
    (a.root / "notes.txt").write_bytes(b"hello")
    await a.sync.round()

    async def no_round() -> None:
        pass

    b.sync.round = no_round  # type: ignore[method-assign]  # only the prefetch task reads
    await b.sync.start()
    connect(a, b)
    await b.caught_up(a, timeout=30)
    await until(lambda: [op.path for op in b.sync.reader._ops] == ["notes.txt"], 10, "the prefetch")


async def test_chunk_entries_are_read_in_place_and_a_malformed_one_is_refused(members) -> None:
    a, b = await members("a"), await members("b")
    good = encode_chunk(b"a chunk of a file")
    bad_padding = good[:-1] + b"\x07"  # the same start, padding that does not check
    oversized_class = good + b"\0"  # a size that is not the padded size of its chunk
    seqs = [await a.write(raw) for raw in (good, bad_padding, oversized_class)]
    connect(a, b)
    await b.caught_up(a, timeout=30)
    refused = b.group.refusals.count(a.id)
    await b.sync.reader.prefetch()
    assert b.group.refusals.count(a.id) == refused + 2  # each counted against its author, and skipped
    assert seqs[0] in b.sync.reader.chunk_entries[a.feed.key]  # the good one read as a chunk entry
    assert all(s not in b.sync.reader.chunk_entries[a.feed.key] for s in seqs[1:])
    assert b.sync.reader._ops == []


async def test_a_cancelled_walk_lets_go_only_once_its_thread_is_done(members) -> None:
    # A thread cannot be stopped: a walk released on cancellation would let the next one run
    # beside it (two threads taking entries, a spool written after it closed).
    a, b = await members("a"), await members("b")
    (a.root / "notes.txt").write_bytes(b"hello")
    await a.sync.round()
    connect(a, b)
    await b.caught_up(a, timeout=30)
    r = b.sync.reader
    entered, release = threading.Event(), threading.Event()
    real = r._take_all

    def slow(*args):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(10)
        return real(*args)

    r._take_all = slow  # type: ignore[method-assign]
    task = asyncio.create_task(r.prefetch())
    await until(entered.is_set, 10, "the walk's thread")
    task.cancel()
    for _ in range(20):  # the cancellation is delivered; the walk must still hold on
        await asyncio.sleep(0)
    assert not task.done() and r._walking.locked()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not r._walking.locked()
    assert [op.path for op in r._ops] == ["notes.txt"]  # the thread's slice was taken whole


async def test_a_slice_is_taken_in_turns_with_the_loop_running_between_them(members, monkeypatch) -> None:
    # A worker thread decoding many small entries keeps the GIL from the loop (each decryption
    # lets go of it for too short a time to be taken); so a slice is taken in bounded turns.
    from cobox.folders import reader as reader_mod

    a, b = await members("a"), await members("b")
    names = [f"f{k}.txt" for k in range(12)]
    for name in names:
        (a.root / name).write_bytes(name.encode())
    await a.sync.round()
    connect(a, b)
    await b.caught_up(a, timeout=30)
    monkeypatch.setattr(reader_mod, "TAKE_SECONDS", 0.0)  # every entry past the deadline: a turn each
    r = b.sync.reader
    turns: list[int] = []
    ticks = 0
    real = r._take_all

    def counted(feed, seq, batch, merge, start):  # type: ignore[no-untyped-def]
        turns.append(start)
        return real(feed, seq, batch, merge, start)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    r._take_all = counted  # type: ignore[method-assign]
    tick = asyncio.create_task(ticker())
    try:
        await r.prefetch()
    finally:
        tick.cancel()
    assert turns == list(range(len(turns))) and len(turns) > len(names)  # one entry a turn, in order, none twice
    assert ticks >= len(turns)  # the loop ran between the turns
    assert sorted(op.path for op in r._ops) == sorted(names)  # each operation taken once
