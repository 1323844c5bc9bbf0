"""Device profiles (issue 17 item 1): the strict decoder, signatures, a hostile member's and a
hostile peer's profiles, latest-wins; the device list's rows and name resolution (item 2)."""

from __future__ import annotations

import os

import msgpack
import pytest

from cobox import netview
from cobox.devices import PROFILE_EXTENSION, DeviceRow, Profile, claimed_by, default_name, device_rows, resolve
from cobox.entries_profile import MAX_NAME, decode_profile, encode_profile
from cobox.errors import DeviceNotFoundError, MalformedProfileError, UsageError
from networker.identity import DeviceIdentity
from tests.helpers import until

from .hostile import connect, members_fixture  # noqa: F401 - the fixture "members"

DK = bytes(range(32))


def _profile(identity: DeviceIdentity, name: str = "laptop", kind: str = "member", t: int = 1000) -> Profile:
    return Profile.make(identity.sign, identity.peer_id, DK, name, kind, t)


def _raw(**changes: object) -> bytes:
    ident = DeviceIdentity.from_seed(bytes(range(32, 64)))  # fixed: the parameter ids must not vary (xdist)
    obj: dict[str, object] = {"type": "device/profile", "v": 1, "d": ident.peer_id, "n": "x", "k": "member",
                              "t": 5, "s": bytes(64)}
    obj.update(changes)
    return msgpack.packb({k: v for k, v in obj.items() if v is not ...}, use_bin_type=True)


def test_profile_round_trip_and_signature():
    ident = DeviceIdentity.generate()
    p = _profile(ident)
    assert Profile.decode(DK, p.encode()) == p
    with pytest.raises(MalformedProfileError, match="signature"):
        Profile.decode(bytes(32), p.encode())  # replayed into another group
    forged = encode_profile(p.device, "evil", p.kind, p.time_ms, p.signature)  # renamed, same signature
    with pytest.raises(MalformedProfileError, match="signature"):
        Profile.decode(DK, forged)


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb("device/profile"), bytes(600),
    _raw(extra=1), _raw(v=2), _raw(v=True), _raw(d=bytes(31)), _raw(d="x" * 32), _raw(n=""), _raw(n=" a"),
    _raw(n="a\nb"), _raw(n="\u200b"), _raw(n="x" * (MAX_NAME + 1)), _raw(n=b"bytes"), _raw(k="admin"),
    _raw(t=-1), _raw(t=1.5), _raw(t=True), _raw(t=2**63), _raw(s=bytes(63)), _raw(s=None), _raw(type="log"),
    _raw(n=...), msgpack.packb({"type": "device/profile", "v": 1, "d": {"nested": [1] * 5}}),
    b"\x87" + b"\xa4type\xaedevice/profile" + b"\xa1v\xff" * 6,
])
def test_decode_profile_refuses_anything_not_exactly_valid(data):
    with pytest.raises(MalformedProfileError):
        decode_profile(data)
    with pytest.raises(MalformedProfileError):
        Profile.decode(DK, data)


def test_a_profile_claiming_another_device_is_refused():
    me, other = DeviceIdentity.generate(), DeviceIdentity.generate()
    p = _profile(me)
    assert claimed_by(p, me.peer_id) == p
    with pytest.raises(MalformedProfileError, match="only its own"):
        claimed_by(p, other.peer_id)


def test_default_name():
    assert default_name("kitchen") == "kitchen"
    assert default_name("  ") != ""
    assert len(default_name("é" * 60).encode()) <= 64


