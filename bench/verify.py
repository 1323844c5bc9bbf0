"""Replica verify-and-store throughput: a writer fills a feed, then a replica in a second
database verifies and stores every entry from range proofs (BATCH entries per proof), as it
would when replicating. Only the replica's side is timed.

    python bench/verify.py [--entries N] [--entry-bytes B] [--batch K] [--profile]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

from _util import feed_args, peak_rss_mb, pipelined, report

from storage import Store


async def main() -> None:
    args = feed_args(__doc__ or "")
    payloads = [os.urandom(args.entry_bytes) for _ in range(min(args.entries, 1024))]
    with tempfile.TemporaryDirectory() as tmp:
        source = await Store.open(os.path.join(tmp, "writer"))
        replica_store = await Store.open(os.path.join(tmp, "replica"))
        feed = await source.create_feed("bench")
        for start in range(0, args.entries, 1000):
            n = min(1000, args.entries - start)
            await feed.append([payloads[(start + k) % len(payloads)] for k in range(n)])
        # What a serving peer sends: entries and a proof per batch (prepared beforehand so that
        # only verification and storage are timed).
        batches = []
        for start in range(0, args.entries, args.batch):
            end = min(start + args.batch, args.entries)
            batches.append((start, await feed.get_range(start, end), await feed.proof(start, end)))
        replica = await replica_store.open_feed(feed.key, "bench")
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="enabled")
            profiler.start()
        t0 = time.perf_counter()
        await pipelined((replica.put_range(start, entries, proof) for start, entries, proof in batches),
                        depth=args.in_flight)
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            profiler.stop()
            profiler.print(file=sys.stderr)
        assert replica.contiguous_length == args.entries
        await source.close()
        await replica_store.close()
    report(
        bench="verify",
        entry_bytes=args.entry_bytes,
        entries=args.entries,
        batch=args.batch,
        entries_per_s=round(args.entries / elapsed),
        mb_per_s=round(args.entries * args.entry_bytes / elapsed / 1e6, 1),
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    asyncio.run(main())
