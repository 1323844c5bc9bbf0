"""History and restore of a folder (cobox.folders.history), in process: a real store, group and
folder sync, no sockets. Deletions are dated when they were recorded (not 1970); a restore
``to`` a directory keeps the file's name, an existing file is replaced only with ``force``; a
restore in place answers "in place" only once the file is on disk."""

from __future__ import annotations

import time

import msgpack
import pytest

from cobox.entries import decode_op, encode_op
from cobox.errors import MalformedOpError, UsageError
from cobox.folders import history as versions
from cobox.folders.model import Delete

from ..hostile import members_fixture  # noqa: F401 - the fixture "members"
from .helpers import A


async def test_a_deletion_is_dated_when_it_was_recorded(members):
    a = await members("a")
    (a.root / "doc.txt").write_bytes(b"first")
    (a.root / "doc.txt").touch()
    await a.sync.round()
    (a.root / "doc.txt").unlink()
    before = time.time()
    await a.sync.round()
    after = time.time()
    history = await versions.history(a.sync, "doc.txt")
    assert [v["deleted"] for v in history] == [False, True]
    assert before <= history[1]["mtime"] <= after  # not 0 (1970-01-01)


def test_the_deletion_time_is_part_of_the_record_and_strictly_decoded():
    d = Delete("x", 2, A, None, 1_700_000_000 * 10**9)
    assert decode_op(encode_op(d), author=A, seq=None) == d
    raw = msgpack.unpackb(encode_op(d))
    for bad in (None, -1, "now", True, 2**63, 1.5):
        with pytest.raises(MalformedOpError):
            decode_op(msgpack.packb({**raw, "t": bad}), author=A, seq=None)
    with pytest.raises(MalformedOpError):
        decode_op(msgpack.packb({k: v for k, v in raw.items() if k != "t"}), author=A, seq=None)


async def test_restore_to_a_directory_keeps_the_name_and_an_existing_file_needs_force(members, tmp_path):
    a = await members("a")
    (a.root / "sub").mkdir()
    (a.root / "sub" / "doc.txt").write_bytes(b"first")
    await a.sync.round()
    (a.root / "sub" / "doc.txt").write_bytes(b"second")
    await a.sync.round()
    first = (await versions.history(a.sync, "sub/doc.txt"))[0]["version"]
    out = tmp_path / "out"
    out.mkdir()
    r = await versions.restore(a.sync, "sub/doc.txt", first, str(out))
    assert r == {"written": str(out / "doc.txt"), "version": first}
    assert (out / "doc.txt").read_bytes() == b"first"

    (out / "doc.txt").write_bytes(b"mine")
    for target in (out, out / "doc.txt"):  # the directory (the same file inside it) or the file itself
        with pytest.raises(UsageError, match="exists: add --force"):
            await versions.restore(a.sync, "sub/doc.txt", first, str(target))
        assert (out / "doc.txt").read_bytes() == b"mine"
    r = await versions.restore(a.sync, "sub/doc.txt", first, str(out / "doc.txt"), force=True)
    assert r["written"] == str(out / "doc.txt") and (out / "doc.txt").read_bytes() == b"first"

    (out / "sub").mkdir()
    (out / "sub" / "doc.txt").mkdir()  # a directory where the file would go: refused even with force
    with pytest.raises(UsageError, match="not a regular file"):
        await versions.restore(a.sync, "sub/doc.txt", first, str(out / "sub"), force=True)


async def test_restore_in_place_answers_once_the_file_is_written(members):
    a = await members("a")
    (a.root / "doc.txt").write_bytes(b"first")
    await a.sync.round()
    (a.root / "doc.txt").write_bytes(b"second, longer")
    await a.sync.round()
    first = (await versions.history(a.sync, "doc.txt"))[0]["version"]
    await a.sync.start()  # the folder's own task applies the restore
    r = await versions.restore(a.sync, "doc.txt", first, None, wait=20)
    assert r == {"restored": "doc.txt", "version": first, "in_place": True}
    assert (a.root / "doc.txt").read_bytes() == b"first"  # in place when it answered
