"""Custody audits (issue 12.2) without sockets: sampling, the wire, verification, and the attack
(a backup peer that kept 1 entry of 300 but signs a receipt for 300) played against a member's
group, with the backup peer's real audit service on the other side of a fake call."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import types
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cobox.backup import audit as au
from cobox.backup.receipts import Receipt
from cobox.groups import Group
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.peer import ServiceError
from storage import Store
from tests.helpers import until

# -- the pure core ------------------------------------------------------------------------------


def test_ninety_samples_catch_a_peer_holding_under_95_percent_with_99_percent() -> None:
    assert au.SAMPLES == 90
    assert 0.95 ** au.SAMPLES < 0.01 < 0.95 ** (au.SAMPLES - 1)


def test_samples_are_drawn_with_replacement_across_all_feeds_in_proportion() -> None:
    rng = random.Random(7)
    a, b = b"a" * 32, b"b" * 32
    eligible = {a: [(0, 100), (200, 300)], b: [(0, 200)]}
    samples = au.choose_samples(eligible, 90, rng)
    assert len(samples) == 90
    for f, s in samples:
        assert any(lo <= s < hi for lo, hi in eligible[f])
    many = au.choose_samples(eligible, 20000, rng)
    share_a = sum(1 for f, _ in many if f == a) / len(many)
    assert 0.45 < share_a < 0.55  # a has 200 of the 400 entries
    assert len(set(many)) == 400  # every eligible entry can be drawn, none outside
    seen_gap = [s for f, s in many if f == a and 100 <= s < 200]
    assert seen_gap == []


def test_fewer_entries_than_samples_are_all_taken_once() -> None:
    eligible = {b"a" * 32: [(0, 3)], b"b" * 32: [(5, 7)]}
    assert au.choose_samples(eligible, 90, random.Random(1)) == [
        (b"a" * 32, 0), (b"a" * 32, 1), (b"a" * 32, 2), (b"b" * 32, 5), (b"b" * 32, 6)]
    assert au.choose_samples({}, 90, random.Random(1)) == []


def test_eligible_entries_are_the_claimed_ones_held_here() -> None:
    assert au.eligible_ranges(300, [(0, 10), (250, 400)]) == [(0, 10), (250, 300)]
    assert au.eligible_ranges(5, [(10, 20)]) == []


def test_judge_passes_only_with_every_answer_right() -> None:
    nonce = os.urandom(32)
    f = os.urandom(32)
    entries = [f"entry {k}".encode() for k in range(4)]
    samples = [(f, k) for k in range(4)]
    expected = [au.answer(nonce, e) for e in entries]
    ok = au.judge(b"p", 1.0, {f: 4}, samples, expected, expected)
    assert ok.passed and ok.samples == 4 and ok.feed(f) == (4, 4)
    wrong = au.judge(b"p", 1.0, {f: 4}, samples, [expected[0], os.urandom(32), *expected[2:]], expected)
    assert not wrong.passed and wrong.reason == "1 wrong of 4 samples"
    missing = au.judge(b"p", 1.0, {f: 4}, samples, [b"", b"", *expected[2:]], expected)
    assert not missing.passed and missing.reason == "2 not held of 4 samples"
    # An answer over the right entry under another nonce (kept from an earlier audit) is wrong.
    stale = [au.answer(os.urandom(32), e) for e in entries]
    assert not au.judge(b"p", 1.0, {f: 4}, samples, stale, expected).passed
    assert not au.judge(b"p", 1.0, {f: 4}, samples, expected[:3], expected).passed


def test_challenge_round_trip_and_result_round_trip() -> None:
    f1, f2 = os.urandom(32), os.urandom(32)
    samples = [(f2, 5), (f1, 0), (f2, 5)]
    c = au.Challenge.make(os.urandom(32), os.urandom(32), samples)
    back = au.Challenge.decode(c.encode())
    assert back == c and back.sample_list() == samples
    r = au.judge(os.urandom(32), 12.5, {f1: 1, f2: 9}, samples, [b""] * 3, [b"x"] * 3)
    assert au.AuditResult.decode(r.encode()) == r


@pytest.mark.parametrize("body", [
    b"", b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb([b"k" * 32, b"n" * 32, [], []]),
    msgpack.packb([b"k" * 32, b"n" * 31, [b"f" * 32], [[0, 1]]]),
    msgpack.packb([b"k" * 32, b"n" * 32, [b"f" * 32], [[1, 1]]]),
    msgpack.packb([b"k" * 32, b"n" * 32, [b"f" * 32], [[0, -1]]]),
    msgpack.packb([b"k" * 32, b"n" * 32, [b"f" * 32], [[0, 1]] * (au.MAX_SAMPLES + 1)]),
    msgpack.packb([b"k" * 32, b"n" * 32, [b"f" * 32], [[0, True]]]),
    msgpack.packb({"a": 1}),
])
def test_malformed_challenges_raise_only_their_error(body: bytes) -> None:
    with pytest.raises(au.MalformedAuditError):
        au.Challenge.decode(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5), max_leaves=20).map(lambda o: msgpack.packb(o)))
def test_decoders_are_total(body: bytes) -> None:
    for decode in (au.Challenge.decode, lambda b: au.decode_answers(b, 3)):
        try:
            decode(body)
        except au.MalformedAuditError:
            pass


def test_answers_decoder_is_strict() -> None:
    good = [os.urandom(32), b""]
    assert au.decode_answers(au.encode_answers(good), 2) == good
    for bad in ([os.urandom(32)], [os.urandom(31), b""], [os.urandom(32), "x"], [os.urandom(33), b""]):
        with pytest.raises(au.MalformedAuditError):
            au.decode_answers(msgpack.packb(bad, use_bin_type=True), 2)


# -- a member and its backup peer, no sockets --------------------------------------------------


class Setup:
    def __init__(self, member: Group, seed: Group, seed_id: DeviceIdentity) -> None:
        self.member, self.seed, self.seed_id = member, seed, seed_id

    @property
    def feed(self):
        return self.member.own_feed()

    async def receipt(self, length: int) -> None:
        """The backup peer signs a receipt for ``length`` entries, with the true root hash (which it
        knows from the writer's signature whether or not it kept the entries)."""
        feed = self.feed
        r = Receipt.make(self.seed_id.sign, self.seed_id.peer_id, self.member.discovery_key, feed.key, length,
                         await feed.tree_hash_at(length), 1000 + length)
        await self.member.on_receipt(self.seed_id.peer_id, r)

    def server_call(self) -> Callable[[bytes, float], Awaitable[bytes]]:
        """A call that reaches the backup peer's audit service as a peer with a live channel."""
        server = au.AuditServer(lambda dk: self.seed if dk == self.seed.discovery_key else None,
                                clock=itertools.count(0.0, au.MIN_INTERVAL).__next__)  # audits far apart
        peer = types.SimpleNamespace(remote_peer_id=b"m" * 32,
                                     channels={1: types.SimpleNamespace(live=True, group=self.seed)})

        async def call(body: bytes, timeout: float) -> bytes:
            async with asyncio.timeout(timeout):
                return await server.handle(peer, body)  # type: ignore[arg-type]

        return call

    async def audit(self, call: Callable[[bytes, float], Awaitable[bytes]] | None = None,
                    timeout: float = 5.0) -> au.AuditResult:
        r = await au.run_audit(self.member, self.seed_id.peer_id, call or self.server_call(), timeout=timeout)
        assert r is not None
        self.member.audits.results[r.peer] = r
        return r

    def status(self) -> dict:
        (peer,) = self.member.backup_status()
        return peer


@pytest.fixture
async def setup(tmp_path) -> AsyncIterator[Callable[[int, int], Awaitable[Setup]]]:
    stores: list[Store] = []

    async def make(entries: int, kept: int) -> Setup:
        """A member with ``entries`` entries; a backup peer that kept the first ``kept``."""
        ms, ss = await Store.open(tmp_path / f"m{len(stores)}"), await Store.open(tmp_path / f"s{len(stores)}")
        stores.extend([ms, ss])
        keys = GroupKeys.from_address(os.urandom(32))
        member = Group(ms, "g", keys, DeviceIdentity.generate(), 0.0)
        await member.load()
        await member.append_records([f"entry {k}".encode() * 20 for k in range(entries)])
        seed_id = DeviceIdentity.generate()
        seed = Group(ss, "s", GroupKeys.from_replication_key(keys.replication_key), seed_id, 0.0)
        await seed.load()
        feed = member.own_feed()
        assert feed is not None
        replica = await seed.accept_feed(feed.key, member.tag(feed))
        assert replica is not None
        if kept:
            await replica.put_range(0, await feed.get_range(0, kept), await feed.proof(0, kept))
        return Setup(member, seed, seed_id)

    yield make
    for s in stores:
        await s.close()


async def test_the_attack_one_entry_kept_receipt_for_300_fails_the_audit(setup) -> None:
    s = await setup(300, 1)
    await s.receipt(300)
    before = s.status()
    assert before["feeds"][0]["held"] == 300 and before["feeds"][0]["claimed"] == 300
    assert not before["backed_up"] and before["feeds"][0]["audit"]["state"] == "not audited yet"
    result = await s.audit()
    assert not result.passed and result.samples == 90 and "not held" in (result.reason or "")
    after = s.status()
    assert not after["backed_up"] and not after["feeds"][0]["backed_up"]
    assert after["feeds"][0]["audit"]["state"] == "failed"
    assert after["audit"]["passed"] is False


async def test_an_honest_backup_peer_passes_and_is_backed_up(setup) -> None:
    s = await setup(300, 300)
    await s.receipt(300)
    result = await s.audit()
    assert result.passed and result.samples == 90 and result.feed(s.feed.key) == (300, 90)
    st_ = s.status()
    assert st_["backed_up"] and st_["feeds"][0]["backed_up"]
    assert st_["feeds"][0]["audit"] == {"state": "verified", "time": result.time, "samples": 90, "claimed": 300}
    # New entries the audit did not cover: not backed up until a receipt and an audit cover them.
    await s.member.append("one more")
    assert not s.status()["backed_up"]


async def test_a_peer_holding_94_percent_is_caught(setup) -> None:
    s = await setup(300, 282)  # 94% held
    await s.receipt(300)
    caught = 0
    for _ in range(20):
        caught += not (await s.audit()).passed
    assert caught >= 15  # each audit catches it with probability 1 - 0.94**90 > 99.6%


async def test_few_entries_are_all_audited(setup) -> None:
    s = await setup(5, 5)
    await s.receipt(5)
    result = await s.audit()
    assert result.passed and result.samples == 5


async def test_forged_malformed_refused_and_late_answers_fail(setup) -> None:
    s = await setup(50, 50)
    await s.receipt(50)

    async def forged(body: bytes, timeout: float) -> bytes:
        n = len(au.Challenge.decode(body).samples)
        return au.encode_answers([os.urandom(32) for _ in range(n)])

    async def wrong_nonce(body: bytes, timeout: float) -> bytes:
        c = au.Challenge.decode(body)
        other = au.Challenge(c.discovery_key, os.urandom(32), c.feeds, c.samples)
        return await s.server_call()(other.encode(), timeout)

    async def malformed(body: bytes, timeout: float) -> bytes:
        return msgpack.packb([b"x" * 32])

    async def refused(body: bytes, timeout: float) -> bytes:
        raise ServiceError("not today")

    async def silent(body: bytes, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            await asyncio.Event().wait()
        raise AssertionError("unreachable")

    reasons = {}
    for name, call in [("forged", forged), ("wrong_nonce", wrong_nonce), ("malformed", malformed),
                       ("refused", refused), ("silent", silent)]:
        r = await s.audit(call, timeout=0.2)
        assert not r.passed, name
        reasons[name] = r.reason
        assert not s.status()["backed_up"]
    assert "wrong" in reasons["forged"] and "wrong" in reasons["wrong_nonce"]
    assert "answer" in reasons["malformed"] and "not today" in reasons["refused"]
    assert "no answer within" in reasons["silent"]


async def test_the_service_answers_only_over_a_live_channel_of_the_group(setup) -> None:
    s = await setup(10, 10)
    now = [0.0]
    server = au.AuditServer(lambda dk: s.seed if dk == s.seed.discovery_key else None, clock=lambda: now[0])
    c = au.Challenge.make(s.seed.discovery_key, os.urandom(32), [(s.feed.key, 0)])
    stranger = types.SimpleNamespace(remote_peer_id=b"s" * 32, channels={})
    other = types.SimpleNamespace(remote_peer_id=b"o" * 32,
                                  channels={1: types.SimpleNamespace(live=True, group=object())})
    unknown = au.Challenge.make(os.urandom(32), os.urandom(32), [(s.feed.key, 0)])
    member = types.SimpleNamespace(remote_peer_id=b"m" * 32,
                                   channels={1: types.SimpleNamespace(live=True, group=s.seed)})
    refusals = []
    for peer, body in [(stranger, c.encode()), (other, c.encode()), (member, unknown.encode())]:
        with pytest.raises(ServiceError) as info:
            await server.handle(peer, body)  # type: ignore[arg-type]
        refusals.append(str(info.value))
    assert len(set(refusals)) == 1  # an unknown group and a foreign connection look the same
    with pytest.raises(ServiceError, match="audit"):
        await server.handle(member, b"junk")  # type: ignore[arg-type]
    (a,) = au.decode_answers(await server.handle(member, c.encode()), 1)  # type: ignore[arg-type]
    assert a == au.answer(c.nonce, await s.feed.get(0))
    # an audit costs entry reads here: a peer gets one answer per MIN_INTERVAL and group, not a disk pump
    with pytest.raises(ServiceError, match="at most one audit"):
        await server.handle(member, c.encode())  # type: ignore[arg-type]
    now[0] += au.MIN_INTERVAL
    (b,) = au.decode_answers(await server.handle(member, c.encode()), 1)  # type: ignore[arg-type]
    assert b == a


async def test_the_auditor_audits_after_receipts_keeps_results_and_stops_without_peers(setup) -> None:
    s = await setup(120, 120)
    auditor = au.Auditor(s.member, interval=3600, after_receipt=0.01)
    s.member.audits = auditor
    call = s.server_call()

    class FakePeer:
        remote_peer_id = s.seed_id.peer_id

        async def call(self, service: str, body: bytes, *, timeout: float) -> bytes:
            assert service == au.SERVICE
            return await call(body, timeout)

    peer = FakePeer()
    auditor.on_channel_live(peer)  # type: ignore[arg-type]
    await s.receipt(120)  # schedules an audit soon
    await until(lambda: s.seed_id.peer_id in auditor.results, what="an audit after the receipt")
    assert auditor.results[s.seed_id.peer_id].passed and s.status()["backed_up"]
    # The next audit is due at a jittered time: the interval times a factor in [0.5, 1.5).
    due = auditor._due[s.seed_id.peer_id] - asyncio.get_running_loop().time()
    assert 0.5 * 3600 - 5 < due < 1.5 * 3600
    auditor.on_channel_closed(peer)  # type: ignore[arg-type]
    task = auditor._task
    assert task is not None
    async with asyncio.timeout(5):
        await task  # no audited peer connected: the task ends
    # The result is kept in the store: a reloaded group shows it.
    again = Group(s.member.store, "g", s.member.keys, s.member.identity, 0.0)
    await again.load()
    assert again.backup_status() == [s.status()]
