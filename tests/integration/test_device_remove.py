"""Removing a device end to end: three members and a backup peer on loopback.

A removes C: A and B move to a new epoch and what they write next reaches each other and never
C (its CLI and its store); C keeps what it had and is told it was removed; its old invite does
not get it back in; the backup peer follows the change and serves the new epoch to a newcomer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from storage import Store
from tests.integration.daemons import cli, ok


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def group_doc(d, name: str = "g") -> dict:
    return next(g for g in (await d.status())["groups"] if g["name"] == name)


async def texts(d, name: str = "g") -> list[str]:
    return [json.loads(x)["text"] for x in (await ok(d.home, "log", "cat", name, "--json")).splitlines()]


async def setup(daemons, names: str, seed: bool = False):
    """Daemons ``names`` (the first creates group g, the others join), all connected to each
    other, and a backup peer ``s`` if ``seed``; returns (daemons, ids, invite, seed name)."""
    ds = [await daemons(n) for n in names]
    uri = (await ok(ds[0].home, "group", "create", "g")).strip()
    for d in ds[1:]:
        await ok(d.home, "group", "join", "--name", "g", stdin=uri.encode())
    seed_name = ""
    if seed:
        s = await daemons("s")
        await ok(s.home, "seed", (await ok(ds[0].home, "group", "invite", "g", "--seed")).strip())
        seed_name = json.loads(await ok(s.home, "seed", "list", "--json"))[0]["name"]
        ds.append(s)
    for k, d in enumerate(ds):
        for other in ds[:k]:
            await ok(d.home, "peers", "add", await other.address())
    ids = [(await d.status())["peer_id"] for d in ds]
    return ds, ids, uri, seed_name


async def removed(d) -> bool:
    return "removed" in await group_doc(d)


@pytest.mark.timeout(300)  # many daemons and CLI processes on a shared 2-core machine
async def test_a_removed_device_gets_nothing_new_keeps_its_data_and_cannot_rejoin(daemons):
    (a, b, c), (ida, idb, idc), uri, _ = await setup(daemons, "abc")
    await ok(c.home, "log", "append", "g", "written by c before")
    await ok(a.home, "log", "append", "g", "written by a before")

    async def a_knows_b_and_c() -> bool:
        return {f["owner"] for f in (await group_doc(a))["feeds"]} >= {ida, idb, idc}

    await until("A to know B and C", a_knows_b_and_c)
    await until("C to hold A's entry", lambda: _has(c, "written by a before"))
    old = await group_doc(a)

    # Without --yes and no terminal: refused, with the text that says what removal does not do.
    rc, out, err = await cli(a.home, "device", "remove", "g", idc[:12])
    assert rc == 1 and "does NOT take back" in out and "--yes" in err
    rc, _, err = await cli(a.home, "device", "remove", "g", ida[:12], "--yes")
    assert rc == 1 and "this device" in err
    out = await ok(a.home, "device", "remove", "g", idc[:12], "--yes")
    assert "removed" in out and "does NOT take back" in out

    await until("B to move to the new epoch", lambda: _epoch(b, 1))
    new = await group_doc(a)
    assert new["discovery_key"] != old["discovery_key"]
    assert (await group_doc(b))["discovery_key"] == new["discovery_key"]
    await until("C to be told it was removed", lambda: removed(c))
    removal = (await group_doc(c))["removed"]
    assert removal["by"] == ida and removal["text"].startswith("removed from g by ")
    assert "removed from g by" in await ok(c.home, "status")

    await ok(a.home, "log", "append", "g", "written by a after")
    await ok(b.home, "log", "append", "g", "written by b after")
    await until("B to get A's new entry", lambda: _has(b, "written by a after"))
    await until("A to get B's new entry", lambda: _has(a, "written by b after"))
    # What was written before stays readable on the remaining devices, across the epochs.
    assert {"written by c before", "written by a before"} <= set(await texts(b))
    await ok(c.home, "log", "append", "g", "written by c after")  # C may write; nobody takes it
    assert set(await texts(c)) >= {"written by c before", "written by a before"}  # C keeps what it had
    assert not any("after" in t and "by c" not in t for t in await texts(c))

    # The old invite does not get C back in: it rejoins the old epoch and is refused there again.
    await ok(c.home, "group", "leave", "g", "--yes")
    await ok(c.home, "group", "join", "--name", "g", stdin=uri.encode())
    await ok(c.home, "peers", "add", await b.address())
    await until("C to be told again", lambda: removed(c))
    # A new device with the old invite is refused in the old epoch, told why, and gets nothing new.
    e = await daemons("e")
    await ok(e.home, "group", "join", "--name", "g", stdin=uri.encode())
    await ok(e.home, "peers", "add", await b.address())
    await until("the newcomer with the old invite to be told", lambda: removed(e))
    doc = await group_doc(e)
    assert doc["removed"]["text"].startswith("not carried into the new epoch of g by ") and doc["epoch"] == 0
    assert not any("after" in t for t in await texts(e))
    await ok(b.home, "log", "append", "g", "written by b last")
    await until("A to get B's last entry", lambda: _has(a, "written by b last"))
    assert "written by c after" not in await texts(a)
    # C's store: no feed of the new epoch, none of A's or B's new feeds, nothing they wrote after.
    assert not any("after" in t and "by c" not in t for t in await texts(c))
    await c.stop()
    store = await Store.open(c.home)
    try:
        assert store.feeds(new["discovery_key"]) == []
        new_feeds = {f["key"] for f in (await group_doc(a))["feeds"]} - {f["key"] for f in old["feeds"]}
        assert len(new_feeds) == 2 and not [f for f in store.feeds() if f.key.hex() in new_feeds]
    finally:
        await store.close()


@pytest.mark.timeout(300)  # many daemons and CLI processes on a shared 2-core machine
async def test_a_backup_peer_follows_the_epoch_change_and_keeps_serving(daemons):
    (a, b, s), (ida, idb, ids), _, seed_name = await setup(daemons, "ab", seed=True)
    await ok(a.home, "log", "append", "g", "written by a before")

    async def a_knows_b_and_s() -> bool:
        owners = {f["owner"] for f in (await group_doc(a))["feeds"]}
        backups = json.loads(await ok(a.home, "backup", "status", "g", "--json"))
        return owners >= {ida, idb} and any(x["peer"] == ids for x in backups)

    await until("A to know B and the backup peer", a_knows_b_and_s)
    await ok(a.home, "device", "remove", "g", idb[:12], "--yes")
    await until("the backup peer to follow", lambda: _epoch(s, 1, seed_name))
    assert (await group_doc(s, seed_name))["discovery_key"] == (await group_doc(a))["discovery_key"]
    assert (await group_doc(s, seed_name))["role"] == "seed"
    await ok(a.home, "log", "append", "g", "written by a after")
    await until("the backup peer to hold the new epoch", lambda: _synced(s, seed_name))
    # A newcomer with a new invite gets the new epoch from the backup peer alone.
    new_uri = (await ok(a.home, "group", "invite", "g")).strip()
    await a.stop()
    await b.stop()
    d = await daemons("d")
    await ok(d.home, "group", "join", "--name", "g", stdin=new_uri.encode())
    await ok(d.home, "peers", "add", await s.address())
    await until("D to get the new epoch from the backup peer", lambda: _has(d, "written by a after"))


async def _epoch(d, n: int, name: str = "g") -> bool:
    return (await group_doc(d, name))["epoch"] == n


async def _has(d, text: str) -> bool:
    return text in await texts(d)


async def _synced(d, name: str) -> bool:
    rc, _, _ = await cli(d.home, "sync", "wait", name, "--timeout", "2")
    return rc == 0


def files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cobox-tmp-" not in p.name}


@pytest.mark.timeout(300)  # many daemons and CLI processes on a shared 2-core machine
async def test_folder_sync_continues_across_the_epoch_change_and_a_restart(daemons, tmp_path):
    (a, b, c), (_, _, idc), _, _ = await setup(daemons, "abc")
    fa, fb = tmp_path / "fa", tmp_path / "fb"
    fa.mkdir()
    fb.mkdir()
    (fa / "before.txt").write_text("written before the removal")
    await ok(a.home, "folder", "add", "g", str(fa))
    await ok(b.home, "folder", "add", "g", str(fb))

    async def same(*want: str) -> bool:
        ta, tb = files(fa), files(fb)
        return ta == tb and set(want) <= set(ta)

    await until("the folder to sync", lambda: same("before.txt"))
    await ok(a.home, "device", "remove", "g", idc[:12], "--yes")
    await until("B to move to the new epoch", lambda: _epoch(b, 1))
    (fa / "after.txt").write_text("written after the removal")
    (fb / "before.txt").write_text("edited on B after the removal")
    await until("both changes to cross", lambda: same("after.txt"))
    assert files(fa)["before.txt"] == b"edited on B after the removal"
    await b.stop()
    await b.start()
    assert (await group_doc(b))["epoch"] == 1  # the epoch is kept across a restart
    await ok(b.home, "peers", "add", await a.address())  # (no discovery in these tests)
    (fa / "restart.txt").write_text("written while B restarted")
    await until("the folder to sync after B's restart", lambda: same("restart.txt"))
    assert not [p for p in files(fb) if "conflict" in p]  # nothing recorded twice across the change
    # Re-adding the removed device is a new invite (the new epoch's): it then gets what is new.
    await ok(a.home, "log", "append", "g", "welcome back")
    await ok(c.home, "group", "leave", "g", "--yes")
    await ok(c.home, "group", "join", "--name", "g", stdin=(await ok(a.home, "group", "invite", "g")).strip().encode())
    await ok(c.home, "peers", "add", await a.address())
    await until("C, re-invited, to get the new epoch", lambda: _has(c, "welcome back"))
    assert "removed" not in await group_doc(c)
