"""Blob-file compaction (storage/compaction.py): a store whose file system cannot punch holes,
half of its large entries cleared, reopened; the open compacts. Prints the bytes given back,
the live bytes copied per second and the peak RSS.

    python bench/compact.py [--mb 256] [--entry-kib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from _util import peak_rss_mb, report

from storage import Store, blobs


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mb", type=int, default=256, help="MiB of entries stored before half are cleared")
    p.add_argument("--entry-kib", type=int, default=64)
    args = p.parse_args()
    blobs._FALLOCATE = None  # a file system without hole punching
    size = args.entry_kib * 1024
    count = args.mb * 1024 * 1024 // size
    with tempfile.TemporaryDirectory() as tmp:
        async with await Store.open(tmp) as store:
            feed = await store.create_feed("bench")
            for start in range(0, count, 64):
                await feed.append([os.urandom(size) for _ in range(min(64, count - start))])
            for k in range(0, count, 2):  # every other entry: no run of freed space to punch or skip
                await feed.clear(k, k + 1)
            before = await store.disk_use()
        path = os.path.join(tmp, "cobox.blobs")
        size_before = os.stat(path).st_size
        t0 = time.perf_counter()
        async with await Store.open(tmp) as store:
            seconds = time.perf_counter() - t0
            after = await store.disk_use()
            assert after.unreclaimed == 0
        live = os.stat(path).st_size
        report(bench="compact", mb=args.mb, entry_kib=args.entry_kib,
               reclaimable_before_mb=round(before.unreclaimed / 1e6, 1),
               blob_file_mb_before=round(size_before / 1e6, 1), blob_file_mb_after=round(live / 1e6, 1),
               open_seconds=round(seconds, 3), copied_mb_per_s=round(live / 1e6 / seconds, 1),
               peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    asyncio.run(main())
