"""Clock space (issue 11 item 3): no clock a member writes can exhaust the clocks of the group."""

from __future__ import annotations

import msgpack
import pytest

from cobox.entries import CLOCK_STEP, clock_bound, decode_op, encode_op
from cobox.errors import MalformedOpError
from cobox.folders.model import Delete, Put

from .hostile import connect, members_fixture, tree  # noqa: F401 - the fixture "members"

A = b"\xaa" * 32


def test_the_clock_bound_is_a_function_of_the_entry_position():
    for seq in (0, 1, 7, 1000):
        ok = encode_op(Delete("x", clock_bound(seq), A, None))
        assert decode_op(ok, author=A, seq=seq).clock == (seq + 1) * CLOCK_STEP
        with pytest.raises(MalformedOpError):
            decode_op(encode_op(Delete("x", clock_bound(seq) + 1, A, None)), author=A, seq=seq)
    for clock in (2**63 - 1, 2**64 - 1):
        with pytest.raises(MalformedOpError):
            decode_op(encode_op(Delete("x", clock, A, None)), author=A, seq=5)
    raw = msgpack.unpackb(encode_op(Delete("x", 1, A, None)))
    raw["k"] = -1  # a signed 64-bit integer is no clock either
    with pytest.raises(MalformedOpError):
        decode_op(msgpack.packb(raw), author=A, seq=0)


async def test_an_op_at_the_end_of_the_clock_is_refused_and_the_victim_keeps_recording(members):
    victim, attacker = await members("victim"), await members("attacker")
    await attacker.write(encode_op(Put("x", 0, 0o644, 0, (), 2**63 - 1, attacker.id, None)))
    connect(victim, attacker)
    await victim.caught_up(attacker)
    (victim.root / "mine.txt").write_bytes(b"still recording")
    await victim.sync.round()
    state = await victim.sync.read_ops()
    assert state.clock < 2**32
    assert state.files["mine.txt"].stamp.author == victim.id
    assert "x" not in state.files
    assert victim.sync.status()["devices"][attacker.id.hex()]["records_refused"] == 1
    assert "clock" in victim.sync.status()["devices"][attacker.id.hex()]["last_refused_reason"]


async def test_a_ratchet_cannot_pass_the_bound_and_costs_the_victim_no_more_than_the_attacker(members):
    victim, attacker = await members("victim"), await members("attacker")
    n = 20
    first = attacker.feed.next_seq
    # each op as far ahead as its place allows, then one more step ahead than allowed
    await attacker.write(*[encode_op(Delete(f"r{k}", clock_bound(first + k), attacker.id, None))
                           for k in range(n)])
    beyond = attacker.feed.next_seq
    await attacker.write(encode_op(Delete("r-beyond", clock_bound(beyond) + CLOCK_STEP, attacker.id, None)))
    connect(victim, attacker)
    await victim.caught_up(attacker)
    state = await victim.sync.read_ops()
    assert state.clock == clock_bound(first + n - 1) <= (attacker.feed.length + 1) * CLOCK_STEP
    assert victim.sync.status()["devices"][attacker.id.hex()]["records_refused"] == 1

    # The victim still records: it makes clock room with filler entries (as many as the
    # attacker wrote, once), and its op is valid on every device, the attacker's included.
    before = victim.feed.length
    (victim.root / "mine.txt").write_bytes(b"recorded")
    await victim.sync.round()
    assert victim.feed.length - before <= n + 2  # fillers, the chunk, the op
    await attacker.caught_up(victim)
    for m in (victim, attacker):
        state = await m.sync.read_ops()
        assert state.files["mine.txt"].stamp.author == victim.id
        assert state.files["mine.txt"].stamp.clock > clock_bound(first + n - 1)
        assert m.sync.status()["devices"].get(victim.id.hex(), {}).get("records_refused", 0) == 0
    await attacker.sync.round()
    assert tree(attacker.root) == {"mine.txt": b"recorded"}
