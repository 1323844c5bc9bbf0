"""Helpers shared by the benchmarks: argument parsing, peak RSS, the JSON result line."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

# Run from a checkout without installing: make the repository's packages importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def feed_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--entry-bytes", type=int, default=1024)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--in-flight", type=int, default=8, help="batches appended/verified concurrently")
    p.add_argument("--profile", action="store_true", help="print a pyinstrument profile to stderr")
    return p.parse_args()


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def pipelined(coros, depth: int = 8) -> None:  # type: ignore[no-untyped-def]
    """Await the coroutines with up to ``depth`` of them in flight, as a busy writer does."""
    import asyncio

    in_flight: set = set()
    for coro in coros:
        in_flight.add(asyncio.ensure_future(coro))
        if len(in_flight) >= depth:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                d.result()
    if in_flight:
        await asyncio.gather(*in_flight)


class Timed:
    """Time (and with ``--profile``, profile) the block: ``with Timed(args) as t: ...``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.elapsed = 0.0
        self._profiler = None

    def __enter__(self) -> Timed:
        import time

        if self.args.profile:
            from pyinstrument import Profiler

            self._profiler = Profiler(async_mode="enabled")
            self._profiler.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        self.elapsed = time.perf_counter() - self._t0
        if self._profiler is not None:
            self._profiler.stop()
            self._profiler.print(file=sys.stderr)


def report_feed_bench(name: str, args: argparse.Namespace, elapsed: float) -> None:
    report(bench=name, entry_bytes=args.entry_bytes, entries=args.entries, batch=args.batch,
           entries_per_s=round(args.entries / elapsed),
           mb_per_s=round(args.entries * args.entry_bytes / elapsed / 1e6, 1), peak_rss_mb=peak_rss_mb())
