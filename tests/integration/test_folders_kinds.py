"""Folder types, rescan and restore through the real command against two daemon processes on
loopback (issue 19 items 3-4, issue 18 item 8)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tests.integration.daemons import cli, ok
from tests.integration.test_folders import converge, tree


async def status(home: Path) -> dict:
    return json.loads(await ok(home, "folder", "status", "g", "--json"))


async def until_status(home: Path, check, timeout: float = 40) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = await status(home)
        if check(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"folder status never matched: {s}")
        await asyncio.sleep(0.2)


async def test_a_receive_only_folder_keeps_local_changes_to_itself_until_reverted(daemons, tmp_path):
    a, b = await daemons("a"), await daemons("b")
    da, db = tmp_path / "fa", tmp_path / "fb"
    da.mkdir()
    db.mkdir()
    (da / "x.txt").write_text("from a")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "folder", "add", "g", str(da))
    await ok(b.home, "group", "join", uri)
    out = await ok(b.home, "folder", "add", "g", str(db), "--type", "receive-only", "--rescan-interval", "600")
    assert "receive-only" in out and "10 minutes" in out
    await ok(b.home, "peers", "add", await a.address())
    await converge(da, db, check=lambda t: "x.txt" in t)

    (db / "x.txt").write_text("b's local edit")
    (db / "mine.txt").write_text("b's own")
    assert "rescanned" in await ok(b.home, "folder", "rescan", "g")
    s = await until_status(b.home, lambda s: s["out_of_sync"] == 2)  # recorded once stable: not sent
    assert s["type"] == "receive-only" and s["rescan_interval"] == 600 and s["out_of_sync_paths"] == ["mine.txt",
                                                                                                      "x.txt"]
    shown = await ok(b.home, "folder", "status", "g")
    assert "2 local changes not sent" in shown and "mine.txt" in shown
    assert tree(da) == {"x.txt": b"from a"}  # nothing went out
    rc, _, err = await cli(b.home, "folder", "override", "g")
    assert rc != 0 and "override is for a send-only folder" in err

    assert "reverted" in await ok(b.home, "folder", "revert", "g")
    assert tree(db) == {"x.txt": b"from a"}

    # a send-receive folder again: b's new changes go out
    assert "send-receive" in await ok(b.home, "folder", "set", "g", "--type", "send-receive")
    (db / "later.txt").write_text("sent")
    await converge(da, db, check=lambda t: "later.txt" in t)
    await b.stop()
    b = await daemons("b")  # kept across a restart
    s = await status(b.home)
    assert (s["type"], s["rescan_interval"]) == ("send-receive", 600)


async def test_restore_to_a_directory_or_an_existing_file(daemons, tmp_path):
    a = await daemons("a")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "doc.txt").write_text("first")
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "folder", "add", "g", str(folder))
    await until_status(a.home, lambda s: s["files"] == 1 and s["pending_up"] == 0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = await ok(a.home, "folder", "restore", "g", "doc.txt", "--to", str(out_dir))
    assert f"to {out_dir / 'doc.txt'}" in out and (out_dir / "doc.txt").read_text() == "first"
    rc, _, err = await cli(a.home, "folder", "restore", "g", "doc.txt", "--to", str(out_dir))
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "exists: add --force" in err
    (out_dir / "doc.txt").write_text("changed")
    await ok(a.home, "folder", "restore", "g", "doc.txt", "--to", str(out_dir / "doc.txt"), "--force")
    assert (out_dir / "doc.txt").read_text() == "first"
    # in place: "restored" once the file is there
    (folder / "doc.txt").write_text("second version")
    await until_history(a.home, 2)
    history = json.loads(await ok(a.home, "folder", "history", "g", "doc.txt", "--json"))
    out = await ok(a.home, "folder", "restore", "g", "doc.txt", "--version", history[0]["version"])
    assert out.startswith("restored doc.txt") and (folder / "doc.txt").read_text() == "first"


async def until_history(home: Path, n: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while len(json.loads(await ok(home, "folder", "history", "g", "doc.txt", "--json"))) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"doc.txt never had {n} versions")
        await asyncio.sleep(0.2)
