"""Folder types on two in-process members (real stores, groups and folder syncs, in-memory
connections): a receive-only folder sends nothing and reverts; a send-only folder applies
nothing from the group and its override makes the group take its files."""

from __future__ import annotations

from cobox.folders.kinds import FolderKind

from ..hostile import connect, members_fixture, tree  # noqa: F401 - the fixture "members"


async def _pair(members):
    a, b = await members("a"), await members("b")
    connect(a, b)
    (a.root / "x.txt").write_bytes(b"from a")
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert tree(b.root) == {"x.txt": b"from a"}
    return a, b


async def test_a_receive_only_folder_sends_nothing_and_revert_brings_the_groups_files_back(members):
    a, b = await _pair(members)
    b.sync.gate.kind = FolderKind.RECEIVE_ONLY
    length = b.feed.length
    (b.root / "x.txt").write_bytes(b"b's local edit")
    (b.root / "y.txt").write_bytes(b"b's new file")
    (b.root / "new" / "deeper").mkdir(parents=True)  # new directories, one holding a file
    (b.root / "new" / "deeper" / "f.txt").write_bytes(b"f")
    await b.sync.round()
    assert b.feed.length == length  # nothing recorded
    status = b.sync.status()
    assert (status["type"], status["out_of_sync"], status["out_of_sync_paths"]) == (
        "receive-only", 5, ["new", "new/deeper", "new/deeper/f.txt", "x.txt", "y.txt"])
    # remote changes still come in
    (a.root / "z.txt").write_bytes(b"new from a")
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert (b.root / "z.txt").read_bytes() == b"new from a"

    done = b.sync.gate.request("revert")
    await b.sync.round()
    assert done.done() and b.feed.length == length
    assert tree(b.root) == {"x.txt": b"from a", "z.txt": b"new from a"}  # the local edit and file are gone
    assert not (b.root / "new").exists()  # and the new directories, in one revert
    assert b.sync.status()["out_of_sync"] == 0
    await b.sync.round()
    assert tree(b.root) == {"x.txt": b"from a", "z.txt": b"new from a"}


async def test_a_send_only_folder_applies_nothing_and_override_makes_the_group_take_its_files(members):
    a, b = await _pair(members)
    b.sync.gate.kind = FolderKind.SEND_ONLY
    (a.root / "x.txt").write_bytes(b"a's edit")
    (a.root / "w.txt").write_bytes(b"a's new file")
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert tree(b.root) == {"x.txt": b"from a"}  # not applied here
    assert b.sync.status()["out_of_sync_paths"] == ["w.txt", "x.txt"]
    (b.root / "v.txt").write_bytes(b"b's new file")  # local changes still go out
    await b.sync.round()
    await a.caught_up(b)
    await a.sync.round()
    assert (a.root / "v.txt").read_bytes() == b"b's new file"

    done = b.sync.gate.request("override")
    await b.sync.round()
    assert done.done()
    await a.caught_up(b)
    await a.sync.round()
    assert tree(a.root) == tree(b.root) == {"x.txt": b"from a", "v.txt": b"b's new file"}
    assert not a.sync.state.conflicts() and b.sync.status()["out_of_sync"] == 0
