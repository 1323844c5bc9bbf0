"""A hostile member's malformed entries (issue 11 item 1): refused with a reason, counted per
device, and folder sync goes on with everything else."""

from __future__ import annotations

import time

from cobox.entries import encode_op
from cobox.folders.chunking import chunk_id
from cobox.folders.model import ChunkRef, Put

from .hostile import connect, members_fixture, tree  # noqa: F401 - the fixture "members"

T = int(time.time()) * 10**9


async def test_malformed_entries_are_refused_and_sync_goes_on(members):
    victim, attacker = await members("victim"), await members("attacker")
    (attacker.root / "good.txt").write_bytes(b"good before")
    await attacker.sync.round()
    log_seq = await attacker.group.append("a log entry, not a chunk")
    bad_ref = ChunkRef(chunk_id(b"x"), attacker.feed.key, log_seq, 1)
    await attacker.write(
        {"type": [1]},                                    # TypeError in is_folder_record on main
        {"type": {"nested": "map"}},
        [1, 2, 3],
        {"type": "folder/put", "v": 1},                   # a folder record missing every field
        {"type": "chunk", "data": "text, not bytes"},
        encode_op(Put("evil.txt", 1, 0o644, T, (bad_ref,), 2, attacker.id, None)),  # ref -> log entry
    )
    (attacker.root / "after.txt").write_bytes(b"good after")
    await attacker.sync.round()
    connect(victim, attacker)
    await victim.caught_up(attacker)

    for _ in range(2):  # and again: the refused records stay refused, nothing is fatal
        await victim.sync.round()
    assert tree(victim.root) == {"good.txt": b"good before", "after.txt": b"good after"}
    status = victim.sync.status()
    assert status["error"] == ""
    assert [f["path"] for f in status["failed"]] == ["evil.txt"]
    assert status["failed"][0]["reason"].startswith("cannot apply: ")
    assert "not a chunk" in status["failed"][0]["reason"]
    device = status["devices"][attacker.id.hex()]
    assert device["records_refused"] == 6  # five malformed entries and the miswired Put
    assert device["last_refused_reason"]
    assert victim.group.status()["devices"][attacker.id.hex()]["records_refused"] == 6
    # the attacker's own device refuses its own bad records just the same
    await attacker.sync.round()
    assert attacker.sync.status()["devices"][attacker.id.hex()]["records_refused"] == 6
