"""Child process for test_crash.py: append random batches to several feeds as fast as
possible, printing ``<feed key hex> <length>`` after each committed append, until killed. With
``clear``, it also clears random ranges, printing ``clear <feed key hex> <start> <end>`` after each.

Usage: python crash_writer.py STORE_DIR SEED [clear]
"""

from __future__ import annotations

import asyncio
import random
import sys

from storage import Store

FEEDS = 3


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


async def main(path: str, seed: int, clear: bool) -> None:
    rng = random.Random(seed)
    store = await Store.open(path)
    try:
        while len(store.feeds()) < FEEDS:
            await store.create_feed("crash")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with asyncio.TaskGroup() as tg:
            for feed in store.feeds():
                tg.create_task(writer(feed, random.Random(rng.random()), clear))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["clear"]))
