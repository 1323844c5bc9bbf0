"""A device invited after a removal gets the whole history, end to end (separate daemons).

A removes C; A then invites D: D's invite carries the chain of epochs (cobox.uri), so D gets
the file written before the removal and the one written after, the log entries of both epochs,
and the same chunker key as A (its fingerprint in the group document); what D writes reaches A.
"""

from __future__ import annotations

import pytest

from storage import Store
from tests.integration.daemons import ok
from tests.integration.test_device_remove import _epoch, _has, files, group_doc, setup, texts, until


@pytest.mark.timeout(300)  # many daemons and CLI processes on a shared 2-core machine
async def test_a_device_invited_after_a_removal_gets_both_epochs_with_the_same_chunker_key(daemons, tmp_path):
    (a, b, c), (_, _, idc), _, _ = await setup(daemons, "abc")
    fa, fb, fd = tmp_path / "fa", tmp_path / "fb", tmp_path / "fd"
    for f in (fa, fb, fd):
        f.mkdir()
    before = bytes((k * 7919) % 251 for k in range(300_000))  # several chunks
    (fa / "before.bin").write_bytes(before)
    await ok(a.home, "folder", "add", "g", str(fa))
    await ok(b.home, "folder", "add", "g", str(fb))
    await ok(a.home, "log", "append", "g", "a before")
    await ok(b.home, "log", "append", "g", "b before")
    await until("B to get the file", lambda: _same(fa, fb, "before.bin"))

    genesis = (await group_doc(a))["discovery_key"]
    await ok(a.home, "device", "remove", "g", idc[:12], "--yes")
    await until("B to move to the new epoch", lambda: _epoch(b, 1))
    (fa / "after.txt").write_text("written after the removal")
    await ok(a.home, "log", "append", "g", "a after")
    await ok(b.home, "log", "append", "g", "b after")
    await until("B to get the new file", lambda: _same(fa, fb, "after.txt"))

    uri = (await ok(a.home, "group", "invite", "g")).strip()
    assert "epochs=" in uri and "epoch=" in uri
    d = await daemons("d")
    await ok(d.home, "group", "join", "--name", "g", stdin=uri.encode())
    doc_a, doc_d = await group_doc(a), await group_doc(d)
    assert doc_d["discovery_key"] == doc_a["discovery_key"] and doc_d["epoch"] == 1  # straight in the new epoch
    assert doc_d["chunker_id"] == doc_a["chunker_id"] != ""
    await ok(d.home, "peers", "add", await a.address())
    await ok(d.home, "peers", "add", await b.address())
    await ok(d.home, "folder", "add", "g", str(fd))
    await until("D to get the files of both epochs", lambda: _same(fa, fd, "before.bin", "after.txt"), timeout=60)
    assert (fd / "before.bin").read_bytes() == before
    await until("D to read the log of both epochs", lambda: _has(d, "b after"))
    assert {"a before", "b before", "a after", "b after"} <= set(await texts(d))
    doc_d = await group_doc(d)
    assert "removed" not in doc_d and doc_d["chunker_id"] == (await group_doc(b))["chunker_id"]
    # D writes in the new epoch only, and A takes it.
    (fd / "from-d.txt").write_text("written by the newcomer")
    await until("A to get D's file", lambda: _same(fa, fd, "from-d.txt"))
    assert any(f["own"] for f in doc_d["feeds"])  # its feed is in the new epoch
    await d.stop()
    store = await Store.open(d.home)
    try:  # it holds the genesis epoch's feeds (read), none of them its own
        held = store.feeds(genesis)
        assert held and not any(f.writable for f in held)
    finally:
        await store.close()


async def _same(x, y, *want: str) -> bool:
    tx, ty = files(x), files(y)
    return all(tx.get(w) is not None and tx.get(w) == ty.get(w) for w in want)
