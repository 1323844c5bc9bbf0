"""Append throughput: a writable feed in a real database file, BATCH entries per signature.

    python bench/append.py [--entries N] [--entry-bytes B] [--batch K] [--profile]
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from _util import Timed, feed_args, pipelined, report_feed_bench

from storage import Store


async def main() -> None:
    args = feed_args(__doc__ or "")
    payloads = [os.urandom(args.entry_bytes) for _ in range(min(args.entries, 1024))]
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(tmp)
        feed = await store.create_feed("bench")
        # Keep a few appends in flight, as a busy writer does: the store commits them together.
        appends = (
            feed.append([payloads[(start + k) % len(payloads)] for k in range(min(args.batch, args.entries - start))])
            for start in range(0, args.entries, args.batch)
        )
        with Timed(args) as timed:
            await pipelined(appends, depth=args.in_flight)
        assert feed.length == args.entries
        await store.close()
    report_feed_bench("append", args, timed.elapsed)


if __name__ == "__main__":
    asyncio.run(main())
