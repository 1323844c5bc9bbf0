"""The recovery service against hostile clients (issue 12 items 13 and 14), without sockets: a
fake peer connection calls ``RecoveryServer.handle`` directly, as the networker would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgpack
import pytest

from cobox.backup import messages as m
from cobox.backup import recovery, service
from cobox.backup.keyring import GroupSecret, Keyring, RateLimiter
from cobox.backup.recovery import MINIMUM, Argon2Params, ClientLogin, ClientRegistration
from cobox.backup.service import REFUSED, STRANGER, RecoveryServer, backup_keys, restore_keys
from cobox.errors import RecoveryError, WrongPasswordError
from networker.peer import ServiceError
from storage import Store

PASSWORD = "correct horse battery staple"
KEYRING = Keyring(bytes(range(32)), {"family": GroupSecret("address", bytes(32))})
SERVER_ID = b"\x5e" * 32


@dataclass
class Channel:
    remote_id: int | None


@dataclass
class Conn:
    """Both ends of one connection: ``state`` and ``channels`` as the server sees them, and
    ``call`` as the client uses it."""

    server: RecoveryServer
    remote_peer_id: bytes
    in_group: bool = False
    state: dict = field(default_factory=dict)

    @property
    def channels(self) -> dict[int, Channel]:
        return {1: Channel(7 if self.in_group else None)}

    async def call(self, svc: str, body: bytes, *, timeout: float = 5.0) -> bytes:
        assert svc == service.SERVICE
        async with asyncio.timeout(timeout):
            return await self.server.handle(self, body)  # type: ignore[arg-type]


class ClientSide:
    """What the server's answers look like to a client (``remote_peer_id`` is the server's)."""

    def __init__(self, conn: Conn) -> None:
        self.conn, self.remote_peer_id = conn, SERVER_ID

    async def call(self, svc: str, body: bytes, *, timeout: float = 5.0) -> bytes:
        return await self.conn.call(svc, body, timeout=timeout)


@pytest.fixture
async def server(tmp_path):
    store = await Store.open(tmp_path / "s")
    srv = RecoveryServer(store, SERVER_ID, params=MINIMUM, limiter=RateLimiter(max_failures=5))
    await srv.load()
    yield srv
    await store.close()


def member(srv: RecoveryServer, n: int = 1) -> ClientSide:
    return ClientSide(Conn(srv, bytes([n]) * 32, in_group=True))


def stranger(srv: RecoveryServer, n: int = 99) -> ClientSide:
    return ClientSide(Conn(srv, bytes([n]) * 32, in_group=False))


async def _register(peer: ClientSide, name: str, params: Argon2Params = MINIMUM, keyring: bytes = b"k" * 100) -> bytes:
    reg = ClientRegistration(name, PASSWORD, params).message()
    return await peer.call(service.SERVICE, service._pack("register", [m.encode(reg), keyring]))


async def _guess(peer: ClientSide, name: str, password: str) -> bool:
    """One login attempt; True if the password was right."""
    try:
        await restore_keys(peer, name, password, min_params=MINIMUM)  # type: ignore[arg-type]
        return True
    except (WrongPasswordError, RecoveryError, ServiceError):
        return False


# --- item 13: the rate limit ------------------------------------------------------------------

async def test_ten_parallel_sessions_get_at_most_five_guesses(server) -> None:
    await backup_keys(member(server), "alice", PASSWORD, KEYRING, MINIMUM)  # type: ignore[arg-type]
    guesses = 0
    sessions = [stranger(server, 50 + i) for i in range(10)]  # one connection each, as the attack did

    async def attempt(peer: ClientSide, password: str) -> str:
        nonlocal guesses
        client = ClientLogin("alice", password, server_id=SERVER_ID, min_params=MINIMUM)
        try:
            params = m.decode(await peer.call(service.SERVICE, service._pack("hello", m.encode(client.start()))))
        except ServiceError as e:
            return str(e)
        await asyncio.sleep(0)  # let every session get its hello in before any commits
        commit = client.on_params(params)  # type: ignore[arg-type]
        sc = m.decode(await peer.call(service.SERVICE, service._pack("commit", m.encode(commit))))
        guesses += 1  # the server answered a commit: one password tested
        try:
            client.on_server_commit(sc)  # type: ignore[arg-type]
            return "right"
        except WrongPasswordError:
            return "wrong"

    # The correct password is the 9th guess, as in the attack.
    passwords = [f"guess {i}" for i in range(8)] + [PASSWORD, "guess 9"]
    results = await asyncio.gather(*(attempt(p, pw) for p, pw in zip(sessions, passwords, strict=True)))
    assert guesses <= 5
    assert "right" not in results
    assert sum("too many failed attempts" in r for r in results) == 5
    assert server.limiter.retry_after("alice") > 0  # the lock holds for every connection
    assert not await _guess(member(server, 3), "alice", PASSWORD)


async def test_a_right_password_refunds_its_reservation(server) -> None:
    await backup_keys(member(server), "alice", PASSWORD, KEYRING, MINIMUM)  # type: ignore[arg-type]
    for _ in range(4):
        assert not await _guess(stranger(server), "alice", "wrong password")
    assert await _guess(stranger(server), "alice", PASSWORD)
    for _ in range(4):  # the slate is clean again
        assert not await _guess(stranger(server), "alice", "wrong password")
    assert await _guess(stranger(server), "alice", PASSWORD)


def test_junk_names_do_not_evict_a_lock() -> None:
    now = [1000.0]
    rl = RateLimiter(max_failures=5, max_names=100_000, clock=lambda: now[0])
    for _ in range(5):
        rl.reserve("alice")
    rl.reserve("bob")  # bob has 4 guesses left: evidence junk must not erase either
    for _ in range(3):
        rl.reserve("bob")
    locked = rl.retry_after("alice")
    assert locked > 0
    for i in range(100_000):
        now[0] += 0.0001
        rl.reserve(f"junk{i}")
    assert len(rl) <= 100_000
    assert rl.retry_after("alice") == pytest.approx(locked - 10, abs=0.1)
    rl.reserve("bob")  # its fifth: still counted, so now locked
    assert rl.retry_after("bob") > 0


async def test_junk_hellos_through_the_service_do_not_unlock_a_name(tmp_path) -> None:
    async with await Store.open(tmp_path / "s") as store:
        srv = RecoveryServer(store, SERVER_ID, params=MINIMUM, limiter=RateLimiter(max_names=500))
        await srv.load()
        await backup_keys(member(srv), "alice", PASSWORD, KEYRING, MINIMUM)  # type: ignore[arg-type]
        for _ in range(5):
            assert not await _guess(stranger(srv), "alice", "wrong password")
        attacker = stranger(srv)
        for i in range(2000):  # 4x the table, from one connection
            await attacker.call(service.SERVICE, service._pack("hello", m.encode(m.LoginHello(f"junk{i}"))))
        assert len(srv.limiter) <= 500
        assert not await _guess(stranger(srv), "alice", PASSWORD)  # still locked: not even the right one
        assert srv.limiter.retry_after("alice") > 0


def test_a_table_full_of_locks_refuses_new_names_instead_of_evicting() -> None:
    from cobox.errors import RateLimitedError

    now = [1000.0]
    rl = RateLimiter(max_failures=1, max_names=100, clock=lambda: now[0])
    for i in range(100):
        rl.reserve(f"n{i}")
    with pytest.raises(RateLimitedError):
        rl.reserve("new")
    assert all(rl.retry_after(f"n{i}") > 0 for i in range(100))
    now[0] += 61  # the locks expire: room again
    rl.reserve("new")


async def test_hello_answers_alike_for_real_and_unknown_names(server, monkeypatch) -> None:
    await backup_keys(member(server), "alice", PASSWORD, KEYRING, MINIMUM)  # type: ignore[arg-type]
    calls: list[str] = []
    real_decoy, real_decode = recovery.decoy_record, m.ServerStore.decode.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(service, "decoy_record", lambda *a: calls.append("decoy") or real_decoy(*a))
    monkeypatch.setattr(m.ServerStore, "decode",
                        classmethod(lambda cls, d: calls.append("decode") or real_decode(cls, d)))
    answers = {}
    for name in ("alice", "carol"):  # same length: a real name and an unknown one
        calls.clear()
        body = service._pack("hello", m.encode(m.LoginHello(name)))
        answers[name] = m.decode(await stranger(server).call(service.SERVICE, body))
        assert calls == ["decoy", "decode"]  # the same work for both
    real, unknown = answers["alice"], answers["carol"]
    assert real.params == unknown.params == MINIMUM  # type: ignore[union-attr]
    assert len(m.encode(real)) == len(m.encode(unknown)) and real.salt != unknown.salt  # type: ignore[union-attr]


async def test_register_answers_alike_for_a_taken_name_and_other_limits(server) -> None:
    await backup_keys(member(server), "alice", PASSWORD, KEYRING, MINIMUM)  # type: ignore[arg-type]
    errors = []
    for name, params in (("alice", MINIMUM), ("carol", Argon2Params(2, MINIMUM.memlimit)),
                         ("carol", Argon2Params(1, 1 << 16))):
        with pytest.raises(ServiceError) as e:
            await _register(member(server, 2), name, params)
        errors.append(str(e.value))
    assert errors == [REFUSED] * 3
    assert await _guess(stranger(server), "alice", PASSWORD)  # the original is untouched


# --- item 14: who may register ------------------------------------------------------------

async def test_a_stranger_cannot_register(server) -> None:
    with pytest.raises(ServiceError) as e:
        await _register(stranger(server), "mallory")
    assert str(e.value) == STRANGER
    assert await server.store.records(service.SCOPE) == {}
    allowed = RecoveryServer(server.store, SERVER_ID, params=MINIMUM, allowed_peers={b"\x63" * 32})
    await allowed.load()
    assert await _register(stranger(allowed, 0x63), "friend") == b"ok"  # the operator's list


async def test_per_peer_quota_of_records_and_bytes(server) -> None:
    peer = member(server)
    for i in range(4):
        assert await _register(peer, f"user{i}") == b"ok"
    with pytest.raises(ServiceError, match="quota"):
        await _register(peer, "user4")
    assert await _register(member(server, 2), "user4") == b"ok"  # another peer has its own quota
    small = RecoveryServer(server.store, SERVER_ID, params=MINIMUM, quota_bytes=200 * 1024)
    await small.load()
    assert await _register(member(small, 3), "big", keyring=b"x" * (service.MAX_KEYRING - 1)) == b"ok"
    with pytest.raises(ServiceError, match="quota"):
        await _register(member(small, 3), "huge", keyring=b"x" * (service.MAX_KEYRING - 1))
    assert await _register(member(small, 3), "small", keyring=b"x" * 1000) == b"ok"  # what fits still goes
    # Records live on disk (the store), not in the server object.
    fresh = RecoveryServer(server.store, SERVER_ID, params=MINIMUM)
    await fresh.load()
    assert not hasattr(fresh, "records")
    names = sorted(await server.store.records(service.SCOPE))
    assert names == ["big", "small", "user0", "user1", "user2", "user3", "user4"]


async def test_a_total_cap_holds_against_many_identities(server) -> None:
    capped = RecoveryServer(server.store, SERVER_ID, params=MINIMUM, max_total_bytes=300 * 1024)
    await capped.load()
    accepted = 0
    for n in range(10):  # ten identities of one member, each within its own quota
        try:
            await _register(member(capped, 10 + n), f"id{n}", keyring=b"x" * 100_000)
            accepted += 1
        except ServiceError as e:
            assert "no more key backups" in str(e)
    assert accepted == 3 and capped.total_bytes <= 300 * 1024
    again = RecoveryServer(server.store, SERVER_ID, params=MINIMUM)
    await again.load()
    assert again.total_bytes == capped.total_bytes  # counted from disk at start


async def test_per_peer_registration_rate(tmp_path) -> None:
    now = [0.0]
    async with await Store.open(tmp_path / "s") as store:
        srv = RecoveryServer(store, SERVER_ID, params=MINIMUM, rate=(3, 60.0), quota_records=100,
                             clock=lambda: now[0])
        await srv.load()
        peer = member(srv)
        for i in range(3):
            await _register(peer, f"u{i}")
        with pytest.raises(ServiceError, match="too many registrations"):
            await _register(peer, "u3")
        now[0] += 61
        assert await _register(peer, "u3") == b"ok"


async def test_backup_replace_and_restore_round_trip(server) -> None:
    await backup_keys(member(server), "alice", PASSWORD, KEYRING, MINIMUM)  # type: ignore[arg-type]
    other = Keyring(bytes(32), {})
    await backup_keys(member(server, 2), "alice", PASSWORD, other, MINIMUM)  # log in, then replace
    assert await restore_keys(stranger(server), "alice", PASSWORD, min_params=MINIMUM) == other  # type: ignore[arg-type]
    with pytest.raises(RecoveryError, match="taken"):
        await backup_keys(member(server, 3), "alice", "another password", KEYRING, MINIMUM)  # type: ignore[arg-type]
    one = await server.store.records(service.OWNER_SCOPE + (b"\x01" * 32).hex())
    two = await server.store.records(service.OWNER_SCOPE + (b"\x02" * 32).hex())
    assert one == {} and list(two) == ["alice"]  # the owner index moved with the record


async def test_client_refuses_a_server_with_weaker_limits(server) -> None:
    with pytest.raises(RecoveryError, match="limits"):
        await backup_keys(member(server), "alice", PASSWORD, KEYRING, Argon2Params(2, MINIMUM.memlimit))  # type: ignore[arg-type]
    assert msgpack.unpackb(await member(server).call(service.SERVICE, service._pack("limits", None))) == [
        MINIMUM.opslimit, MINIMUM.memlimit]


# --- item 15: backup to an unverified address -------------------------------------------------

def test_backup_peer_address_must_name_its_key() -> None:
    from cobox.errors import UsageError
    from networker.address import parse
    from networker.encoding import encode_key

    key = encode_key(b"\x42" * 32)
    assert service.backup_peer_address(f"tcp:127.0.0.1:4000~noise:{key}").alternatives[0].peer_key == b"\x42" * 32
    for bare in ("tcp:127.0.0.1:4000", f"tcp:127.0.0.1:4000~noise:{key};tcp:10.0.0.1:4000"):
        with pytest.raises(UsageError, match="--trust-first-use"):
            service.backup_peer_address(bare)
        addr = service.backup_peer_address(bare, trust_first_use=True)
        pinned = service.pinned_address(addr, b"\x42" * 32)
        assert all(a.peer_key == b"\x42" * 32 for a in parse(pinned).alternatives) and key in pinned
    with pytest.raises(UsageError):
        service.backup_peer_address("not an address", trust_first_use=True)
