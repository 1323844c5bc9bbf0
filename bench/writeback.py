"""What a streaming write costs with and without writeback behind it (cobox.folders.writeback).

    python bench/writeback.py [--mb 256] [--rounds 3] [--pause 20]

Writes ``--mb`` MiB of random bytes into a new file in 1 MiB writes, then ``fsync``s it, once
plainly (every page stays dirty in the page cache until the ``fsync``) and once behind a
``Flusher`` (writeback started every ``FLUSH_BYTES``, the range before dropped once written),
alternately for ``--rounds`` rounds, ``--pause`` seconds apart (pages freed a while ago are
what a download gets: on a VM they may have gone back to the host). One JSON line per write
(``bench: "writeback"``, ``mode``, ``seconds``, ``cpu_s``: this process's CPU time,
``mb_per_s``), then the medians (``bench: "writeback-medians"``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _util import report

from cobox.folders.writeback import Flusher


def write(path: Path, mb: int, flushed: bool) -> tuple[float, float]:
    block = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    t, c = time.perf_counter(), time.process_time()
    try:
        flusher = Flusher(fd) if flushed else None
        for k in range(mb):
            os.write(fd, block)
            if flusher is not None:
                flusher.wrote((k + 1) << 20)
        os.fsync(fd)
    finally:
        os.close(fd)
    took = time.perf_counter() - t, time.process_time() - c
    path.unlink()
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pause", type=float, default=20.0, help="seconds between two writes")
    args = p.parse_args()
    seen: dict[str, list[float]] = {"plain": [], "flushed": []}
    with tempfile.TemporaryDirectory(prefix="cobox-writeback-", dir=os.environ.get("TMPDIR")) as tmp:
        for r in range(args.rounds):
            for mode in ("plain", "flushed"):
                if r or mode != "plain":
                    time.sleep(args.pause)
                seconds, cpu = write(Path(tmp) / mode, args.mb, mode == "flushed")
                seen[mode].append(seconds)
                report(bench="writeback", mode=mode, mb=args.mb, seconds=round(seconds, 3), cpu_s=round(cpu, 3),
                       mb_per_s=round(args.mb * 1.048576 / seconds, 1))
    report(bench="writeback-medians", mb=args.mb, **{f"{m}_seconds": round(statistics.median(v), 3)
                                                     for m, v in seen.items()})


if __name__ == "__main__":
    main()
