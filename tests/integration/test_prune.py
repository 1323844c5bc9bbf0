"""History that expires, end to end (issue 16 items 3, 4, 6): a member prunes a deleted file with
``cobox folder prune`` (``--history-days 0``) and frees its space; ``folder history`` marks the
version as no longer here but held by the backup peer that keeps everything; a backup peer with
a short ``[backup] history_days`` clears what the member released, the other keeps it; status
shows the group's disk use."""

from __future__ import annotations

import asyncio
import json
import os
import re

from tests.integration.daemons import ok
from tests.integration.test_leave import store_bytes

SIZE = 8 * 1024 * 1024


async def stored(home, name: str) -> int:
    groups = {g["name"]: g for g in json.loads(await ok(home, "group", "list", "--json"))}
    return groups[name]["stored_bytes"] if name in groups else -1


async def until(check, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_prune_frees_the_member_and_backup_peers_keep_by_their_policy(daemons, tmp_path):
    # The member keeps a second copy: what prune frees is stored data (with one copy,
    # cobox.folders.single, the deleted file takes its released entries with it).
    a = await daemons("a", config=["[folders]", "single_copy = false"])
    keeper = await daemons("keeper")
    forgetter = await daemons("short", config=["[backup]", "history_days = 0.00002"])  # about 2 seconds
    folder = tmp_path / "fa"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(SIZE))
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "folder", "add", "g", str(folder), "--history-days", "0")
    seed_uri = (await ok(a.home, "group", "invite", "g", "--seed")).strip()
    names = {}
    for s in (keeper, forgetter):
        await ok(s.home, "seed", seed_uri)
        names[s] = json.loads(await ok(s.home, "seed", "list", "--json"))[0]["name"]
        await ok(s.home, "peers", "add", await a.address())
    for s in (keeper, forgetter):
        await until(lambda s=s: _at_least(s.home, names[s], SIZE), "the backup peers to hold the file")

    async def receipts_cover() -> bool:
        backups = json.loads(await ok(a.home, "backup", "status", "g", "--json"))
        length = backups[0]["feeds"][0]["length"] if backups else 0
        return len(backups) == 2 and all(b["feeds"][0]["held"] >= length > 0 for b in backups)

    await until(receipts_cover, "receipts from both backup peers")
    backups = {b["peer"]: b for b in json.loads(await ok(a.home, "backup", "status", "g", "--json"))}
    assert sorted(b["keep_days"] for b in backups.values()) == [0, 1]
    os.remove(folder / "big.bin")

    async def deleted() -> bool:
        return json.loads(await ok(a.home, "folder", "status", "g", "--json"))["files"] == 0

    await until(deleted, "the deletion to be recorded")
    disk = json.loads(await ok(a.home, "folder", "status", "g", "--json"))["disk"]
    assert disk["history_bytes"] == disk["reclaimable_bytes"] == SIZE and disk["folder_bytes"] == 0
    before = store_bytes(a.home)

    out = await ok(a.home, "folder", "prune", "g")
    assert re.search(r"1 versions expired, \d+ chunks cleared, 8\.\d MiB freed", out), out
    assert before - store_bytes(a.home) >= SIZE * 0.9
    status = json.loads(await ok(a.home, "status", "--json"))
    assert status["groups"][0]["disk"]["history_bytes"] == 0
    assert "disk: folder 0 bytes, stored" in await ok(a.home, "status")

    # The version is gone here; the backup peer that keeps everything still holds it.
    history = await ok(a.home, "folder", "history", "g", "big.bin")
    keeper_id = json.loads(await ok(keeper.home, "status", "--json"))["peer_id"]
    assert f"(not here; held by backup peer {keeper_id[:8]})" in history, history
    # The backup peer with 2 seconds of history clears what the member released; the other keeps it.
    await until(lambda: _at_most(forgetter.home, names[forgetter], SIZE // 10), "the short backup to clear")
    assert await stored(keeper.home, names[keeper]) >= SIZE


async def _at_least(home, name: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await stored(home, name) >= n


async def _at_most(home, name: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    return 0 <= await stored(home, name) <= n
