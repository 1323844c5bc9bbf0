"""A folder's first round after a restart, unchanged since: read the feed, scan, plan.

    python bench/scan.py [--files 10000]

One in-process member records ``--files`` files of 1-16 KiB (one round), its store is closed,
then opened again with a new ``FolderSync`` whose first round is timed: ``read_s`` (decode and
merge every op of the feed), ``scan_s`` (walk and stat: no file is read, their ``Synced`` records
match), ``plan_s``, and ``round_s`` (the whole round, which must record nothing), plus
``files_read`` (files whose content was hashed by the scan: 0 when nothing changed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import msgpack
from _util import report

from cobox.folders import scan as scan_module
from cobox.folders.ignore import IgnoreRules
from cobox.folders.model import Stamp
from cobox.folders.plan import Synced, plan
from cobox.folders.sync import FolderSync
from cobox.groups import Group
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from storage import Store


async def member(home: Path, root: Path, address: bytes, identity: DeviceIdentity) -> tuple[Store, FolderSync]:
    store = await Store.open(home)
    group = Group(store, "g", GroupKeys.from_address(address), identity, 0.0)
    await group.load()
    return store, FolderSync(group, root)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cobox-scan-bench-") as tmp:
        root, home = Path(tmp) / "folder", Path(tmp) / "home"
        root.mkdir()
        rnd = random.Random(1)
        for k in range(args.files):
            d = root / f"d{k % 100:02d}"
            d.mkdir(exist_ok=True)
            (d / f"f{k}.bin").write_bytes(os.urandom(rnd.randint(1024, 16 * 1024)))
        address, identity = os.urandom(32), DeviceIdentity.generate()
        store, sync = await member(home, root, address, identity)
        t0 = time.perf_counter()
        await sync.round()
        recorded = time.perf_counter() - t0
        await store.close()

        store, sync = await member(home, root, address, identity)
        for path, value in (await sync.group.store.records(sync._scope)).items():  # as start() loads them
            clock, author, size, mtime, content = msgpack.unpackb(value)
            sync._synced[path] = Synced(Stamp(clock, author), size, mtime, content)
        hashed = 0
        original = scan_module.file_content

        def counting(path, chunker):  # type: ignore[no-untyped-def]
            nonlocal hashed
            hashed += 1
            return original(path, chunker)

        scan_module.file_content = counting  # type: ignore[assignment]
        t0 = time.perf_counter()
        state = await sync.read_ops()
        t1 = time.perf_counter()
        synced = dict(sync._synced)

        def changed(path: str, size: int, mtime: int) -> bool:
            s = synced.get(path)
            return s is None or (s.size, s.mtime) != (size, mtime)

        local = scan_module.scan(root, IgnoreRules.load(root), changed, sync.chunker)
        t2 = time.perf_counter()
        actions = plan(state, local, synced)
        t3 = time.perf_counter()
        await sync.round()
        t4 = time.perf_counter()
        report(bench="folder-restart-scan", files=args.files, first_record_s=round(recorded, 2),
               read_s=round(t1 - t0, 3), scan_s=round(t2 - t1, 3), plan_s=round(t3 - t2, 3),
               actions=len(actions), round_s=round(t4 - t3, 3), files_read=hashed)
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
