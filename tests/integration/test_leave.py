"""Leaving frees (issue 16 item 5): ``group leave`` and ``seed remove`` delete the group's feeds,
entries, records and blob space (after a confirmation: off a terminal ``--yes`` is required),
``--keep-data`` keeps them. Measured on the store's files, as the file system allocates them."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tests.integration.daemons import cli, ok

SIZE = 8 * 1024 * 1024


def store_bytes(home: Path) -> int:
    """What the store occupies on disk (allocated blocks of the database, its WAL and blobs)."""
    total = 0
    for name in ("cobox.db", "cobox.db-wal", "cobox.blobs"):
        p = home / name
        if p.exists():
            total += p.stat().st_blocks * 512
    return total


async def wait_stored(home: Path, name: str, at_least: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            groups = {g["name"]: g for g in json.loads(await ok(home, "group", "list", "--json"))}
            if name in groups and groups[name]["stored_bytes"] >= at_least:
                return
            await asyncio.sleep(0.2)


async def test_leave_and_seed_remove_free_the_store(daemons, tmp_path):
    a = await daemons("a", config=["[folders]", "single_copy = false"])  # what leave frees is stored data
    s = await daemons("s")
    folder = tmp_path / "fa"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(SIZE))
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "folder", "add", "g", str(folder))
    assert "backing up" in await ok(s.home, "seed", (await ok(a.home, "group", "invite", "g", "--seed")).strip())
    seed_name = json.loads(await ok(s.home, "seed", "list", "--json"))[0]["name"]
    await ok(s.home, "peers", "add", await a.address())
    await wait_stored(a.home, "g", SIZE)
    await wait_stored(s.home, seed_name, SIZE)
    # A second group, left with --keep-data: its records stay.
    await ok(a.home, "group", "create", "kept")
    await ok(a.home, "log", "append", "kept", "still here")

    member_before, seed_before = store_bytes(a.home), store_bytes(s.home)
    rc, _, err = await cli(a.home, "group", "leave", "g")  # no terminal, no --yes: refused
    assert rc == 1 and "--yes" in err, err
    assert "g" in {g["name"] for g in json.loads(await ok(a.home, "group", "list", "--json"))}

    out = await ok(a.home, "group", "leave", "g", "--yes")
    assert "left g: deleted 8." in out and "of disk freed" in out, out
    member_after = store_bytes(a.home)
    assert member_before - member_after >= SIZE * 0.9, (member_before, member_after)
    assert (folder / "big.bin").stat().st_size == SIZE  # the folder's own files stay

    out = await ok(s.home, "seed", "remove", seed_name, "--yes")
    assert out.startswith(f"no longer backing up {seed_name}: deleted 8."), out
    seed_after = store_bytes(s.home)
    assert seed_before - seed_after >= SIZE * 0.9, (seed_before, seed_after)

    out = await ok(a.home, "group", "leave", "kept", "--keep-data")
    assert "its data is kept" in out
    status = json.loads(await ok(a.home, "status", "--json"))
    assert not status.get("groups")
    print(f"\nleave: member {member_before} -> {member_after} bytes, seed {seed_before} -> {seed_after} bytes")
