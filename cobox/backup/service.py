"""Key backup and recovery over a peer connection: the backup peer's service and the member's
side of it, on top of :mod:`cobox.backup.recovery` (SPAKE2+EE) and :mod:`cobox.backup.keyring`.

Service ``recovery`` (a ``networker`` service call; body and answers are msgpack)::

    ["register", [Register, sealed keyring]]   -> b"ok"     (a taken name needs a login first)
    ["hello",    LoginHello]                   -> LoginParams
    ["commit",   ClientCommit]                 -> ServerCommit   (counts as a failed attempt...)
    ["confirm",  ClientConfirm]                -> the sealed keyring, wrapped under the session key
                                                  (...until the confirmation proves the password)

The backup peer stores, per username, the verifier record and the sealed keyring (records in
its store); neither the password nor its Argon2 output ever reaches it. The transcript is bound
to the backup peer's device key (its peer id is the SPAKE2+EE server id). Failed attempts are
rate-limited per username; an unknown name gets a decoy exchange that fails like a wrong
password.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack

from networker.peer import Peer, ServiceError
from storage import Store

from ..errors import RecoveryError
from . import messages as rm
from .keyring import Keyring, RateLimiter, open_keyring, seal_keyring, unwrap_from_session, wrap_for_session
from .recovery import INTERACTIVE, Argon2Params, ClientLogin, ClientRegistration, ServerLogin, accept_registration

SERVICE = "recovery"
SCOPE = "recovery"
SECRET_SCOPE = "recovery-secret"
MAX_KEYRING = 128 * 1024


def _pack(op: str, payload: Any) -> bytes:
    return msgpack.packb([op, payload], use_bin_type=True)


class RecoveryServer:
    """The backup peer's side: keeps verifier records and sealed keyrings, answers logins."""

    def __init__(self, store: Store, server_id: bytes, *, min_params: Argon2Params = INTERACTIVE) -> None:
        self.store = store
        self.server_id = server_id
        self.min_params = min_params
        self.limiter = RateLimiter()
        self.records: dict[str, tuple[rm.ServerStore, bytes]] = {}
        self.secret = b""

    async def load(self) -> None:
        secret = (await self.store.records(SECRET_SCOPE)).get("secret")
        if secret is None:
            secret = os.urandom(32)
            await self.store.put_record(SECRET_SCOPE, "secret", secret)
        self.secret = secret
        for name, value in (await self.store.records(SCOPE)).items():
            record, keyring = msgpack.unpackb(value, raw=False)
            self.records[name] = (rm.ServerStore.decode(record), keyring)

    async def handle(self, peer: Peer, body: bytes) -> bytes:
        try:
            op, payload = msgpack.unpackb(body, raw=False, max_bin_len=MAX_KEYRING + 1024)
            session: dict[str, Any] = peer.state.setdefault(SERVICE, {"authed": set()})  # type: ignore[assignment]
            if op == "register":
                return await self._register(session, payload)
            if op == "hello":
                hello = rm.decode(payload)
                if not isinstance(hello, rm.LoginHello):
                    raise ServiceError("expected a login hello")
                self.limiter.check(hello.username)
                login = ServerLogin.for_hello(hello, self._lookup, server_secret=self.secret,
                                              default_params=self.min_params, server_id=self.server_id)
                session["login"], session["user"] = login, hello.username
                return rm.encode(login.start())
            login = session.get("login")
            if login is None:
                raise ServiceError("no login in progress")
            if op == "commit":
                out = login.on_client_commit(rm.decode(payload))
                self.limiter.failure(session["user"])  # undone by a valid confirmation
                return rm.encode(out)
            if op == "confirm":
                key = login.on_client_confirm(rm.decode(payload))
                user = session.pop("user")
                session.pop("login")
                self.limiter.success(user)
                session["authed"].add(user)
                return wrap_for_session(key, self.records[user][1])
            raise ServiceError(f"unknown operation {op!r}")
        except RecoveryError as e:
            session_ = peer.state.get(SERVICE)
            if isinstance(session_, dict):
                session_.pop("login", None)
            raise ServiceError(_public(e)) from None
        except (ValueError, TypeError, KeyError, msgpack.UnpackException):
            raise ServiceError("malformed recovery request") from None

    def _lookup(self, name: str) -> rm.ServerStore | None:
        entry = self.records.get(name)
        return entry[0] if entry else None

    async def _register(self, session: dict[str, Any], payload: Any) -> bytes:
        reg_bytes, keyring = payload
        reg = rm.decode(reg_bytes)
        if not isinstance(reg, rm.Register) or type(keyring) is not bytes or len(keyring) > MAX_KEYRING:
            raise ServiceError("malformed registration")
        name = reg.record.username
        if name in self.records and name not in session["authed"]:
            raise ServiceError("name taken: log in to replace its backup")
        record = accept_registration(reg, min_params=self.min_params)
        self.records[name] = (record, keyring)
        await self.store.put_record(SCOPE, name, msgpack.packb([record.encode(), keyring], use_bin_type=True))
        return b"ok"


def _public(e: RecoveryError) -> str:
    """What the server says about a failure: the same words for a wrong password and an
    unknown name."""
    if e.code == "rate_limited":
        return str(e)
    if e.code in ("login_failed", "wrong_password"):
        return "login failed"
    return "login failed" if "confirm" in str(e) else f"recovery refused: {e}"


async def _login(peer: Peer, username: str, password: str) -> tuple[bytes, bytes]:
    client = ClientLogin(username, password, server_id=peer.remote_peer_id)
    params = rm.decode(await peer.call(SERVICE, _pack("hello", rm.encode(client.start()))))
    commit = client.on_params(params)  # type: ignore[arg-type]
    server_commit = rm.decode(await peer.call(SERVICE, _pack("commit", rm.encode(commit))))
    confirm = client.on_server_commit(server_commit)  # type: ignore[arg-type]  # WrongPasswordError
    wrapped = await peer.call(SERVICE, _pack("confirm", rm.encode(confirm)))
    assert client.session_key is not None
    return client.session_key, wrapped


async def backup_keys(peer: Peer, username: str, password: str, keyring: Keyring,
                      params: Argon2Params = INTERACTIVE) -> None:
    """Store (or replace) this device's keyring on the backup peer under ``username``."""
    sealed = seal_keyring(keyring, password, params, username=username)
    register = _pack("register", [rm.encode(ClientRegistration(username, password, params).message()), sealed])
    try:
        await peer.call(SERVICE, register)
    except ServiceError as e:
        if "name taken" not in str(e):
            raise
        await _login(peer, username, password)  # proves it is ours to replace
        await peer.call(SERVICE, register)


async def restore_keys(peer: Peer, username: str, password: str) -> Keyring:
    key, wrapped = await _login(peer, username, password)
    return open_keyring(unwrap_from_session(key, wrapped), password, username=username)
