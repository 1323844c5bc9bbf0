"""Folder sync end to end: daemon processes on loopback syncing real directories."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import msgpack
import pytest
from blake3 import blake3

from cobox.folders.sync import FolderSync
from cobox.groups import Group
from cobox.uri import parse_invite
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store
from tests.integration.daemons import ok


def tree(root: Path) -> dict[str, bytes]:
    """The synced files (the test's ignored *.tmp files and the applier's temp files left out)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cobox-tmp-" not in p.name and not p.name.endswith(".tmp")}


async def converge(*roots: Path, timeout: float = 40, check=None) -> dict[str, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        trees = [tree(r) for r in roots]
        if all(t == trees[0] for t in trees) and (check is None or check(trees[0])):
            return trees[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"folders did not converge: {[sorted(t) for t in trees]}")
        await asyncio.sleep(0.2)


async def own_bytes(home: Path) -> int:
    groups = json.loads(await ok(home, "group", "list", "--json"))
    return groups[0]["stored_bytes"]


async def test_two_devices_sync_a_folder(daemons, tmp_path):
    a, b = await daemons("a"), await daemons("b")
    da, db = tmp_path / "fa", tmp_path / "fb"
    da.mkdir()
    db.mkdir()
    big = os.urandom(3 * 1024 * 1024)
    (da / "notes.txt").write_text("hello")
    (da / "empty").write_bytes(b"")
    (da / "big.bin").write_bytes(big)
    (da / "deep" / "er").mkdir(parents=True)
    (da / "deep" / "er" / "ünïcödé ✓.md").write_text("unicode")
    (da / ".coboxignore").write_text("*.tmp\n")
    (db / ".coboxignore").write_text("*.tmp\n")  # each device's own: the rules file is not synced
    (da / "scratch.tmp").write_text("not synced")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "folder", "add", "g", str(da))
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "folder", "add", "g", str(db))
    await ok(b.home, "peers", "add", await a.address())
    files = await converge(da, db, check=lambda t: "big.bin" in t and "deep/er/ünïcödé ✓.md" in t)
    assert files["big.bin"] == big and not (db / "scratch.tmp").exists()
    assert blake3((db / "big.bin").read_bytes()).digest() == blake3(big).digest()

    # Modify, delete and rename on B; A follows.
    (db / "notes.txt").write_text("hello again")
    os.remove(db / "empty")
    os.rename(db / "deep" / "er" / "ünïcödé ✓.md", db / "moved.md")
    files = await converge(da, db, check=lambda t: t.get("notes.txt") == b"hello again" and "moved.md" in t
                           and "empty" not in t)

    # Dedup: a copy of the big file stores (almost) nothing new.
    before = await own_bytes(a.home)
    (da / "copy.bin").write_bytes(big)
    await converge(da, db, check=lambda t: "copy.bin" in t)
    assert await own_bytes(a.home) - before < 64 * 1024

    # Concurrent edits: B is offline while both edit; one conflict copy on both sides.
    await b.stop()
    (da / "notes.txt").write_text("A's edit")
    await asyncio.sleep(0)
    (db / "notes.txt").write_text("B's edit while offline")
    b = await daemons("b")
    await ok(b.home, "peers", "add", await a.address())
    files = await converge(da, db, check=lambda t: any(".conflict-" in p for p in t))
    conflicts = [p for p in files if ".conflict-" in p]
    assert len(conflicts) == 1
    assert {files["notes.txt"], files[conflicts[0]]} == {b"A's edit", b"B's edit while offline"}
    status = json.loads(await ok(a.home, "folder", "status", "g", "--json"))
    assert status["conflicts"] == conflicts

    # History and restore.
    history = json.loads(await ok(a.home, "folder", "history", "g", "notes.txt", "--json"))
    first = next(v for v in history if not v["deleted"] and v["size"] == 5)
    await ok(a.home, "folder", "restore", "g", "notes.txt", "--version", first["version"], "--to",
             str(tmp_path / "old-notes.txt"))
    assert (tmp_path / "old-notes.txt").read_bytes() == b"hello"
    await ok(b.home, "folder", "restore", "g", "notes.txt", "--version", first["version"])
    await converge(da, db, check=lambda t: t.get("notes.txt") == b"hello")
    listed = json.loads(await ok(a.home, "folder", "list", "--json"))
    assert listed[0]["path"] == str(da)


