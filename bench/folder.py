"""Folder sync between two daemons on loopback, beside Syncthing measured the same way.

    python bench/folder.py [--big-mb 1024] [--small 10000] [--mixed 0] [--edit-mb 0]
                           [--rounds 1] [--syncthing auto|no] [--profile DIR]

Each case starts two daemons; B joins the group, adds its (empty) folder and connects to A
*before* the clock starts, as the Syncthing reference bench configures B and waits for the
connection first. The clock runs from ``cobox folder add`` on A (the data already in the
folder) until B's folder holds the same number of files and bytes. Cases:

- ``one-large-file``: one file of ``--big-mb`` MiB of random bytes;
- ``small-files``: ``--small`` files of 1-16 KiB in 100 directories;
- ``mixed``: ``--mixed`` files of 1 MiB in 10 directories (0: not run);
- ``edit-large-file``: after ``one-large-file`` converged, 1 MiB in the middle of the file
  is overwritten on A; ``seconds_to_converge`` until B holds A's new bytes and ``bytes_sent``
  (what A's daemon sent meanwhile, framing and all) (``--edit-mb`` MiB file; 0: not run).

One JSON line per case and round (``bench: "folder"``): ``seconds_to_converge``, ``mb_per_s``,
``files_per_s``, each daemon's ``peak_rss_mb`` (VmHWM from /proc) and ``cpu_s`` (user + system CPU seconds
while the clock ran, from /proc), and ``rsync_seconds`` (``rsync
-a`` of the same tree between two local directories, when rsync is installed). With Syncthing
installed (``--syncthing auto``), its reference bench (``bench_syncthing.py``, searched beside
the repository in ``shared/reference-bench`` or given with ``--syncthing-bench``) runs the same
case right after ours, alternately for ``--rounds`` rounds, its rows carrying
``bench: "folder-syncthing"``; then one ``bench: "folder-vs-syncthing"`` line per case gives both
medians and ``ratio`` (Syncthing's seconds / ours: above 1, cobox is faster). The reference's
command line has no ``mixed`` case: ``bench/_syncthing_cases.py`` runs its ``case()`` with the
same tree.

``--profile DIR`` runs both daemons under pyinstrument (``bench/_profiled.py``): the event
loop thread's profile and the process CPU time go to ``DIR/<case>-a.txt`` and ``-b.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _util import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.daemons import Daemon, ok

REPO = Path(__file__).resolve().parents[1]
SYNCTHING_BENCH = "shared/reference-bench/bench_syncthing.py"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def big(mb: int) -> Callable[[Path], None]:
    def fill(root: Path) -> None:
        with open(root / "big.bin", "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
    return fill


def small(n: int) -> Callable[[Path], None]:
    def fill(root: Path) -> None:
        rnd = random.Random(1)
        for k in range(n):
            d = root / f"d{k % 100:02d}"
            d.mkdir(exist_ok=True)
            (d / f"f{k}.bin").write_bytes(os.urandom(rnd.randint(1024, 16 * 1024)))
    return fill


def mixed(n: int) -> Callable[[Path], None]:
    def fill(root: Path) -> None:
        for k in range(n):
            d = root / f"m{k % 10}"
            d.mkdir(exist_ok=True)
            (d / f"f{k}.bin").write_bytes(os.urandom(1 << 20))
    return fill


async def converged(db: Path, want: tuple[int, int], t0: float, done: Callable[[], bool] | None = None) -> float:
    while count_files(db) != want or (done is not None and not done()):
        await asyncio.sleep(0.05)
        if time.perf_counter() - t0 > 3600:
            raise SystemExit("did not converge within an hour")
    return time.perf_counter() - t0


async def connected(d: Daemon, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not [p for p in (await d.status())["peers"] if "g" in p["groups"]]:
        if time.monotonic() > deadline:
            raise SystemExit("the daemons never connected")
        await asyncio.sleep(0.1)


async def case(tmp: Path, name: str, fill: Callable[[Path], None], profile: Path | None,
               edit: bool = False) -> list[dict[str, object]]:
    da, db = tmp / f"{name}-a", tmp / f"{name}-b"
    da.mkdir()
    db.mkdir()
    fill(da)
    files, size = count_files(da)

    def wrap(side: str) -> list[str]:
        if profile is None:
            return []
        return [sys.executable, str(REPO / "bench" / "_profiled.py"), str(profile / f"{name}-{side}.txt")]

    a = await Daemon(tmp / f"{name}-home-a", ["--no-lan", "--no-dht"], wrap=wrap("a")).start()
    b = await Daemon(tmp / f"{name}-home-b", ["--no-lan", "--no-dht"], wrap=wrap("b")).start()
    rows = []
    try:
        uri = (await ok(a.home, "group", "create", "g")).strip()
        await ok(b.home, "group", "join", uri)
        await ok(b.home, "folder", "add", "g", str(db))
        await ok(b.home, "peers", "add", await a.address())
        await connected(b)
        assert a.proc is not None and b.proc is not None
        cpu0 = cpu_seconds(a.proc.pid), cpu_seconds(b.proc.pid)
        t0 = time.perf_counter()
        await ok(a.home, "folder", "add", "g", str(da), timeout=3600)
        took = await converged(db, (files, size), t0)
        rows.append(dict(bench="folder", case=name, files=files, bytes=size, seconds_to_converge=round(took, 2),
                         mb_per_s=round(size / took / 1e6, 1), files_per_s=round(files / took, 1),
                         a_peak_rss_mb=peak_rss_mb(a.proc.pid), b_peak_rss_mb=peak_rss_mb(b.proc.pid),
                         a_cpu_s=round(cpu_seconds(a.proc.pid) - cpu0[0], 2),
                         b_cpu_s=round(cpu_seconds(b.proc.pid) - cpu0[1], 2),
                         rsync_seconds=rsync_seconds(da, tmp)))
        report(**rows[-1])
        if edit:
            rows.append(await edit_case(a, b, da, db))
            report(**rows[-1])
    finally:
        await a.stop()
        await b.stop()
        if profile is not None:
            for side, d in (("a", a), ("b", b)):
                (profile / f"{name}-{side}.log").write_text("".join(d.output))
    return rows


async def edit_case(a: Daemon, b: Daemon, da: Path, db: Path) -> dict[str, object]:
    """Overwrite 1 MiB in the middle of A's large file; time and bytes until B has it."""
    path = da / "big.bin"
    size = path.stat().st_size
    new = os.urandom(1 << 20)
    sent0 = (await a.status())["bytes_sent"]
    t0 = time.perf_counter()
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(new)

    def done() -> bool:
        with open(db / "big.bin", "rb") as f:
            f.seek(size // 2)
            return f.read(len(new)) == new

    took = await converged(db, (1, size), t0, done)
    sent = (await a.status())["bytes_sent"] - sent0
    assert a.proc is not None and b.proc is not None
    return dict(bench="folder", case="edit-large-file", files=1, bytes=size, edited_bytes=len(new),
                seconds_to_converge=round(took, 2), bytes_sent=sent, mb_sent=round(sent / 2**20, 2),
                a_peak_rss_mb=peak_rss_mb(a.proc.pid), b_peak_rss_mb=peak_rss_mb(b.proc.pid))


def syncthing_case(script: Path, name: str, args: argparse.Namespace) -> dict[str, object] | None:
    """One case of the Syncthing reference bench (its own process); its JSON row."""
    sizes = {"one-large-file": ["--big-mb", str(args.big_mb), "--small", "0"],
             "small-files": ["--big-mb", "0", "--small", str(args.small)]}
    if name == "mixed":  # not on the reference's command line: its case() with our tree
        command = [sys.executable, str(REPO / "bench" / "_syncthing_cases.py"), str(script), "mixed", str(args.mixed)]
    elif name in sizes:
        command = [sys.executable, str(script), *sizes[name]]
    else:
        return None
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    report(**row)
    return row


def find_syncthing_bench(given: str | None) -> Path | None:
    if given:
        return Path(given)
    for base in [REPO.parent, *REPO.parents]:
        if (base / SYNCTHING_BENCH).is_file():
            return base / SYNCTHING_BENCH
    return None


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--big-mb", type=int, default=1024)
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--mixed", type=int, default=0, help="files of 1 MiB (0: not run)")
    p.add_argument("--edit-mb", type=int, default=0, help="size of the large file edited in the middle (0: not run)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--syncthing", choices=["auto", "no"], default="auto")
    p.add_argument("--syncthing-bench", default=None, help="path of bench_syncthing.py")
    p.add_argument("--profile", type=Path, default=None, help="directory for the daemons' profiles")
    args = p.parse_args()
    script = find_syncthing_bench(args.syncthing_bench)
    if args.syncthing == "no" or shutil.which("syncthing") is None or script is None:
        script = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Callable[[Path], None], bool]] = []
    if args.big_mb:
        cases.append(("one-large-file", big(args.big_mb), False))
    if args.small:
        cases.append(("small-files", small(args.small), False))
    if args.mixed:
        cases.append(("mixed", mixed(args.mixed), False))
    if args.edit_mb:
        cases.append(("edit", big(args.edit_mb), True))
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, fill, edit in cases:
            with tempfile.TemporaryDirectory(prefix="cobox-folder-bench-") as tmp:
                for row in await case(Path(tmp), name, fill, args.profile, edit):
                    ours.setdefault(str(row["case"]), []).append(float(row["seconds_to_converge"]))  # type: ignore[arg-type]
            if script is not None:
                row2 = syncthing_case(script, name, args)
                if row2 is not None:
                    theirs.setdefault(name, []).append(float(row2["seconds_to_converge"]))
    for name, times in theirs.items():
        mine, st = statistics.median(ours[name]), statistics.median(times)
        report(bench="folder-vs-syncthing", case=name, rounds=len(times), cobox_seconds=mine, syncthing_seconds=st,
               ratio=round(st / mine, 2))


if __name__ == "__main__":
    asyncio.run(main())