async def test_names_travel_through_the_feeds_and_latest_wins(members):
    a, b = await members("a"), await members("b")
    await a.group.profiles.publish("alice-laptop")
    await b.group.profiles.publish("bob")
    connect(a, b)
    await b.caught_up(a)
    await a.caught_up(b)
    await b.group.profiles.scan()
    assert b.group.profiles.name_of(a.id) == "alice-laptop"
    await a.write(os.urandom(20_000), b"tiny but not msgpack", {"type": "log", "text": "x", "time": 1})
    await a.group.profiles.publish("alice-desk")  # found past a large entry the scan does not read
    await b.caught_up(a)
    sizes = await b.store.feed(a.feed.key).entry_sizes(0, a.feed.length)
    assert len(sizes) == a.feed.length and max(sizes) > 20_000
    await b.group.profiles.scan()
    assert b.group.profiles.name_of(a.id) == "alice-desk"
    assert b.group.profiles.label(a.id) == "alice-desk"
    assert b.group.profiles.label(os.urandom(32)) != "alice-desk"
    # an older profile arriving late loses
    old = Profile.make(a.identity.sign, a.id, a.group.discovery_key, "old", "member", 1)
    assert not await b.group.profiles.offer(old)
    assert b.group.profiles.name_of(a.id) == "alice-desk"
    # they survive a restart (kept in the store)
    from cobox.devices import Profiles

    fresh = Profiles(b.group)
    await fresh.load()
    assert fresh.name_of(a.id) == "alice-desk"
    fresh.close()


async def test_a_hostile_member_profile_is_skipped_and_reported(members):
    """A member writes, in its own feed, a profile of another device (signed by that device
    once, replayed), a profile with a bad signature and junk: none is taken, each is refused
    and counted against the hostile member, the victim's name stays."""
    victim, attacker = await members("victim"), await members("attacker")
    await victim.group.profiles.publish("victim")
    genuine = victim.group.profiles.known[victim.id]
    forged = Profile.make(attacker.identity.sign, victim.id, victim.group.discovery_key, "pwned", "member",
                          genuine.time_ms + 10)  # claims the victim's id, signed by the attacker
    mine_badsig = encode_profile(attacker.id, "attacker", "member", 5, bytes(64))
    await attacker.write(
        victim.group.profiles.known[victim.id].encode(),  # the victim's own, replayed by the attacker
        forged.encode(), mine_badsig, {"type": "device/profile", "v": 1})
    other = await members("other")
    connect(other, attacker)
    await other.caught_up(attacker)
    await other.group.profiles.scan()
    assert other.group.profiles.name_of(victim.id) is None  # a replay in another feed is not the victim's word
    assert other.group.profiles.name_of(attacker.id) is None
    assert other.group.profiles.refused == 4
    device = other.group.status()["devices"][attacker.id.hex()]
    assert device["records_refused"] == 4
    assert "profile" in device["last_refused_reason"]
    # and the log does not show them, nor count them twice
    assert [e for e in await other.group.log() if e.refused] == []


async def test_a_peer_sending_another_devices_profile_is_disconnected(members):
    victim, attacker, third = await members("victim"), await members("attacker"), await members("third")
    await third.group.profiles.publish("third")
    connect(victim, attacker)
    await until(lambda: netview.live_channels(attacker.node), 5.0, "a live channel")
    _peer, channel = netview.live_channels(attacker.node)[0]
    netview.send_extension(channel, PROFILE_EXTENSION, third.group.profiles.known[third.id].encode())
    await until(lambda: attacker.id not in victim.node.peers, 5.0, "the victim to drop the attacker")
    assert victim.group.profiles.name_of(third.id) is None
    assert victim.group.profiles.refused == 1


async def test_a_peer_sends_its_own_profile_on_a_live_channel(members):
    a, b = await members("a"), await members("b")
    await a.group.profiles.publish("a-name")
    connect(a, b)
    await until(lambda: b.group.profiles.name_of(a.id) == "a-name", 5.0, "a's profile over the channel")


def _row(device: bytes, name: str, role: str = "member") -> DeviceRow:
    return DeviceRow(device, name, role, False, None, False, "", ())


