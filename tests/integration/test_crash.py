"""Kill -9 a process that is appending to a store (and clearing ranges of it), many times; after
every kill the store must reopen with every stored entry verifying, no committed append or
clear lost, nothing half-cleared, and the freed blob space given back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from storage import RangeSet, Store, blobs, compaction, verify_range

HELPER = Path(__file__).with_name("crash_writer.py")
ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 12


async def _readline(stream: asyncio.StreamReader, timeout: float = 10.0) -> str:
    async with asyncio.timeout(timeout):
        line = await stream.readline()
    if not line:
        raise AssertionError("the writer process exited early")
    return line.decode()


async def _run_and_kill(path: Path, seed: int, rng: random.Random,
                        cleared: dict[str, RangeSet] | None = None, mode: str | None = None,
                        compactions: list[int] | None = None) -> dict[str, int]:
    """Run one writer round; return the last committed length it reported per feed (and add
    the clears or releases it reported to ``cleared``, which makes it clear, or with ``mode``
    "release", release)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mode = mode or ("clear" if cleared is not None else None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HELPER), str(path), str(seed), *([mode] if mode else []),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )
    assert proc.stdout is not None
    try:
        early = []  # what a writer that compacts at open reports before it is ready
        while (line := await _readline(proc.stdout)) != "ready\n":
            assert line.startswith("compacted "), line
            early.append(line)
        first = await _readline(proc.stdout)  # an append committed: it is writing now
        await asyncio.sleep(rng.uniform(0, 0.25))
    finally:
        proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            rest = await proc.stdout.read()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reported: dict[str, int] = {}
    compactions = [] if compactions is None else compactions
    for line in [*early, first, *rest.decode().splitlines(keepends=True)]:
        if not line.endswith("\n"):
            continue  # cut off by the kill
        if line.startswith("compacted "):
            compactions.append(int(line.split()[1]))
            continue
        if line.startswith(("clear ", "release ", "restore ")):
            assert cleared is not None
            kind, key, lo, hi = line.split()
            if kind == "restore":  # no longer released: stored again
                cleared.setdefault(key, RangeSet()).remove(int(lo), int(hi))
            else:
                cleared.setdefault(key, RangeSet()).add(int(lo), int(hi))
            continue
        key, length = line.split()
        reported[key] = max(reported.get(key, 0), int(length))
    return reported


async def _check(path: Path, committed: dict[str, int], cleared: dict[str, RangeSet] | None = None,
                 *, punched: bool = True) -> dict[str, int]:
    async with await Store.open(path) as store:
        feeds = store.feeds()
        assert len(feeds) == 3
        lengths = {}
        if cleared is not None and punched:
            assert (await store.disk_use()).unreclaimed == 0, "freed blob space was not given back at open"
        for feed in feeds:
            key = feed.key.hex()
            assert feed.length >= committed.get(key, 0), "a committed append was lost"
            assert feed.writable
            if cleared is not None:
                await _check_cleared(store, feed, cleared.get(key, RangeSet()))
                lengths[key] = feed.length
                continue
            assert list(feed.have) == ([(0, feed.length)] if feed.length else [])
            (count,), = await store.read(
                "SELECT COUNT(*) FROM entries WHERE key >> 42 = ?", (feed.id,))
            assert count == feed.length, "entries stored beyond the signed length"
            if feed.length:
                entries = await feed.get_range(0, feed.length)
                verified = verify_range(feed.key, 0, entries, await feed.proof(0, feed.length))
                assert verified.signed == feed.signed
            lengths[key] = feed.length
        return lengths


async def _check_cleared(store: Store, feed, reported: RangeSet) -> None:  # type: ignore[no-untyped-def]
    """Every reported clear is kept; the feed holds exactly what it did not clear; every
    held entry verifies with a proof from the store (the kept nodes of cleared neighbours)."""
    for lo, hi in reported:
        assert feed.cleared.contains_range(lo, hi), "a committed clear was lost"
    expect = RangeSet([(0, feed.length)])
    for lo, hi in feed.cleared:
        expect.remove(lo, hi)
    assert feed.have == expect, "entries held and cleared ranges disagree"
    (count,), = await store.read("SELECT COUNT(*) FROM entries WHERE key >> 42 = ?", (feed.id,))
    assert count == len(feed.have), "the store holds entries its have does not list"
    for lo, hi in feed.have:
        entries = await feed.get_range(lo, hi)
        verified = verify_range(feed.key, lo, entries, await feed.proof(lo, hi))
        assert verified.signed == feed.signed


