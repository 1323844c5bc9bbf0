"""Replication throughput between two OS processes over loopback TCP with Noise.

A writer process fills a feed (not timed); a reader process with its own data directory then
connects and replicates all of it. Timed from the connect command to the last verified entry
stored on the reader. ``writer_cpu_s`` and ``reader_cpu_s`` are each process's user + system
CPU seconds while the clock ran (from /proc).

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            cpu0 = cpu_seconds(writer.proc.pid), cpu_seconds(reader.proc.pid)
            t0 = time.perf_counter()
            await reader.call(cmd="connect", addr=writer.address)
            done = await reader.call(cmd="wait", feed=feed, length=args.entries, timeout=600)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(writer.proc.pid) - cpu0[0], cpu_seconds(reader.proc.pid) - cpu0[1]
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
        writer_cpu_s=round(cpu[0], 2),
        reader_cpu_s=round(cpu[1], 2),
        writer_peak_rss_mb=round(w_rss, 1),
        reader_peak_rss_mb=round(r_rss, 1),
    )


if __name__ == "__main__":
    asyncio.run(main())