def test_device_rows_and_resolve():
    me, m2, bk = os.urandom(32), os.urandom(32), os.urandom(32)
    f1, f2, f3 = os.urandom(32), os.urandom(32), os.urandom(32)
    ident = DeviceIdentity.generate()
    profiles = {m2: Profile(m2, "desk", "member", 5000, bytes(64)), bk: Profile(bk, "nas", "backup", 7000, bytes(64)),
                ident.peer_id: Profile(ident.peer_id, "phone", "member", 9000, bytes(64))}
    info = netview.PeerInfo(bk, "1.2.3.4:5", True, ("g",), 0, 0, "direct LAN")
    rows = device_rows(me=me, owners={f1: me, f2: m2, f3: m2}, profiles=profiles,
                       receipts=[(bk, f1, 3, 100.0), (bk, f2, 1, 200.0)], lengths={f1: 4, f2: 2, f3: 7},
                       connected={bk: info}, now=1e9, seen={m2: 50.0})
    # a profile claiming "member" proves nothing: a member is who owns an admitted feed
    assert [(r.name, r.role) for r in rows] == [("", "member"), ("desk", "member"), ("nas", "backup peer"),
                                                ("phone", "backup peer")]
    assert rows[0].this_device and rows[0].last_seen == 1e9
    desk = rows[1]
    assert {(f.feed, f.length, f.held) for f in desk.feeds} == {(f2, 2, 2), (f3, 7, 7)}
    assert desk.last_seen == 50.0 and not desk.connected
    assert rows[3].last_seen == 9.0  # only its profile's time
    nas = rows[2]
    assert nas.connected and nas.connection == "direct LAN"
    assert {(f.feed, f.held) for f in nas.feeds} == {(f1, 3), (f2, 1)}
    assert nas.as_json()["id"] == bk.hex()
    assert resolve(rows, "nas") is nas
    assert resolve(rows, m2.hex()[:8]) is desk
    # a device that says how far it holds each feed (connected, its Have messages): those figures
    rows = device_rows(me=me, owners={f1: me, f2: m2, f3: m2}, profiles=profiles, receipts=[], lengths={f1: 4},
                       connected={}, now=1e9, holdings={m2: {f1: 3, f2: 2, os.urandom(32): 9}, me: {f1: 4}})
    desk = next(r for r in rows if r.device == m2)
    assert {(f.feed, f.length, f.held) for f in desk.feeds} == {(f1, 4, 3), (f2, 2, 2)}  # an unknown feed: not shown
    assert [(f.feed, f.held) for f in rows[0].feeds] == [(f1, 4)]
    twins = [_row(b"\x01" * 32, "same"), _row(b"\x02" * 32, "same")]
    with pytest.raises(UsageError):
        resolve(twins, "same")
    assert resolve(twins, "0202").device == b"\x02" * 32
    with pytest.raises(DeviceNotFoundError):
        resolve(rows, "nobody")
    with pytest.raises(DeviceNotFoundError):
        resolve(rows, "ab")  # too short a prefix


async def test_conflict_copies_are_named_after_the_device(members):
    a, b = await members("a"), await members("b")
    await a.group.profiles.publish("Alice's laptop")
    await b.group.profiles.publish("bob/desk")
    (a.root / "doc.txt").write_bytes(b"A's version")
    (b.root / "doc.txt").write_bytes(b"B's version, longer")
    await a.sync.round()
    await b.sync.round()  # neither saw the other's edit
    connect(a, b)
    await a.caught_up(b)
    await b.caught_up(a)
    for _ in range(3):
        await a.sync.round()
        await b.sync.round()
    names = sorted(p.name for p in a.root.iterdir())
    assert names == sorted(p.name for p in b.root.iterdir())
    copies = [n for n in names if ".conflict-" in n]
    assert len(copies) == 1
    assert copies[0].startswith(("doc.conflict-Alice_s_laptop-", "doc.conflict-bob_desk-")), copies
    assert copies[0].endswith(".txt")


def test_safe_label():
    from cobox.folders.paths import conflict_path, safe_label

    assert safe_label("../etc") == "etc"
    assert safe_label("a b:c") == "a_b_c"
    assert len(safe_label("é" * 40).encode()) <= 32
    assert conflict_path("x.txt", b"\xaa" * 32, 0, label="...") == "x.conflict-aaaaaaaa-19700101-000000.txt"
    assert conflict_path("x.txt", b"\xaa" * 32, 0, label="nas") == "x.conflict-nas-19700101-000000.txt"
