"""Directories are synced, empty ones too (issue 18 item 9): a ``Mkdir`` record, merged like a
file's versions, strictly decoded; played on two in-process members (real stores, groups and
folder syncs over in-memory connections)."""

from __future__ import annotations

import msgpack
import pytest

from cobox.entries import decode_op, encode_op
from cobox.errors import MalformedOpError
from cobox.folders.merge import FolderState
from cobox.folders.model import DIR_CONTENT, Delete, Mkdir
from cobox.folders.plan import LocalFile, RecordPut, RemoveLocal, Synced, plan

from ..hostile import connect, members_fixture  # noqa: F401 - the fixture "members"
from .helpers import A, B, put


def dirs_and_files(root) -> set[str]:
    return {str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*")}


async def test_an_empty_directory_appears_on_the_other_device_and_its_removal_too(members):
    a, b = await members("a"), await members("b")
    connect(a, b)
    (a.root / "empty").mkdir()
    (a.root / "deep" / "er").mkdir(parents=True)
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert dirs_and_files(b.root) == {"empty/", "deep/", "deep/er/"}
    assert b.sync.state.files["empty"].kind == "dir"

    (a.root / "empty").rmdir()
    (a.root / "deep" / "er").rmdir()
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert dirs_and_files(b.root) == {"deep/"}
    # and back: b's new empty directory reaches a
    (b.root / "new").mkdir()
    await b.sync.round()
    await a.caught_up(b)
    await a.sync.round()
    assert dirs_and_files(a.root) == {"deep/", "new/"}


async def test_a_directory_deleted_while_it_gets_a_file_elsewhere_stays_with_the_file(members):
    a, b = await members("a"), await members("b")
    connect(a, b)
    (a.root / "d").mkdir()
    await a.sync.round()
    await b.caught_up(a)
    await b.sync.round()
    assert (b.root / "d").is_dir()
    (a.root / "d").rmdir()  # a deletes the directory...
    await a.sync.round()
    (b.root / "d" / "new.txt").write_bytes(b"b's file")  # ...while b puts a file in it
    await b.sync.round()
    for _ in range(3):  # a few rounds each way: no loop, no lost file
        await a.caught_up(b)
        await a.sync.round()
        await b.caught_up(a)
        await b.sync.round()
    for m in (a, b):
        assert dirs_and_files(m.root) == {"d/", "d/new.txt"}, m.name
        assert m.sync.state.files["d"].kind == "dir" and not m.sync.state.conflicts()


def test_removing_a_directory_that_keeps_local_files_records_it_again():
    d1 = Mkdir("d", 0o755, 1, B)
    gone = Delete("d", 2, B, d1.stamp, 5)
    state = FolderState.merge([d1, gone])
    here = LocalFile(0, 0, 0o755, DIR_CONTENT)
    synced = {"d": Synced(d1.stamp, 0, 0, DIR_CONTENT)}
    assert plan(state, {"d": here}, synced) == [RemoveLocal("d", here)]
    mine = LocalFile(3, 7, content=b"\x01" * 32)
    assert plan(state, {"d": here, "d/mine.txt": mine}, synced) == [RecordPut("d", gone.stamp, here),
                                                                     RecordPut("d/mine.txt", None, mine)]


def test_two_devices_making_one_directory_is_no_conflict_and_a_file_loses_to_nothing():
    state = FolderState.merge([Mkdir("d", 0o755, 1, A), Mkdir("d", 0o700, 1, B)])
    assert state.files["d"].kind == "dir" and not state.conflicts()
    clash = FolderState.merge([Mkdir("x", 0o755, 2, B), put("x", b"file", 1, A)])
    assert clash.files["x"].kind == "dir" and [v.kind for v in clash.conflicts().values()] == ["conflict"]


def test_a_directory_record_is_strictly_decoded():
    op = Mkdir("a/b", 0o755, 3, A, None)
    assert decode_op(encode_op(op), author=A, seq=None) == op
    raw = msgpack.unpackb(encode_op(op))
    for bad in ({**raw, "m": 0o17777}, {**raw, "m": True}, {**raw, "p": "../x"}, {**raw, "p": "a//b"},
                {**raw, "s": 0}, {k: v for k, v in raw.items() if k != "m"}, {**raw, "b": [3, A]}):
        with pytest.raises(MalformedOpError):
            decode_op(msgpack.packb(bad), author=A, seq=None)
