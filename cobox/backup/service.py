"""Key backup and recovery over a peer connection: the backup peer's service and the member's
side of it, on top of :mod:`cobox.backup.recovery` (SPAKE2+EE) and :mod:`cobox.backup.keyring`.

Service ``recovery`` (a ``networker`` service call; body and answers are msgpack)::

    ["limits",   None]                         -> [opslimit, memlimit]  (this server's, for every name)
    ["register", [Register, sealed keyring]]   -> b"ok"     (a taken name needs a login first)
    ["hello",    LoginHello]                   -> LoginParams    (reserves one guess on the name)
    ["commit",   ClientCommit]                 -> ServerCommit   (the guess)
    ["confirm",  ClientConfirm]                -> the sealed keyring, wrapped under the session key
                                                  (and the reserved guess is refunded)

Storage: per username, the verifier record, the sealed keyring and the peer id that registered
it, as records of the store (on disk; nothing is kept in memory but the rate limiter); an owner
index (scope ``recovery-owner:<peer id>``) counts each peer's records and bytes. Neither the
password nor its Argon2 output ever reaches this side. The transcript is bound to the backup
peer's device key (its peer id is the SPAKE2+EE server id).

Who may register: only a peer this daemon shares a group with (it opened a channel for one of
our groups, which proves it holds that group's replication key) or one the operator lists
(``[backup] recovery_allow``), within a per-peer quota of records and bytes, a per-peer rate,
and a total for all peers together (``max_total_bytes``: many identities of one member cannot
fill the disk).
Logins are open to anyone: whoever lost every device has no group with us any more.

Unknown names are indistinguishable from real ones:

- every record uses this server's one set of Argon2 limits (``params``): a registration with
  other limits is refused, so ``hello`` answers a decoy and a real record with the same limits;
- ``register`` refuses "name taken" and "limits not accepted" with the same words;
- ``hello`` runs one code path for both: it reads the stored record (or nothing), always derives
  the name's decoy record, and decodes whichever applies from bytes, so a decoy costs what a
  real record costs;
- the rate limiter reserves a guess at ``hello`` for every name alike (global per name, shared
  by all connections), so parallel sessions cannot get more than ``max_failures`` guesses.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from typing import Any

import msgpack

from networker import AddressError, MultiAddress, Peer, ServiceError
from networker import parse_address as parse
from storage import Store

from .. import netview
from ..errors import RecoveryError, UsageError, WrongPasswordError
from . import messages as rm
from .kdf import CEILING, MODERATE
from .keyring import Keyring, RateLimiter, open_keyring, seal_keyring, unwrap_from_session, wrap_for_session
from .recovery import Argon2Params, ClientLogin, ClientRegistration, ServerLogin, accept_registration, decoy_record

SERVICE = "recovery"
SCOPE = "recovery"
OWNER_SCOPE = "recovery-owner:"
SECRET_SCOPE = "recovery-secret"
MAX_KEYRING = 128 * 1024
REFUSED = "registration refused: the name is taken (log in to replace its backup) or its limits are not accepted"
STRANGER = "registration refused: this backup peer keeps keys only for peers it shares a group with"


def _pack(op: str, payload: Any) -> bytes:
    return msgpack.packb([op, payload], use_bin_type=True)


def shares_group(peer: Peer) -> bool:
    """Whether ``peer`` has a channel open with us for one of our groups (its capability
    verified: it holds that group's replication key)."""
    return netview.shares_group(peer)


class _PeerRate:
    """At most ``count`` registrations per ``period`` seconds per peer (bounded table)."""

    def __init__(self, count: int, period: float, clock: Callable[[], float], max_peers: int = 4096) -> None:
        self.count, self.period, self.clock, self.max_peers = count, period, clock, max_peers
        self._seen: OrderedDict[bytes, deque[float]] = OrderedDict()

    def take(self, peer_id: bytes) -> bool:
        now = self.clock()
        times = self._seen.pop(peer_id, None) or deque()
        while times and now - times[0] >= self.period:
            times.popleft()
        ok = len(times) < self.count
        if ok:
            times.append(now)
        self._seen[peer_id] = times
        while len(self._seen) > self.max_peers:
            self._seen.popitem(last=False)
        return ok


class RecoveryServer:
    """The backup peer's side: keeps verifier records and sealed keyrings, answers logins."""

    def __init__(self, store: Store, server_id: bytes, *, params: Argon2Params = MODERATE,
                 allowed_peers: Collection[bytes] = (), quota_records: int = 4,
                 quota_bytes: int = 512 * 1024, rate: tuple[int, float] = (10, 3600.0),
                 max_total_bytes: int = 64 * 1024 * 1024, limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.server_id = server_id
        self.params = params
        self.allowed_peers = frozenset(allowed_peers)
        self.quota_records, self.quota_bytes = quota_records, quota_bytes
        self.max_total_bytes = max_total_bytes
        self.total_bytes = 0  # what every stored backup takes, counted at load and on each write
        self.limiter = limiter if limiter is not None else RateLimiter(clock=clock)
        self._rate = _PeerRate(rate[0], rate[1], clock)
        self.secret = b""

    async def load(self) -> None:
        secret = (await self.store.records(SECRET_SCOPE)).get("secret")
        if secret is None:
            secret = os.urandom(32)
            await self.store.put_record(SECRET_SCOPE, "secret", secret)
        self.secret = secret
        self.total_bytes = await self.store.records_size(SCOPE)

    async def handle(self, peer: Peer, body: bytes) -> bytes:
        try:
            op, payload = msgpack.unpackb(body, raw=False, max_bin_len=MAX_KEYRING + 1024)
            session: dict[str, Any] = peer.state.setdefault(SERVICE, {"authed": set()})  # type: ignore[assignment]
            if op == "limits":
                return msgpack.packb([self.params.opslimit, self.params.memlimit])
            if op == "register":
                return await self._register(peer, session, payload)
            if op == "hello":
                session.pop("login", None)
                hello = rm.decode(payload)
                if not isinstance(hello, rm.LoginHello):
                    raise ServiceError("expected a login hello")
                self.limiter.reserve(hello.username)  # the guess is paid for before it exists
                record, keyring = await self._record_or_decoy(hello.username)
                login = ServerLogin(record, server_id=self.server_id)
                session["login"], session["user"], session["keyring"] = login, hello.username, keyring
                return rm.encode(login.start())
            login = session.get("login")
            if login is None:
                raise ServiceError("no login in progress")
            if op == "commit":
                return rm.encode(login.on_client_commit(rm.decode(payload)))
            if op == "confirm":
                key = login.on_client_confirm(rm.decode(payload))  # LoginFailedError for a decoy
                user, keyring = session.pop("user"), session.pop("keyring")
                session.pop("login")
                self.limiter.success(user)  # the refund
                session["authed"].add(user)
                return wrap_for_session(key, keyring)
            raise ServiceError(f"unknown operation {op!r}")
        except RecoveryError as e:
            session_ = peer.state.get(SERVICE)
            if isinstance(session_, dict):
                session_.pop("login", None)
            raise ServiceError(_public(e)) from None
        except (ValueError, TypeError, KeyError, msgpack.UnpackException):
            raise ServiceError("malformed recovery request") from None

    async def _stored(self, name: str) -> tuple[bytes, bytes, bytes] | None:
        """``(record bytes, sealed keyring, owner peer id)`` of a registered name, from disk."""
        value = await self.store.record(SCOPE, name)
        if value is None:
            return None
        record, keyring, owner = msgpack.unpackb(value, raw=False)
        return record, keyring, owner

    async def _record_or_decoy(self, name: str) -> tuple[rm.ServerStore, bytes]:
        """The record to answer a login on ``name`` with: one code path for real and unknown
        names (the decoy is always derived, the chosen record always decoded from bytes)."""
        stored = await self._stored(name)
        decoy = decoy_record(name, self.secret, self.params).encode()
        data, keyring = (stored[0], stored[1]) if stored is not None else (decoy, b"")
        return rm.ServerStore.decode(data), keyring

    async def _register(self, peer: Peer, session: dict[str, Any], payload: Any) -> bytes:
        owner = bytes(peer.remote_peer_id)
        if owner not in self.allowed_peers and not shares_group(peer):
            raise ServiceError(STRANGER)
        if not self._rate.take(owner):
            raise ServiceError("registration refused: too many registrations from this peer; try again later")
        reg_bytes, keyring = payload
        reg = rm.decode(reg_bytes)
        if not isinstance(reg, rm.Register) or type(keyring) is not bytes or len(keyring) > MAX_KEYRING:
            raise ServiceError("malformed registration")
        name = reg.record.username
        stored = await self._stored(name)
        taken = stored is not None and name not in session["authed"]
        limits_ok = reg.record.params == self.params
        if taken or not limits_ok:
            raise ServiceError(REFUSED)  # the same words for both: no name is confirmed to exist
        record = accept_registration(reg, min_params=self.params, max_params=self.params).encode()
        size = len(record) + len(keyring)
        held = await self.store.records(OWNER_SCOPE + owner.hex())
        held.pop(name, None)
        if len(held) + 1 > self.quota_records or sum(int(v) for v in held.values()) + size > self.quota_bytes:
            raise ServiceError(f"registration refused: this peer's quota ({self.quota_records} backups, "
                               f"{self.quota_bytes // 1024} KiB) is used up")
        value = msgpack.packb([record, keyring, owner], use_bin_type=True)
        old = len(msgpack.packb(list(stored), use_bin_type=True)) if stored is not None else 0
        if self.total_bytes - old + len(value) > self.max_total_bytes:
            raise ServiceError("registration refused: this backup peer keeps no more key backups")
        if stored is not None and stored[2] != owner:
            await self.store.delete_record(OWNER_SCOPE + bytes(stored[2]).hex(), name)
        await self.store.put_record(SCOPE, name, value)
        self.total_bytes += len(value) - old
        await self.store.put_record(OWNER_SCOPE + owner.hex(), name, str(size).encode())
        return b"ok"


def _public(e: RecoveryError) -> str:
    """What the server says about a failure: the same words for a wrong password and an
    unknown name."""
    if e.code == "rate_limited":
        return str(e)
    if e.code in ("login_failed", "wrong_password"):
        return "login failed"
    return "login failed" if "confirm" in str(e) else f"recovery refused: {e}"


async def _login(peer: Peer, username: str, password: str, *, min_params: Argon2Params | None = None
                 ) -> tuple[bytes, bytes]:
    client = (ClientLogin(username, password, server_id=peer.remote_peer_id) if min_params is None else
              ClientLogin(username, password, server_id=peer.remote_peer_id, min_params=min_params))
    params = rm.decode(await peer.call(SERVICE, _pack("hello", rm.encode(client.start()))))
    commit = client.on_params(params)  # type: ignore[arg-type]
    server_commit = rm.decode(await peer.call(SERVICE, _pack("commit", rm.encode(commit))))
    confirm = client.on_server_commit(server_commit)  # type: ignore[arg-type]  # WrongPasswordError
    wrapped = await peer.call(SERVICE, _pack("confirm", rm.encode(confirm)))
    assert client.session_key is not None
    return client.session_key, wrapped


def backup_peer_address(text: str, *, trust_first_use: bool = False) -> MultiAddress:
    """The address to send a keyring to (or restore from). It must name the backup peer's key
    (``~noise:KEY`` on every alternative): otherwise whoever answers at that host and port would
    get the verifier and the sealed keyring. ``trust_first_use`` accepts an address without a key
    (the caller then shows the key it got)."""
    try:
        addr = parse(text)
    except AddressError as e:
        raise UsageError(f"bad backup peer address: {e}") from None
    if not trust_first_use and any(a.peer_key is None for a in addr.alternatives):
        raise UsageError("the backup peer address has no ~noise:KEY, so nothing proves who answers; give its full "
                         "address (`cobox status` on the backup peer) or --trust-first-use to accept the key it "
                         "presents (and check it)")
    return addr


def pinned_address(addr: MultiAddress, peer_id: bytes) -> str:
    """``addr`` with the key the peer presented, to use next time."""
    return MultiAddress(tuple(a.with_key(bytes(peer_id)) for a in addr.alternatives)).format()


async def server_limits(peer: Peer) -> Argon2Params:
    """The Argon2 limits the backup peer requires of every record."""
    try:
        ops, mem = msgpack.unpackb(await peer.call(SERVICE, _pack("limits", None)), raw=False)
        return Argon2Params(ops, mem)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise RecoveryError("the backup peer answered malformed limits") from None


async def backup_keys(peer: Peer, username: str, password: str, keyring: Keyring,
                      params: Argon2Params = MODERATE) -> None:
    """Store (or replace) this device's keyring on the backup peer under ``username``: the
    keyring sealed with ``params``, the login record with the backup peer's own limits (refused
    if they are weaker than ``params``)."""
    limits = await server_limits(peer)
    if not limits.at_least(params) or not limits.at_most(CEILING):
        raise RecoveryError(f"the backup peer's password-hashing limits ({limits.opslimit} passes, "
                            f"{limits.memlimit >> 20} MiB) do not match this device's keys_strength")
    sealed = seal_keyring(keyring, password, params, username=username)
    register = _pack("register", [rm.encode(ClientRegistration(username, password, limits).message()), sealed])
    try:
        await peer.call(SERVICE, register)
    except ServiceError as e:
        if REFUSED not in str(e):
            raise
        try:
            await _login(peer, username, password, min_params=limits)  # proves it is ours to replace
        except WrongPasswordError:
            raise RecoveryError(f"the backup peer refused {username!r}: the name is taken by another "
                                "account") from None
        await peer.call(SERVICE, register)


async def restore_keys(peer: Peer, username: str, password: str, *, min_params: Argon2Params | None = None
                       ) -> Keyring:
    key, wrapped = await _login(peer, username, password, min_params=min_params)
    return open_keyring(unwrap_from_session(key, wrapped), password, username=username)
