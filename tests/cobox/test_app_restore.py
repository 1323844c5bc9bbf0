"""Restore and history are the folder's business (cobox.folders.history), reached by the
control plane through the App: a restore takes its clock from ``FolderSync.record``, so a
restore beside an operation being recorded never reuses that operation's clock and the merge
keeps both. In process: a real store, group and folder sync; no sockets."""

from __future__ import annotations

import asyncio

import pytest

from cobox.errors import FolderError
from cobox.folders import history as versions

from .hostile import members_fixture  # noqa: F401 - the fixture "members"


async def test_restore_beside_an_in_flight_record_gets_its_own_clock_and_both_survive(members):
    a = await members("a")
    (a.root / "doc.txt").write_bytes(b"first")
    await a.sync.round()
    (a.root / "doc.txt").write_bytes(b"second, longer")
    await a.sync.round()
    history = await versions.history(a.sync, "doc.txt")
    assert [v["size"] for v in history] == [5, 14] and history[-1]["current"] and not history[0]["current"]
    (a.root / "other.txt").write_bytes(b"")
    other = a.sync.state.put("other.txt", 0, 0o644, 1, (), a.id, None)
    # the restore and another op recorded at once, both from the same merged state
    restored, recorded = await asyncio.gather(versions.restore(a.sync, "doc.txt", history[0]["version"], None),
                                              a.sync.record(other))
    state = await a.sync.read_ops()
    assert restored == {"restored": "doc.txt", "version": history[0]["version"], "in_place": False}  # not running
    assert state.files["doc.txt"].size == 5  # the first version is current again
    assert state.files["other.txt"].stamp == recorded.stamp  # not dropped by a clash of clocks
    assert state.files["doc.txt"].stamp.clock != recorded.stamp.clock


async def test_restore_to_a_path_writes_the_old_content_and_records_nothing(members, tmp_path):
    a = await members("a")
    (a.root / "doc.txt").write_bytes(b"first")
    await a.sync.round()
    (a.root / "doc.txt").write_bytes(b"second")
    await a.sync.round()
    length = a.feed.length
    first = (await versions.history(a.sync, "doc.txt"))[0]["version"]
    out = tmp_path / "old.txt"
    assert await versions.restore(a.sync, "doc.txt", first, str(out)) == {"written": str(out), "version": first}
    assert out.read_bytes() == b"first" and a.feed.length == length
    with pytest.raises(FolderError):
        await versions.restore(a.sync, "doc.txt", "9-00000000", None)
