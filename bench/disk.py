"""Disk use of a synced folder on a member and on a backup peer, before and after prune and leave.

    python bench/disk.py [--mb 256] [--backup-days 0.00001] [--single-copy]

Two daemons on loopback: a member with a folder of one ``--mb`` MiB file of random bytes and a
backup peer (``[backup] history_days = --backup-days``; 0 keeps everything). Prints one JSON
line per step with the bytes the file system allocates to each home's store (database, WAL,
blob file) and to the folder: synced, after the file is deleted, after ``cobox folder prune``
with ``history_days = 0`` (and the backup peer's own retention), and after ``group leave`` /
``seed remove``. The member keeps one copy (``[folders] single_copy``, the default): "synced" is
measured once it released the chunk entries its file holds; the file deleted locally takes those
with it (the backup peer still holds them), so its prune has little left to free.

``--single-copy`` measures one copy on members instead (``cobox.folders.single``): two members,
a sender A whose folder holds the ``--mb`` MiB file and a receiver B with an empty folder, once
with ``[folders] single_copy = false`` and once with ``true``. After B holds the file (and, with
single copy, once both stores released the chunk entries their files hold), one JSON line
(``bench: "disk-single"``) per setting gives each side's folder bytes, store bytes (database,
WAL and blob file as allocated) and ``*_store_ratio`` (store / folder): what a member pays
beyond the folder itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from _util import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.daemons import Daemon, ok


def allocated(path: Path) -> int:
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def store(home: Path) -> int:
    return sum(allocated(home / n) for n in ("cobox.db", "cobox.db-wal", "cobox.blobs") if (home / n).exists())


async def stored(home: Path, name: str) -> int:
    groups = {g["name"]: g for g in json.loads(await ok(home, "group", "list", "--json"))}
    return groups[name]["stored_bytes"] if name in groups else -1


async def until_stored(home: Path, name: str, at_least: int, timeout: float = 600) -> None:
    async with asyncio.timeout(timeout):
        while await stored(home, name) < at_least:
            await asyncio.sleep(0.5)


async def main(mb: int, backup_days: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "s").mkdir()
        (root / "s" / "config.toml").write_text(f"[backup]\nhistory_days = {backup_days}\n")
        a, s = Daemon(root / "a"), Daemon(root / "s")
        await a.start()
        await s.start()
        try:
            folder = root / "folder"
            folder.mkdir()
            with open(folder / "big.bin", "wb") as f:
                for _ in range(mb):
                    f.write(os.urandom(1024 * 1024))
            size = mb * 1024 * 1024
            await ok(a.home, "group", "create", "g")
            await ok(a.home, "folder", "add", "g", str(folder), "--history-days", "0")
            await ok(s.home, "seed", (await ok(a.home, "group", "invite", "g", "--seed")).strip())
            seed = json.loads(await ok(s.home, "seed", "list", "--json"))[0]["name"]
            await ok(s.home, "peers", "add", await a.address())
            async with asyncio.timeout(3600):  # the member holds it all (stored, or in its file)
                while held(await disk_doc(a.home)) < size:
                    await asyncio.sleep(0.5)
            await until_stored(s.home, seed, size)
            async with asyncio.timeout(600):  # one copy: the member releases what its file holds
                while (await disk_doc(a.home))["stored_bytes"] > size // 100:
                    await asyncio.sleep(0.5)

            def line(step: str) -> None:
                files = {f"{who}_{n.replace('cobox.', '').replace('-', '_')}": allocated(h / n)
                         for who, h in (("member", a.home), ("backup", s.home))
                         for n in ("cobox.db", "cobox.db-wal", "cobox.blobs") if (h / n).exists()}
                report(step=step, folder_mb=mb, folder_bytes=allocated(folder),
                       member_store_bytes=store(a.home), backup_store_bytes=store(s.home), **files)

            line("synced")
            os.remove(folder / "big.bin")
            async with asyncio.timeout(120):
                while json.loads(await ok(a.home, "folder", "status", "g", "--json"))["files"] != 0:
                    await asyncio.sleep(0.5)
            line("file deleted")
            pruned = json.loads(await ok(a.home, "folder", "prune", "g", "--json"))
            if backup_days:
                async with asyncio.timeout(120):  # the release reaches the backup peer, which clears
                    while await stored(s.home, seed) > size // 10:
                        await asyncio.sleep(0.5)
            line(f"pruned (member freed {pruned['disk_freed_bytes']} bytes)")
            await ok(a.home, "group", "leave", "g", "--yes")
            await ok(s.home, "seed", "remove", seed, "--yes")
            line("left")
        finally:
            await a.stop()
            await s.stop()


def held(disk: dict[str, int]) -> int:
    """Entry bytes a member holds: stored, or in its files (single copy)."""
    return disk.get("stored_bytes", 0) + disk.get("outside_bytes", 0)


async def disk_doc(home: Path) -> dict[str, int]:
    return json.loads(await ok(home, "folder", "status", "g", "--json")).get("disk", {})


async def single_case(root: Path, mb: int, single: bool) -> None:
    """Sender A and receiver B, both members, with ``single_copy = single``."""
    homes = [root / f"{side}-{single}" for side in ("a", "b")]
    for home in homes:
        home.mkdir()
        (home / "config.toml").write_text(f"[folders]\nsingle_copy = {str(single).lower()}\n")
    a, b = Daemon(homes[0], ["--no-lan", "--no-dht"]), Daemon(homes[1], ["--no-lan", "--no-dht"])
    await a.start()
    await b.start()
    try:
        fa, fb = root / f"folder-a-{single}", root / f"folder-b-{single}"
        fa.mkdir()
        fb.mkdir()
        with open(fa / "big.bin", "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1024 * 1024))
        size = mb * 1024 * 1024
        uri = (await ok(a.home, "group", "create", "g")).strip()
        await ok(b.home, "group", "join", uri)
        await ok(b.home, "folder", "add", "g", str(fb))
        await ok(b.home, "peers", "add", await a.address())
        await ok(a.home, "folder", "add", "g", str(fa), timeout=3600)
        async with asyncio.timeout(3600):
            while not ((fb / "big.bin").exists() and (fb / "big.bin").stat().st_size == size
                       and json.loads(await ok(b.home, "folder", "status", "g", "--json"))["pending_down"] == 0):
                await asyncio.sleep(0.5)
            # Settled: with single copy, both released what their files hold (a pass runs once the
            # folder has been quiet a few seconds); without, the stores keep the second copy.
            while single and max([(await disk_doc(h))["stored_bytes"] for h in (a.home, b.home)]) > size // 100:
                await asyncio.sleep(0.5)
        use = {side: await disk_doc(d.home) for side, d in (("sender", a), ("receiver", b))}
        folders = {"sender": allocated(fa), "receiver": allocated(fb)}
        stores = {"sender": store(a.home), "receiver": store(b.home)}
        report(bench="disk-single", single_copy=single, folder_mb=mb,
               **{f"{side}_folder_bytes": folders[side] for side in folders},
               **{f"{side}_store_bytes": stores[side] for side in stores},
               **{f"{side}_store_ratio": round(stores[side] / max(1, folders[side]), 3) for side in stores},
               **{f"{side}_stored_entry_bytes": use[side].get("stored_bytes", 0) for side in use},
               **{f"{side}_in_files_bytes": use[side].get("outside_bytes", 0) for side in use})
    finally:
        await a.stop()
        await b.stop()


async def single_main(mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for single in (False, True):
            await single_case(Path(tmp), mb, single)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=256)
    p.add_argument("--backup-days", type=float, default=0.00001)
    p.add_argument("--single-copy", action="store_true", help="two members, single copy off and on")
    args = p.parse_args()
    asyncio.run(single_main(args.mb) if args.single_copy else main(args.mb, args.backup_days))