async def test_kill_9_while_appending_and_clearing(tmp_path: Path) -> None:
    rng = random.Random()
    path = tmp_path / "store"
    committed: dict[str, int] = {}
    cleared: dict[str, RangeSet] = {}
    clears = 0
    async with asyncio.timeout(60):
        for _ in range(ROUNDS):
            reported = await _run_and_kill(path, rng.randrange(1 << 30), rng, cleared)
            for key, length in reported.items():
                committed[key] = max(committed.get(key, 0), length)
            committed.update(await _check(path, committed, cleared))
            clears = sum(len(c) for c in cleared.values())
    assert clears > 0, "no clear was committed in any round"


async def test_kill_9_while_compacting_the_blob_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hole punching (as on some network file systems): every open of the store compacts
    the blob file once enough is reclaimable; a writer that clears, appends and reopens is
    killed at random moments, compactions included. Nothing committed may be lost or read
    back wrong (every held entry verifies against the signed tree), and no half-written
    compacted file is left beside the store."""
    monkeypatch.setattr(blobs, "_FALLOCATE", None)
    monkeypatch.setattr(compaction, "COMPACT_MIN_BYTES", 0)
    rng = random.Random()
    path = tmp_path / "store"
    committed: dict[str, int] = {}
    cleared: dict[str, RangeSet] = {}
    compactions: list[int] = []  # bytes each compaction gave back, in a writer or in _check
    compact = compaction.compact

    async def counted(store: compaction.Compactable) -> int:
        compactions.append(await compact(store))
        return compactions[-1]

    monkeypatch.setattr(compaction, "compact", counted)
    async with asyncio.timeout(90):
        for _ in range(ROUNDS):
            reported = await _run_and_kill(path, rng.randrange(1 << 30), rng, cleared, mode="compact",
                                           compactions=compactions)
            for key, length in reported.items():
                committed[key] = max(committed.get(key, 0), length)
            committed.update(await _check(path, committed, cleared, punched=False))
            assert not compaction.new_path(path / "cobox.blobs").exists()
    assert sum(len(c) for c in cleared.values()) > 0, "no clear was committed in any round"
    assert any(freed > 0 for freed in compactions), "the blob file was never compacted"


async def test_kill_9_while_appending(tmp_path: Path) -> None:
    rng = random.Random()
    path = tmp_path / "store"
    committed: dict[str, int] = {}
    total = 0
    async with asyncio.timeout(60):
        for _ in range(ROUNDS):
            reported = await _run_and_kill(path, rng.randrange(1 << 30), rng)
            assert reported, "the writer reported no committed append"
            for key, length in reported.items():
                committed[key] = max(committed.get(key, 0), length)
            lengths = await _check(path, committed)
            # Each round continued the same feeds and committed at least one more append.
            assert sum(lengths.values()) > total
            total = sum(lengths.values())
            committed.update(lengths)


async def test_kill_9_while_appending_and_releasing(tmp_path: Path) -> None:
    """Releases and restores (storage/outside.py) are crash-safe too: every reported release not
    restored since is kept, the feed still holds every entry, rebuilt ones verify, and the freed
    blob space is given back."""
    from tests.integration.crash_writer import Content, content

    path = tmp_path / "store"
    rng = random.Random(20261202)
    committed: dict[str, int] = {}
    released: dict[str, RangeSet] = {}
    for _ in range(ROUNDS // 2):
        reported = await _run_and_kill(path, rng.randrange(1 << 30), rng, released, mode="release")
        for key, length in reported.items():
            committed[key] = max(committed.get(key, 0), length)
        async with await Store.open(path) as store:
            store.set_rebuilder("crash", Content())
            assert (await store.disk_use()).unreclaimed == 0, "freed blob space was not given back at open"
            for feed in store.feeds():
                key = feed.key.hex()
                assert feed.length >= committed.get(key, 0), "a committed append was lost"
                assert list(feed.have) == ([(0, feed.length)] if feed.length else [])
                for lo, hi in released.get(key, RangeSet()):
                    hi = min(hi, feed.length)
                    assert lo >= hi or feed.outside.contains_range(lo, hi), "a committed release was lost"
                entries = await feed.get_range(0, feed.length) if feed.length else []
                assert entries == [content(feed.key, k) for k in range(feed.length)]
                if feed.length:
                    verify_range(feed.key, 0, entries, await feed.proof(0, feed.length))
                assert feed.stored_bytes + feed.outside_bytes == sum(map(len, entries))
                assert not feed.cleared
    assert sum(len(r) for r in released.values()) > 0, "no release was committed in any round"
