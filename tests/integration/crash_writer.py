"""Child process for test_crash.py: append random batches to several feeds as fast as
possible, printing ``<feed key hex> <length>`` after each committed append, until killed.

Usage: python crash_writer.py STORE_DIR SEED
"""

from __future__ import annotations

import asyncio
import random
import sys

from storage import Store

FEEDS = 3


async def writer(feed, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    while True:
        # Sizes on both sides of the blob threshold: inline rows and blob-file entries.
        batch = [rng.randbytes(rng.choice([0, 1, 10, 100, 1000, 5000, 9000, 70_000]))
                 for _ in range(rng.randrange(1, 20))]
        length = await feed.append(batch)
        sys.stdout.write(f"{feed.key.hex()} {length}\n")
        sys.stdout.flush()


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    store = await Store.open(path)
    try:
        while len(store.feeds()) < FEEDS:
            await store.create_feed("crash")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with asyncio.TaskGroup() as tg:
            for feed in store.feeds():
                tg.create_task(writer(feed, random.Random(rng.random())))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
