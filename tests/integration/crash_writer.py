"""Child process for test_crash.py: append random batches to several feeds as fast as
possible, printing ``<feed key hex> <length>`` after each committed append, until killed. With
``clear``, it also clears random ranges, printing ``clear <feed key hex> <start> <end>`` after each.
With ``release``, its entries are ``content(feed key, seq)`` (reproducible) and it releases random
ranges to a rebuilder of that content (storage/outside.py), printing ``release <key> <start> <end>``,
and stores some again (``restore <key> <start> <end>``, printed before it starts).
With ``compact`` it clears too, on a file system that cannot punch holes (punching is switched
off), and closes and reopens the store every few appends, so that opening compacts the blob file
(storage/compaction.py) again and again while it may be killed.

Usage: python crash_writer.py STORE_DIR SEED [clear|release|compact]
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Sequence

from blake3 import blake3

from storage import Store, blobs, compaction

FEEDS = 3
SIZES = (0, 1, 10, 100, 1000, 5000, 9000, 70_000)


def content(feed_key: bytes, seq: int) -> bytes:
    """The entry ``seq`` of a feed in release mode: its size and bytes follow from its place."""
    h = blake3(feed_key + seq.to_bytes(8, "big"))
    size = SIZES[h.digest(1)[0] % len(SIZES)]
    return h.digest(size + 1)[1:]


class Content:
    """The rebuilder of release mode."""

    async def rebuild(self, feed_key: bytes, seqs: Sequence[int], leaves: Sequence[bytes | None]) -> list[bytes | None]:
        return [content(feed_key, s) for s in seqs]


async def releaser(feed, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    while True:
        if feed.length > 4 and rng.random() < 0.4:
            lo = rng.randrange(feed.length)
            hi = min(feed.length, lo + rng.randrange(1, 300))
            await feed.release([(lo, hi)])
            sys.stdout.write(f"release {feed.key.hex()} {lo} {hi}\n")
            sys.stdout.flush()
        if feed.outside and rng.random() < 0.2:  # store some of them again (Feed.restore)
            lo = rng.randrange(feed.length)
            hi = min(feed.length, lo + rng.randrange(1, 50))
            sys.stdout.write(f"restore {feed.key.hex()} {lo} {hi}\n")  # before: it may commit, then the kill
            sys.stdout.flush()
            await feed.restore(range(lo, hi))
        first = feed.next_seq
        length = await feed.append([content(feed.key, first + k) for k in range(rng.randrange(1, 20))])
        sys.stdout.write(f"{feed.key.hex()} {length}\n")
        sys.stdout.flush()


async def writer(feed, rng: random.Random, clear: bool, steps: int | None) -> None:  # type: ignore[no-untyped-def]
    while steps is None or steps > 0:
        if steps is not None:
            steps -= 1
        if clear and feed.length > 4 and rng.random() < 0.3:
            lo = rng.randrange(feed.length)
            hi = min(feed.length, lo + rng.randrange(1, 40))
            await feed.clear(lo, hi)
            sys.stdout.write(f"clear {feed.key.hex()} {lo} {hi}\n")
            sys.stdout.flush()
        # Sizes on both sides of the blob threshold: inline rows and blob-file entries.
        batch = [rng.randbytes(rng.choice([0, 1, 10, 100, 1000, 5000, 9000, 70_000]))
                 for _ in range(rng.randrange(1, 20))]
        length = await feed.append(batch)
        sys.stdout.write(f"{feed.key.hex()} {length}\n")
        sys.stdout.flush()


async def main(path: str, seed: int, mode: str) -> None:
    rng = random.Random(seed)
    if mode == "compact":
        blobs._FALLOCATE = None  # a file system without hole punching
        compaction.COMPACT_MIN_BYTES = 0
        compact = compaction.compact

        async def reporting(store: compaction.Compactable) -> int:
            freed = await compact(store)
            sys.stdout.write(f"compacted {freed}\n")
            sys.stdout.flush()
            return freed

        compaction.compact = reporting  # type: ignore[assignment]
    ready = False
    while True:
        store = await Store.open(path)  # compacts the blob file when enough is reclaimable
        store.set_rebuilder("crash", Content())
        try:
            while len(store.feeds()) < FEEDS:
                await store.create_feed("crash")
            if not ready:
                sys.stdout.write("ready\n")
                sys.stdout.flush()
                ready = True
            async with asyncio.TaskGroup() as tg:
                for feed in store.feeds():
                    if mode == "release":
                        tg.create_task(releaser(feed, random.Random(rng.random())))
                        continue
                    steps = rng.randrange(3, 15) if mode == "compact" else None
                    tg.create_task(writer(feed, random.Random(rng.random()), mode in ("clear", "compact"), steps))
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
