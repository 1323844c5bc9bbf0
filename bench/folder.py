"""Folder sync between two daemons on loopback: one large file, then many small files.

    python bench/folder.py [--big-mb 1024] [--small 10000]

Prints one JSON line per case with ``mb_per_s``, ``files_per_s``, ``seconds_to_converge`` and
each daemon's ``peak_rss_mb`` (from /proc of the daemon processes), plus, as a yardstick in
the same run, the time of ``rsync -a`` of the same tree between two local directories when
rsync is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.daemons import Daemon, ok


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def count_files(root: Path) -> tuple[int, int]:
    n = size = 0
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith(".cobox-tmp-"):
            n += 1
            size += p.stat().st_size
    return n, size


def rsync_seconds(src: Path, tmp: Path) -> float | None:
    if shutil.which("rsync") is None:
        return None
    dst = tmp / "rsync-dst"
    t0 = time.perf_counter()
    subprocess.run(["rsync", "-a", f"{src}/", f"{dst}/"], check=True)
    took = time.perf_counter() - t0
    shutil.rmtree(dst)
    return round(took, 2)


async def case(tmp: Path, name: str, fill) -> None:  # type: ignore[no-untyped-def]
    da, db = tmp / f"{name}-a", tmp / f"{name}-b"
    da.mkdir()
    db.mkdir()
    fill(da)
    files, size = count_files(da)
    a = await Daemon(tmp / f"{name}-home-a", ["--no-lan", "--no-dht"]).start()
    b = await Daemon(tmp / f"{name}-home-b", ["--no-lan", "--no-dht"]).start()
    try:
        uri = (await ok(a.home, "group", "create", "g")).strip()
        t0 = time.perf_counter()
        await ok(a.home, "folder", "add", "g", str(da), timeout=3600)
        await ok(b.home, "group", "join", uri)
        await ok(b.home, "folder", "add", "g", str(db))
        await ok(b.home, "peers", "add", await a.address())
        while count_files(db) != (files, size):
            await asyncio.sleep(0.2)
            if time.perf_counter() - t0 > 3600:
                raise SystemExit("did not converge within an hour")
        took = time.perf_counter() - t0
        assert a.proc is not None and b.proc is not None
        report(bench="folder", case=name, files=files, bytes=size, seconds_to_converge=round(took, 2),
               mb_per_s=round(size / took / 1e6, 1), files_per_s=round(files / took, 1),
               a_peak_rss_mb=peak_rss_mb(a.proc.pid), b_peak_rss_mb=peak_rss_mb(b.proc.pid),
               rsync_seconds=rsync_seconds(da, tmp))
    finally:
        await a.stop()
        await b.stop()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--big-mb", type=int, default=1024)
    p.add_argument("--small", type=int, default=10_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cobox-folder-bench-") as tmp:

        def big(root: Path) -> None:
            with open(root / "big.bin", "wb") as f:
                for _ in range(args.big_mb):
                    f.write(os.urandom(1 << 20))

        def small(root: Path) -> None:
            rnd = __import__("random").Random(1)
            for k in range(args.small):
                d = root / f"d{k % 100:02d}"
                d.mkdir(exist_ok=True)
                (d / f"f{k}.bin").write_bytes(os.urandom(rnd.randint(1024, 16 * 1024)))

        if args.big_mb:
            await case(Path(tmp), "one-large-file", big)
        if args.small:
            await case(Path(tmp), "small-files", small)


if __name__ == "__main__":
    asyncio.run(main())
