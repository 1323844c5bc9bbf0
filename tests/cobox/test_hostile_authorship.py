"""Authorship (issue 11 item 6) and the group log (item 10): the author of every record is the
device that owns its feed; nothing inside an entry can claim another device."""

from __future__ import annotations

import json
import time

import msgpack

from cobox.commands_groups import print_entry
from cobox.entries import MAX_TEXT, encode_op
from cobox.folders.chunking import chunk_id
from cobox.folders.model import ChunkRef, Put
from cobox.folders.padding import pad

from .hostile import connect, members_fixture, tree  # noqa: F401 - the fixture "members"

T = int(time.time()) * 10**9


async def test_a_member_cannot_write_as_another_device(members):
    victim, attacker = await members("victim"), await members("attacker")
    connect(victim, attacker)
    (victim.root / "doc.txt").write_bytes(b"the victim's words")
    await victim.sync.round()
    await attacker.caught_up(victim)
    real = (await attacker.sync.read_ops()).files["doc.txt"]
    assert real.stamp.author == victim.id

    seq = await attacker.write({"type": "chunk", "data": pad(b"forged A")}, {"type": "chunk", "data": pad(b"forged B")})
    forged = [ChunkRef(chunk_id(b"forged A"), attacker.feed.key, seq, 8),
              ChunkRef(chunk_id(b"forged B"), attacker.feed.key, seq + 1, 8)]
    old_style = msgpack.unpackb(encode_op(Put("doc.txt", 8, 0o644, T, (forged[0],), real.stamp.clock + 1,
                                              attacker.id, real.stamp)))
    old_style["a"] = victim.id  # the author field of the old format: now an unknown field
    same_stamp = encode_op(Put("doc.txt", 8, 0o644, T, (forged[1],), real.stamp.clock, attacker.id, None))
    await attacker.write(old_style, same_stamp)

    for _ in range(4):  # bounded: both devices settle
        await victim.caught_up(attacker)
        await attacker.caught_up(victim)
        for m in (victim, attacker):
            await m.sync.round()
        if len(tree(victim.root)) == 2 and tree(victim.root) == tree(attacker.root):
            break
    states = [await m.sync.read_ops() for m in (victim, attacker)]
    assert states[0].files == states[1].files
    assert tree(victim.root) == tree(attacker.root)
    assert sorted(tree(victim.root).values()) == [b"forged B", b"the victim's words"]
    history = states[0].history("doc.txt")
    by_content = {v.chunks[0].id: v.stamp.author for v in history}
    assert by_content[chunk_id(b"forged B")] == attacker.id  # shown as the attacker's, with its own stamp
    assert chunk_id(b"forged A") not in by_content  # the old author field is refused outright
    assert victim.sync.status()["devices"][attacker.id.hex()]["records_refused"] == 1


async def test_log_entries_are_strict_and_their_author_is_the_feed_owner(members, capsys):
    victim, attacker = await members("victim"), await members("attacker")
    await attacker.write(
        {"type": "log", "text": "hi", "time": 1.0, "author": 2_000_000},  # allocated bytes(N) on main
        {"type": "log", "text": "t", "time": float("nan")},
        {"type": "log", "text": "t", "time": 2**63 - 1},  # a year datetime cannot show
        {"type": "log", "text": "x" * (MAX_TEXT + 1), "time": 1.0},
        {"type": "log", "text": b"bytes", "time": 1.0},
        {"type": "log", "text": "t", "time": True},
        {"type": "log"},
        {"type": "log", "text": "hello", "time": 5.0},
    )
    await victim.group.append("mine")
    connect(victim, attacker)
    await victim.caught_up(attacker)
    entries = await victim.group.log()
    good = [e for e in entries if e.refused is None]
    assert [(e.text, e.author) for e in good] == [("hello", attacker.id), ("mine", victim.id)]
    refused = [e for e in entries if e.refused is not None]
    assert len(refused) == 7 and all(e.author == attacker.id and e.text == "" for e in refused)
    docs = [e.as_json() for e in entries]
    json.dumps(docs, allow_nan=False)
    assert all("refused" in d for d in docs if d["text"] == "" and d["author"] == attacker.id.hex())
    assert victim.group.status()["devices"][attacker.id.hex()]["records_refused"] == 7
    await victim.group.log()  # read again: counted once
    assert victim.group.status()["devices"][attacker.id.hex()]["records_refused"] == 7
    for d in docs:
        print_entry(d, False)
    out = capsys.readouterr().out
    assert out.count("refused:") == 7 and "hello" in out
