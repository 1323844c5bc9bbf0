"""Directories and files being written, through real daemon processes on loopback (issue 18
item 9): an empty directory reaches the other device and so does its removal; a file still
being written is not recorded until it holds still."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tests.integration.daemons import cli, ok


def entries(root: Path) -> set[str]:
    return {str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*")
            if ".cobox-tmp-" not in p.name}


async def until(what: str, check, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_an_empty_directory_and_its_removal_reach_the_other_device(daemons, tmp_path):
    a, b = await daemons("a"), await daemons("b")
    da, db = tmp_path / "fa", tmp_path / "fb"
    da.mkdir()
    db.mkdir()
    (da / "empty").mkdir()
    (da / "deep" / "er").mkdir(parents=True)
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "folder", "add", "g", str(da))
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "folder", "add", "g", str(db))
    await ok(b.home, "peers", "add", await a.address())

    async def same() -> bool:
        return entries(db) == entries(da)

    await until("the empty directories on b", same)
    assert entries(db) == {"empty/", "deep/", "deep/er/"}
    status = json.loads(await ok(b.home, "folder", "status", "g", "--json"))
    assert status["files"] == 0  # directories are not counted as files
    (da / "deep" / "er").rmdir()
    (da / "empty").rmdir()
    await until("the removal on b", same)
    assert entries(db) == {"deep/"}


async def test_a_file_being_written_is_recorded_only_once_complete(daemons, tmp_path):
    a = await daemons("a", config=["[folders]", "stable_wait = 3.0"])
    folder = tmp_path / "f"
    folder.mkdir()
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "folder", "add", "g", str(folder))
    stop = asyncio.Event()
    written = 0

    async def writer() -> None:  # a slow writer: a piece every 0.2 s until told to stop
        nonlocal written
        with open(folder / "video.bin", "wb") as f:
            while not stop.is_set():
                f.write(b"x" * 1000)
                f.flush()
                written += 1000
                await asyncio.sleep(0.2)

    async def started() -> bool:
        return written > 0

    task = asyncio.create_task(writer())
    try:
        await until("the first bytes", started)
        assert "rescanned" in await ok(a.home, "folder", "rescan", "g")
        status = json.loads(await ok(a.home, "folder", "status", "g", "--json"))
        assert status["waiting_stable"] == 1 and status["files"] == 0
        rc, _, err = await cli(a.home, "folder", "history", "g", "video.bin")
        assert rc != 0 and "no file" in err  # no partial version recorded
    finally:
        stop.set()
        await task

    async def recorded() -> bool:
        rc, out, _ = await cli(a.home, "folder", "history", "g", "video.bin", "--json")
        return rc == 0 and bool(json.loads(out))

    await until("the complete file recorded", recorded)
    history = json.loads(await ok(a.home, "folder", "history", "g", "video.bin", "--json"))
    assert [v["size"] for v in history] == [written]  # one version: the whole file
