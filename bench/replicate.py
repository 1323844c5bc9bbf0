"""Replication throughput between two OS processes over loopback TCP with Noise.

A writer process fills a feed (not timed); a reader process with its own data directory then
connects and replicates all of it. Timed from the connect command to the last verified entry
stored on the reader.

    python bench/replicate.py [--entries N] [--entry-bytes B]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from _util import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.procs import PeerProcess


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--entry-bytes", type=int, default=1024)
    args = p.parse_args()
    batch = max(1, min(1000, (1 << 20) // args.entry_bytes))
    group = os.urandom(32)
    with tempfile.TemporaryDirectory() as tmp:
        writer = await PeerProcess.start(Path(tmp) / "writer", group)
        reader = await PeerProcess.start(Path(tmp) / "reader", group)
        try:
            feed = (await writer.call(cmd="append", n=args.entries, size=args.entry_bytes,
                                      batch=batch, timeout=600))["feed"]
            t0 = time.perf_counter()
            await reader.call(cmd="connect", addr=writer.address)
            done = await reader.call(cmd="wait", feed=feed, length=args.entries, timeout=600)
            elapsed = time.perf_counter() - t0
            assert done["ok"], "replication did not finish"
            w_rss = (await writer.call(cmd="status"))["rss_mb"]
            r_rss = (await reader.call(cmd="status"))["rss_mb"]
        finally:
            await writer.stop()
            await reader.stop()
    report(
        bench="replicate",
        entry_bytes=args.entry_bytes,
        entries=args.entries,
        entries_per_s=round(args.entries / elapsed),
        mb_per_s=round(args.entries * args.entry_bytes / elapsed / 1e6, 1),
        seconds=round(elapsed, 2),
        writer_peak_rss_mb=round(w_rss, 1),
        reader_peak_rss_mb=round(r_rss, 1),
    )


if __name__ == "__main__":
    asyncio.run(main())
