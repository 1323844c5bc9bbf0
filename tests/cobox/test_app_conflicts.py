"""Conflicts resolved from the dashboard (cobox.folders.conflicts): keep the original, keep the
copy, keep both. In process: two members edit the same files while apart, meet, see a conflict
copy each; one resolves; both converge on the same files on disk and no conflict is left."""

from __future__ import annotations

import asyncio

import pytest

from cobox.errors import FolderError
from cobox.folders import conflicts

from .hostile import connect, members_fixture, tree  # noqa: F401 - the fixture "members"


async def _rounds_until(members, check, what: str, timeout: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while True:
                for m in members:
                    await m.sync.round()
                if await check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_keep_original_copy_and_both_converge_on_both_members(members):
    a, b = await members("a"), await members("b")
    for name in ("one.txt", "two.txt", "three.txt"):
        (a.root / name).write_bytes(f"A's {name}".encode())
        (b.root / name).write_bytes(f"B's {name}, longer".encode())
    await a.sync.round()
    await b.sync.round()
    connect(a, b)
    await a.caught_up(b)
    await b.caught_up(a)
    async def three_copies() -> bool:
        return (len(await conflicts.listing(a.sync)) == 3 and len(await conflicts.listing(b.sync)) == 3
                and tree(a.root) == tree(b.root))

    await _rounds_until([a, b], three_copies, "three conflict copies on both")
    listed = {c["origin"]: c for c in await conflicts.listing(a.sync)}
    assert set(listed) == {"one.txt", "two.txt", "three.txt"}
    shown = tree(a.root)
    copy_content = {o: shown[c["copy"]] for o, c in listed.items()}
    kept_content = {o: shown[o] for o in listed}
    assert listed["one.txt"]["origin_size"] == len(kept_content["one.txt"])

    with pytest.raises(FolderError):
        await conflicts.resolve(a.sync, listed["one.txt"]["copy"], "neither")
    with pytest.raises(FolderError):
        await conflicts.resolve(a.sync, "one.txt", "both")  # not a conflict copy

    await conflicts.resolve(a.sync, listed["one.txt"]["copy"], "original")
    await conflicts.resolve(a.sync, listed["two.txt"]["copy"], "copy")
    await conflicts.resolve(a.sync, listed["three.txt"]["copy"], "both")
    want = {"one.txt": kept_content["one.txt"], "two.txt": copy_content["two.txt"],
            "three.txt": kept_content["three.txt"], listed["three.txt"]["copy"]: copy_content["three.txt"]}
    await b.caught_up(a)
    async def resolved() -> bool:
        return (tree(a.root) == want and tree(b.root) == want and not await conflicts.listing(a.sync)
                and not await conflicts.listing(b.sync))

    await _rounds_until([a, b], resolved, "both members to show the resolved files and no conflict")
    with pytest.raises(FolderError):
        await conflicts.resolve(a.sync, listed["one.txt"]["copy"], "copy")  # resolved already


async def test_files_lists_the_shown_files_filtered_and_bounded(members):
    a = await members("a")
    for name in ("Photo1.jpg", "photo2.jpg", "notes.txt"):
        (a.root / name).write_bytes(b"x" * 3)
    await a.sync.round()
    listed = await conflicts.files(a.sync, "PHOTO", 1)
    assert listed["total"] == 2 and [f["path"] for f in listed["files"]] == ["Photo1.jpg"]
    assert listed["files"][0]["size"] == 3
    assert (await conflicts.files(a.sync))["total"] == 3
