"""Replica verify-and-store throughput: a writer fills a feed, then a replica in a second
database verifies and stores every entry from range proofs (BATCH entries per proof), as it
would when replicating. Only the replica's side is timed.

    python bench/verify.py [--entries N] [--entry-bytes B] [--batch K] [--profile]
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
        with Timed(args) as timed:
            await pipelined((replica.put_range(start, entries, proof) for start, entries, proof in batches),
                            depth=args.in_flight)
        assert replica.contiguous_length == args.entries
        await source.close()
        await replica_store.close()
    report_feed_bench("verify", args, timed.elapsed)


if __name__ == "__main__":
    asyncio.run(main())
