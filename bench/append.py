"""Append throughput: a writable feed in a real database file, BATCH entries per signature.

    python bench/append.py [--entries N] [--entry-bytes B] [--batch K] [--profile]
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from _util import feed_args, peak_rss_mb, pipelined, report

from storage import Store


async def main() -> None:
    args = feed_args(__doc__ or "")
    payloads = [os.urandom(args.entry_bytes) for _ in range(min(args.entries, 1024))]
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(tmp)
        feed = await store.create_feed("bench")
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="enabled")
            profiler.start()
        t0 = time.perf_counter()
        # Keep a few appends in flight, as a busy writer does: the store commits them together.
        appends = (
            feed.append([payloads[(start + k) % len(payloads)] for k in range(min(args.batch, args.entries - start))])
            for start in range(0, args.entries, args.batch)
        )
        await pipelined(appends, depth=args.in_flight)
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            profiler.stop()
            profiler.print(file=__import__("sys").stderr)
        assert feed.length == args.entries
        await store.close()
    report(
        bench="append",
        entry_bytes=args.entry_bytes,
        entries=args.entries,
        batch=args.batch,
        entries_per_s=round(args.entries / elapsed),
        mb_per_s=round(args.entries * args.entry_bytes / elapsed / 1e6, 1),
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    asyncio.run(main())
