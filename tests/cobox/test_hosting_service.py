"""Backup as a service in process: the host's ``hosting`` service and the member's side wired
through a fake connection pair (no sockets), with attacks played: a proof replayed on another
connection, a malformed request, racing adds, a revoked device, a host that answers with
another key or a forged statement."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cobox.errors import HostKeyMismatchError, HostRefusedError, HostUnreachableError, MalformedHostingError
from cobox.hosting.host import HostService
from cobox.hosting.invites import invite_id, proof, proof_key
from cobox.hosting.member import MemberBackups
from cobox.hosting.messages import Op, Request, State, Statement
from cobox.hosting.quota import NO_INVITE, Limits
from cobox.uri import BackupInvite
from networker import DeviceIdentity, GroupKeys, PeerKeyMismatchError, ServiceError, encode_key

HOST = DeviceIdentity.from_seed(bytes(range(32)))
MEMBER = DeviceIdentity.from_seed(bytes(range(1, 33)))
EVE = DeviceIdentity.from_seed(bytes(range(2, 34)))


class FakeStore:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, bytes]] = {}

    async def records(self, scope: str) -> dict[str, bytes]:
        return dict(self.data.get(scope, {}))

    async def put_record(self, scope: str, key: str, value: bytes) -> None:
        self.data.setdefault(scope, {})[key] = value

    async def delete_record(self, scope: str, key: str) -> None:
        self.data.get(scope, {}).pop(key, None)


class FakeGroup:
    def __init__(self, name: str, keys: GroupKeys) -> None:
        self.name, self.keys = name, keys
        self.discovery_key, self.replication_key = keys.discovery_key, keys.replication_key
        self.quota_bytes, self.quota_full, self.bytes = 0, False, 0
        self.limit: Any = None

    def stored_bytes(self) -> int:
        return self.bytes

    def check_quota(self) -> None:
        self.quota_full = bool(self.limit and self.limit())

    def backup_status(self) -> list[dict[str, Any]]:
        return []


class FakeSeeds:
    def __init__(self) -> None:
        self.groups: dict[str, FakeGroup] = {}
        self.removed: list[str] = []

    def find(self, dk: bytes) -> Any:
        return next((g for g in self.groups.values() if g.discovery_key == dk), None)

    def names(self) -> set[str]:
        return set(self.groups)

    async def add_seed(self, name: str, replication_key: bytes) -> Any:
        await asyncio.sleep(0)  # the daemon awaits the store: let racing adds interleave
        self.groups[name] = g = FakeGroup(name, GroupKeys.from_replication_key(replication_key))
        return g

    async def remove_seed(self, name: str) -> None:
        self.removed.append(name)
        del self.groups[name]


class Conn:
    def __init__(self, handshake_hash: bytes, is_initiator: bool) -> None:
        self.handshake_hash, self.is_initiator = handshake_hash, is_initiator


class FakePeer:
    """One end of a connection; ``call`` runs the other end's service (the host's)."""

    def __init__(self, remote: DeviceIdentity, handshake_hash: bytes, initiator: bool, serve: Any = None) -> None:
        self.remote_peer_id = remote.peer_id
        self.conn = Conn(handshake_hash, initiator)
        self.loop = asyncio.get_running_loop()
        self.closed_with: str | None = None
        self.serve = serve
        self.closed = asyncio.Event()

    def close(self, reason: str = "") -> None:
        self.closed_with = reason
        self.closed.set()

    async def call(self, service: str, body: bytes, *, timeout: float = 30.0) -> bytes:
        assert service == "hosting"
        return await self.serve(body)


def pair(host: HostService, member: DeviceIdentity, hh: bytes = b"h" * 32) -> tuple[FakePeer, FakePeer]:
    """(the member's end, the host's end) of one connection the member dialed."""
    host_end = FakePeer(member, hh, initiator=False)
    member_end = FakePeer(HOST, hh, initiator=True, serve=lambda body: host.handle(host_end, body))
    return member_end, host_end


class FakeNet:
    def __init__(self, peer: Any = None, error: Exception | None = None) -> None:
        self.peer, self.error = peer, error
        self.candidates: list[tuple[bytes, bytes, str]] = []

    async def connect(self, address: str) -> Any:
        if self.error is not None:
            raise self.error
        return self.peer

    def connected(self, peer_id: bytes) -> Any:
        return None

    def add_candidate(self, dk: bytes, peer_id: bytes, address: str) -> None:
        self.candidates.append((dk, peer_id, address))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


NO_LIMITS = Limits()


def make_host(limits: Limits = NO_LIMITS, grace: float = 100.0) -> tuple[HostService, FakeSeeds, Clock]:
    seeds, clock = FakeSeeds(), Clock()
    host = HostService(FakeStore(), HOST, seeds, limits=limits, grace=grace, clock=clock)  # type: ignore[arg-type]
    return host, seeds, clock


def group(n: int) -> FakeGroup:
    return FakeGroup(f"g{n}", GroupKeys.from_address(bytes([n]) * 32))


ADDRESS = f"tcp:127.0.0.1:1~noise:{encode_key(HOST.peer_id)}"


async def add_request(secret: bytes, hh: bytes, initiator: bool, g: FakeGroup) -> bytes:
    return Request(Op.ADD, invite_id(secret), proof(proof_key(secret), hh, initiator, Op.ADD, g.replication_key),
                   g.replication_key).encode()


async def test_a_member_adds_a_group_and_the_host_keeps_only_its_replication_key():
    host, seeds, _ = make_host()
    secret, _ = await host.make_invite(quota_mb=1, groups=2, expires_days=1)
    member_end, _ = pair(host, MEMBER)
    net = FakeNet(member_end)
    member = MemberBackups(FakeStore(), MEMBER.peer_id, net)  # type: ignore[arg-type]
    g = group(1)
    doc = await member.add(g, BackupInvite(HOST.peer_id, secret, (ADDRESS,)))  # type: ignore[arg-type]
    assert doc["state"] == "active" and doc["host"] == HOST.peer_id.hex() and doc["quota_bytes"] == 1024 * 1024
    [kept] = seeds.groups.values()
    assert kept.keys.address is None and kept.replication_key == g.replication_key
    assert net.candidates == [(g.discovery_key, HOST.peer_id, ADDRESS)]  # the swarm keeps reaching the host
    with pytest.raises(Exception, match="already"):
        await member.add(g, BackupInvite(HOST.peer_id, secret, (ADDRESS,)))  # type: ignore[arg-type]
    await member.remove(g, HOST.peer_id.hex()[:8])  # type: ignore[arg-type]
    assert seeds.removed == [kept.name] and member.hosts == {}


async def test_a_proof_replayed_on_another_connection_or_reflected_is_refused():
    host, seeds, _ = make_host()
    secret, _ = await host.make_invite(quota_mb=0, groups=0, expires_days=0)
    seen = await add_request(secret, b"1" * 32, True, group(1))  # made for (and seen on) connection 1
    other = FakePeer(EVE, b"2" * 32, initiator=False)
    with pytest.raises(ServiceError, match="no such invite"):
        await host.handle(other, seen)
    reflected = FakePeer(EVE, b"1" * 32, initiator=True)  # the same connection hash, the roles swapped
    with pytest.raises(ServiceError, match="no such invite"):
        await host.handle(reflected, seen)
    assert seeds.groups == {} and host.hosted == {}
    right = FakePeer(MEMBER, b"1" * 32, initiator=False)
    assert Statement.decode(await host.handle(right, seen)).state is State.ACTIVE


async def test_a_malformed_request_disconnects_the_caller():
    host, _, _ = make_host()
    peer = FakePeer(EVE, b"h" * 32, initiator=False)
    with pytest.raises(ServiceError, match="hosting request"):
        await host.handle(peer, b"\x94\x01\x02\x03")
    await asyncio.wait_for(peer.closed.wait(), 5)
    assert "hosting request" in (peer.closed_with or "")


async def test_racing_adds_cannot_pass_the_invites_group_limit():
    host, seeds, _ = make_host()
    secret, _ = await host.make_invite(quota_mb=0, groups=1, expires_days=0)
    peer = FakePeer(MEMBER, b"h" * 32, initiator=False)
    bodies = [await add_request(secret, b"h" * 32, True, group(n)) for n in range(1, 6)]
    results = await asyncio.gather(*(host.handle(peer, b) for b in bodies), return_exceptions=True)
    assert sum(isinstance(r, bytes) for r in results) == 1 and len(seeds.groups) == 1
    assert all("all used" in str(r) for r in results if not isinstance(r, bytes))


async def test_the_quota_pauses_a_kept_group_and_removing_another_resumes_it():
    host, seeds, _ = make_host(limits=Limits(group_quota_bytes=500))
    secret, _ = await host.make_invite(quota_mb=1000 / (1024 * 1024), groups=0, expires_days=0)
    peer = FakePeer(MEMBER, b"h" * 32, initiator=False)
    await host.handle(peer, await add_request(secret, b"h" * 32, True, group(1)))
    await host.handle(peer, await add_request(secret, b"h" * 32, True, group(2)))
    a, b = seeds.groups.values()
    a.bytes = 499
    a.check_quota()
    assert not a.quota_full
    a.bytes = 500  # the per-group quota
    a.check_quota()
    assert a.quota_full
    a.bytes, b.bytes = 400, 600  # the invite's 1000 bytes, together
    a.check_quota()
    b.check_quota()
    assert a.quota_full and b.quota_full
    st = host.statement(host.hosted[a.discovery_key])
    assert st.state is State.FULL and st.quota_bytes == 400 and st.stored_bytes == 400
    with pytest.raises(ServiceError, match="used up"):
        await host.handle(peer, await add_request(secret, b"h" * 32, True, group(3)))
    await host._remove(host.hosted[b.discovery_key])
    assert not a.quota_full  # room again: it takes data


async def test_revoke_stops_new_data_refuses_the_device_and_clears_after_the_grace():
    host, seeds, clock = make_host(grace=100.0)
    secret, _ = await host.make_invite(quota_mb=0, groups=0, expires_days=0)
    peer = FakePeer(MEMBER, b"h" * 32, initiator=False)
    await host.handle(peer, await add_request(secret, b"h" * 32, True, group(1)))
    [g] = seeds.groups.values()
    result = await host.revoke(MEMBER.peer_id.hex()[:10])
    assert result["revoked"] == "device" and result["groups"] == [g.name]
    assert g.quota_full  # takes no new data at once
    status = Request(Op.STATUS, invite_id(secret), proof(proof_key(secret), b"h" * 32, True, Op.STATUS,
                                                         g.discovery_key), g.discovery_key).encode()
    assert Statement.decode(await host.handle(peer, status)).state is State.REVOKED
    with pytest.raises(ServiceError, match="revoked this device"):
        await host.handle(peer, await add_request(secret, b"h" * 32, True, group(2)))
    clock.now += 99
    assert await host.clear_due() == [] and g.name in seeds.groups
    clock.now += 1
    assert host.next_clearing() == clock.now
    sweeper = asyncio.create_task(host.run())
    try:
        for _ in range(100):
            if not seeds.groups:
                break
            await asyncio.sleep(0)
        assert seeds.removed == [g.name] and host.hosted == {}
    finally:
        sweeper.cancel()
    with pytest.raises(Exception, match="no invite or device"):
        await host.revoke("abcdef")


async def test_status_and_remove_need_the_invite_that_added_the_group():
    host, seeds, _ = make_host()
    secret, _ = await host.make_invite(quota_mb=0, groups=0, expires_days=0)
    other, _ = await host.make_invite(quota_mb=0, groups=0, expires_days=0)
    peer = FakePeer(MEMBER, b"h" * 32, initiator=False)
    g = group(1)
    await host.handle(peer, await add_request(secret, b"h" * 32, True, g))
    remove = Request(Op.REMOVE, invite_id(other), proof(proof_key(other), b"h" * 32, True, Op.REMOVE,
                                                        g.discovery_key), g.discovery_key).encode()
    with pytest.raises(ServiceError, match="no such group"):
        await host.handle(FakePeer(EVE, b"h" * 32, initiator=False), remove)
    forged = Request(Op.REMOVE, invite_id(secret), b"\0" * 32, g.discovery_key).encode()
    with pytest.raises(ServiceError) as e:
        await host.handle(FakePeer(EVE, b"h" * 32, initiator=False), forged)
    assert str(e.value) == NO_INVITE
    assert len(seeds.groups) == 1


async def test_a_device_with_another_key_gets_nothing_and_the_error_is_one_line():
    net = FakeNet(error=PeerKeyMismatchError("differs"))
    member = MemberBackups(FakeStore(), MEMBER.peer_id, net)  # type: ignore[arg-type]
    with pytest.raises(HostKeyMismatchError, match="another key") as e:
        await member.add(group(1), BackupInvite(HOST.peer_id, b"s" * 32, (ADDRESS,)))  # type: ignore[arg-type]
    assert "\n" not in str(e.value) and member.hosts == {}
    # A connection that (somehow) reached another device is refused before anything is sent.
    host, _, _ = make_host()
    eve_end = FakePeer(EVE, b"h" * 32, initiator=True, serve=lambda body: pytest.fail("sent to the wrong device"))
    member = MemberBackups(FakeStore(), MEMBER.peer_id, FakeNet(eve_end))  # type: ignore[arg-type]
    with pytest.raises(HostKeyMismatchError):
        await member.add(group(1), BackupInvite(HOST.peer_id, b"s" * 32, (ADDRESS,)))  # type: ignore[arg-type]
    member = MemberBackups(FakeStore(), MEMBER.peer_id, FakeNet(error=OSError("refused")))  # type: ignore[arg-type]
    with pytest.raises(HostUnreachableError, match="try again"):
        await member.add(group(1), BackupInvite(HOST.peer_id, b"s" * 32, (ADDRESS,)))  # type: ignore[arg-type]


async def test_a_forged_acceptance_is_refused_and_the_host_disconnected():
    host, _, _ = make_host()
    secret, _ = await host.make_invite(quota_mb=0, groups=0, expires_days=0)
    g = group(1)

    async def forger(body: bytes) -> bytes:
        st = Statement.decode(await host.handle(FakePeer(MEMBER, b"h" * 32, initiator=False), body))
        return Statement(st.host, st.discovery_key, st.invite, st.device, st.state, st.stored_bytes, st.quota_bytes,
                         st.time_ms).signed(EVE.sign).encode()

    end = FakePeer(HOST, b"h" * 32, initiator=True, serve=forger)
    member = MemberBackups(FakeStore(), MEMBER.peer_id, FakeNet(end))  # type: ignore[arg-type]
    with pytest.raises(MalformedHostingError, match="not signed"):
        await member.add(g, BackupInvite(HOST.peer_id, secret, (ADDRESS,)))  # type: ignore[arg-type]
    await asyncio.wait_for(end.closed.wait(), 5)
    assert member.hosts == {}


async def test_a_refusal_keeps_everything_and_an_unreachable_host_keeps_the_record():
    host, _, clock = make_host()
    secret, _ = await host.make_invite(quota_mb=0, groups=0, expires_days=1)
    member_end, _ = pair(host, MEMBER)
    net = FakeNet(member_end)
    member = MemberBackups(FakeStore(), MEMBER.peer_id, net)  # type: ignore[arg-type]
    clock.now += 86400
    with pytest.raises(HostRefusedError, match="expired"):
        await member.add(group(1), BackupInvite(HOST.peer_id, secret, (ADDRESS,)))  # type: ignore[arg-type]
    clock.now -= 86400
    await member.add(group(1), BackupInvite(HOST.peer_id, secret, (ADDRESS,)))  # type: ignore[arg-type]
    net.error = OSError("down")
    with pytest.raises(HostUnreachableError):
        await member.remove(group(1), HOST.peer_id.hex())  # type: ignore[arg-type]
    assert len(member.hosts) == 1  # nothing forgotten: ask again later
    again = MemberBackups(member.store, MEMBER.peer_id, FakeNet())  # type: ignore[arg-type]
    await again.load()
    assert list(again.hosts) == list(member.hosts)


async def test_damaged_records_are_skipped_and_the_rest_loads():
    host, seeds, _ = make_host()
    secret, _ = await host.make_invite(quota_mb=0, groups=0, expires_days=0)
    body = await add_request(secret, b"h" * 32, True, group(1))
    await host.handle(FakePeer(MEMBER, b"h" * 32, initiator=False), body)
    store = host.store
    await store.put_record("hosting-invites", "bad", b"\x93\x01")
    await store.put_record("hosting-groups", "bad", b"not msgpack \xc1")
    await store.put_record("hosting-revoked-devices", EVE.peer_id.hex(), b"not a time")
    again = HostService(store, HOST, seeds, limits=Limits(), grace=1.0)  # type: ignore[arg-type]
    await again.load()
    assert list(again.invites) == list(host.invites) and list(again.hosted) == list(host.hosted)
    assert EVE.peer_id in again.revoked_devices  # a damaged revocation still revokes
    member_store = FakeStore()
    await member_store.put_record("backup-hosts", "bad", b"\x90")
    member = MemberBackups(member_store, MEMBER.peer_id, FakeNet())  # type: ignore[arg-type]
    await member.load()
    assert member.hosts == {}
