"""Child process for test_crash.py: append random batches to several feeds as fast as
possible, printing ``<feed key hex> <length>`` after each committed append, until killed. With
``clear``, it also clears random ranges, printing ``clear <feed key hex> <start> <end>`` after each.
With ``release``, its entries are ``content(feed key, seq)`` (reproducible) and it releases random
ranges to a rebuilder of that content (storage/outside.py), printing ``release <key> <start> <end>``,
and stores some again (``restore <key> <start> <end>``, printed before it starts).

Usage: python crash_writer.py STORE_DIR SEED [clear|release]
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Sequence

from blake3 import blake3

from storage import Store

FEEDS = 3
SIZES = (0, 1, 10, 100, 1000, 5000, 9000, 70_000)


def content(feed_key: bytes, seq: int) -> bytes:
    """The entry ``seq`` of a feed in release mode: its size and bytes follow from its place."""
    h = blake3(feed_key + seq.to_bytes(8, "big"))
    size = SIZES[h.digest(1)[0] % len(SIZES)]
    return h.digest(size + 1)[1:]


class Content:
    """The rebuilder of release mode."""

    async def rebuild(self, feed_key: bytes, seqs: Sequence[int]) -> list[bytes | None]:
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


async def writer(feed, rng: random.Random, clear: bool) -> None:  # type: ignore[no-untyped-def]
    while True:
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
    store = await Store.open(path)
    store.set_rebuilder("crash", Content())
    try:
        while len(store.feeds()) < FEEDS:
            await store.create_feed("crash")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with asyncio.TaskGroup() as tg:
            for feed in store.feeds():
                if mode == "release":
                    tg.create_task(releaser(feed, random.Random(rng.random())))
                else:
                    tg.create_task(writer(feed, random.Random(rng.random()), mode == "clear"))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