async def test_sigkill_during_a_large_transfer_then_the_file_completes(daemons, tmp_path):
    a, b = await daemons("a"), await daemons("b")
    da, db = tmp_path / "fa", tmp_path / "fb"
    da.mkdir()
    db.mkdir()
    big = os.urandom(160 * 1024 * 1024)  # large enough that the kill comes mid-transfer on a fast path
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "folder", "add", "g", str(da))
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "folder", "add", "g", str(db))
    await ok(b.home, "peers", "add", await a.address())
    # written once B is connected, so B receives the chunks as A records them (not all at once)
    (da / "large.bin").write_bytes(big)
    # Kill B once part of the file's chunks have arrived, before it is complete.
    deadline = time.monotonic() + 60
    while True:
        have = json.loads(await ok(b.home, "group", "list", "--json"))[0]["sync"]["have"]
        if have > 20:
            break
        assert time.monotonic() < deadline, "no chunk arrived"
        await asyncio.sleep(0.05)
    await b.kill()
    assert not (db / "large.bin").exists(), "the transfer finished before the kill: nothing was tested"
    b = await daemons("b")
    await ok(b.home, "peers", "add", await a.address())
    await converge(da, db, timeout=90, check=lambda t: "large.bin" in t)
    assert blake3((db / "large.bin").read_bytes()).digest() == blake3(big).digest()
    assert not [p for p in db.iterdir() if p.name.startswith(".cobox-tmp-")]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_1gb_file_syncs_in_bounded_memory(daemons, tmp_path):
    a, b = await daemons("a"), await daemons("b")
    da, db = tmp_path / "fa", tmp_path / "fb"
    da.mkdir()
    db.mkdir()
    digest = blake3()
    with open(da / "huge.bin", "wb") as f:
        for _ in range(1024):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "folder", "add", "g", str(da), timeout=600)
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "folder", "add", "g", str(db))
    await ok(b.home, "peers", "add", await a.address())
    deadline = time.monotonic() + 800
    while not ((db / "huge.bin").exists() and (db / "huge.bin").stat().st_size == 1 << 30):
        assert time.monotonic() < deadline, "the 1 GB file did not arrive"
        await asyncio.sleep(0.5)
    h = blake3()
    with open(db / "huge.bin", "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    assert h.digest() == digest.digest()
    for d in (a, b):
        assert d.proc is not None
        assert _peak_rss_mb(d.proc.pid) < 200, f"peak RSS {_peak_rss_mb(d.proc.pid):.0f} MB"


async def test_three_devices_converge(daemons, tmp_path):
    devs = [await daemons(n) for n in "abc"]
    dirs = [tmp_path / f"f{n}" for n in "abc"]
    for d in dirs:
        d.mkdir()
    (dirs[0] / "from-a.txt").write_text("a")
    uri = (await ok(devs[0].home, "group", "create", "g")).strip()
    await ok(devs[0].home, "folder", "add", "g", str(dirs[0]))
    for dev, d in zip(devs[1:], dirs[1:], strict=True):
        await ok(dev.home, "group", "join", uri)
        (d / f"from-{d.name[-1]}.txt").write_text(d.name[-1])
        await ok(dev.home, "folder", "add", "g", str(d))
    # A chain: c talks only to b, b to a.
    await ok(devs[1].home, "peers", "add", await devs[0].address())
    await ok(devs[2].home, "peers", "add", await devs[1].address())
    files = await converge(*dirs, check=lambda t: len(t) == 3)
    assert files == {"from-a.txt": b"a", "from-b.txt": b"b", "from-c.txt": b"c"}
    (dirs[2] / "from-a.txt").write_text("edited on c")
    await converge(*dirs, check=lambda t: t["from-a.txt"] == b"edited on c")
    await ok(devs[0].home, "sync", "wait", "g", "--timeout", "30")


async def test_a_hostile_member_is_refused_and_reported_by_a_daemon(daemons, tmp_path):
    """An in-process member writes malformed records into its own feed and connects to a daemon:
    the daemon syncs the honest file and reports the refusals per device (issue 11)."""
    a = await daemons("a")
    da = tmp_path / "fa"
    da.mkdir()
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "folder", "add", "g", str(da))
    store = await Store.open(tmp_path / "hostile")
    identity = DeviceIdentity.generate()
    node = Node(identity, store)
    try:
        group = Group(store, "g", GroupKeys.from_address(parse_invite(uri).key), identity, 0.0)
        await group.load()
        node.join(group)
        root = tmp_path / "hostile-folder"
        root.mkdir()
        (root / "honest.txt").write_text("from a hostile member, but valid")
        await FolderSync(group, root).round()
        await group.append_records([msgpack.packb(o) for o in (
            {"type": [1]}, {"type": "log", "text": "x", "time": 1.0, "author": 2**40})])
        await node.connect(await a.address())
        me = identity.peer_id.hex()
        deadline = time.monotonic() + 40
        while True:
            status = json.loads(await ok(a.home, "folder", "status", "g", "--json"))
            if (da / "honest.txt").exists() and status["devices"].get(me, {}).get("records_refused") == 2:
                break
            assert time.monotonic() < deadline, f"not refused and reported: {status}"
            await asyncio.sleep(0.2)
        assert status["devices"][me]["last_refused_reason"] and status["error"] == ""
        doc = json.loads(await ok(a.home, "status", "--json"))
        assert doc["groups"][0]["devices"][me]["records_refused"] == 2
        entries = [json.loads(line) for line in (await ok(a.home, "log", "cat", "g", "--json")).splitlines()]
        assert [e for e in entries if e.get("refused")] and all(e["author"] == me for e in entries
                                                                  if e.get("refused"))
        assert "records refused" in await ok(a.home, "folder", "status", "g")
    finally:
        await node.close()
        await store.close()
