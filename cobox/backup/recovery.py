"""Password-based key recovery with a backup peer: SPAKE2+EE, sans-IO.

Theory of operation
-------------------
A member who loses every device gets its keys back from a backup peer with a username and a
password. The password is never sent and never stored: the backup peer keeps a *verifier*
(:class:`ServerStore`) and an encrypted keyring (``keyring.py``); both sides prove knowledge
of their half with an augmented PAKE, SPAKE2+EE (Frank Denis, ``jedisct1/spake2-ee`` for
libsodium), built here from libsodium's Ed25519 core and BLAKE3 (``kdf.py``).

Registration (client only; the server just validates and stores)::

    s = Argon2id(password, salt, limits)         salt: 16 random bytes, limits chosen by the client
    M, N, k, w, L = kdf.password_secrets(s)     L = w*G
    client -> server  Register(username, salt, limits, M, N, k, L)

Login (5 messages: one to fetch the salt, then the 3-message SPAKE2+EE exchange)::

    client -> server  LoginHello(username)
    server -> client  LoginParams(salt, limits)     a deterministic decoy for an unknown name
    client            s = Argon2id(...); M, N, k, w = ...; x random
    client -> server  ClientCommit(X = x*G + M)
    server            y random; Y = y*G + N; Z = y*(X - M); V = y*L
    server -> client  ServerCommit(Y, server_confirm)
    client            Z = x*(Y - N); V = w*(Y - N); checks server_confirm  (WrongPasswordError)
    client -> server  ClientConfirm(client_confirm)
    server            checks client_confirm                                (LoginFailedError)

Both then hold ``session_key``. ``server_confirm``, ``client_confirm`` and ``session_key`` are
BLAKE3 ``derive_key`` of one hash of the whole transcript (version, username, server id, salt,
limits, X, Y, Z, k, V), so any changed byte fails the confirmation. The server proves itself
first, so a client never gives a fake server anything it can check a guess against.

Invariants: the server never sees ``s`` or ``w``; the client never reveals ``x``; a machine
moves only along its transition table (anything else raises :class:`IllegalTransitionError`),
and a failure leaves it in ``FAILED`` with its secrets dropped.

Unknown usernames look like wrong passwords: :func:`record_or_decoy` answers with a decoy
record whose salt and points are derived from a server secret and the name (stable across
attempts), with the server's limits; the run then fails confirmation exactly like a wrong
password. It runs one code path for both (the decoy is always derived and the chosen record
always decoded from bytes), so a decoy costs what a real record costs. This holds as long as
every real record uses the server's one set of limits (``service.RecoveryServer`` refuses
others) and the rate limiter treats every name alike.

Mapping to the reference: ``crypto_spake_server_store`` = :class:`ClientRegistration`;
``step0`` / ``step0_dummy`` = :meth:`ServerLogin.start` on a real / decoy record; ``step1`` =
:meth:`ClientLogin.on_params`; ``step2`` = :meth:`ServerLogin.on_client_commit`; ``step3`` =
:meth:`ClientLogin.on_server_commit`; ``step4`` = :meth:`ServerLogin.on_client_confirm`.
Differences: Argon2id yields 32 bytes that BLAKE3 splits (the reference splits 128 bytes of
``crypto_pwhash``); ``w`` is a reduced scalar (no clamping); ephemerals are uniform mod the group
order; received points are checked to be in the prime-order subgroup; the transcript also binds
salt and limits; one session key instead of a pair; msgpack messages instead of fixed buffers.

Protocol glue: :mod:`cobox.backup.service` (who may register, the per-name rate limit reserved
at ``hello`` and refunded on a valid confirmation, records on disk, the keyring wrapped under
the session key after a login).

Caveat: whoever holds a :class:`ServerStore` can test password guesses offline at the cost of
one Argon2id each (as with any verifier-based PAKE); what the scheme prevents is learning
anything from the wire, guessing more than once per online run, and logging in with a stolen
record (that needs ``w``). Strong limits and a strong password are the defence.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import Enum

import nacl.bindings as sodium
import nacl.exceptions

from ..errors import (
    IllegalTransitionError,
    LoginFailedError,
    RecoveryProtocolError,
    WeakParametersError,
    WrongPasswordError,
)
from .kdf import (
    CEILING,
    FAKE_SALT_CONTEXT,
    FAKE_STRETCHED_CONTEXT,
    INTERACTIVE,
    MINIMUM,
    SALT_BYTES,
    Argon2Params,
    PasswordSecrets,
    derive,
    fake_seed,
    password_bytes,
    password_secrets,
    random_scalar,
    session_secrets,
    stretch,
)
from .messages import (
    ClientCommit,
    ClientConfirm,
    LoginHello,
    LoginParams,
    Message,
    Register,
    ServerCommit,
    ServerStore,
    check_username,
)

__all__ = [
    "CEILING", "INTERACTIVE", "MINIMUM", "Argon2Params", "ClientLogin", "ClientRegistration",
    "ClientState", "ServerLogin", "ServerState", "ServerStore", "accept_registration",
    "decoy_record", "record_or_decoy",
]

DEFAULT_SERVER_ID = b"cobox backup peer"


class ClientState(Enum):
    START = "start"
    AWAIT_PARAMS = "await_params"
    AWAIT_SERVER_COMMIT = "await_server_commit"
    DONE = "done"
    FAILED = "failed"


class ServerState(Enum):
    START = "start"
    AWAIT_CLIENT_COMMIT = "await_client_commit"
    AWAIT_CLIENT_CONFIRM = "await_client_confirm"
    DONE = "done"
    FAILED = "failed"


CLIENT_TRANSITIONS: dict[tuple[ClientState, str], ClientState] = {
    (ClientState.START, "start"): ClientState.AWAIT_PARAMS,
    (ClientState.AWAIT_PARAMS, "params"): ClientState.AWAIT_SERVER_COMMIT,
    (ClientState.AWAIT_SERVER_COMMIT, "server_commit"): ClientState.DONE,
}

SERVER_TRANSITIONS: dict[tuple[ServerState, str], ServerState] = {
    (ServerState.START, "start"): ServerState.AWAIT_CLIENT_COMMIT,
    (ServerState.AWAIT_CLIENT_COMMIT, "client_commit"): ServerState.AWAIT_CLIENT_CONFIRM,
    (ServerState.AWAIT_CLIENT_CONFIRM, "client_confirm"): ServerState.DONE,
}


def _add(p: bytes, q: bytes) -> bytes:
    return sodium.crypto_core_ed25519_add(p, q)


def _unblind_mul(scalar: bytes, blinded: bytes, blind: bytes) -> bytes:
    """``scalar * (blinded - blind)``; a remote error if the point is not usable."""
    try:
        return sodium.crypto_scalarmult_ed25519_noclamp(scalar, sodium.crypto_core_ed25519_sub(blinded, blind))
    except nacl.exceptions.CryptoError:
        raise RecoveryProtocolError("degenerate point from the other side") from None


def _valid_point(p: bytes, what: str) -> bytes:
    if len(p) != 32 or not sodium.crypto_core_ed25519_is_valid_point(p):
        raise RecoveryProtocolError(f"{what}: not a valid point")
    return p


class _Machine:
    """The table-driven part both login machines share."""

    transitions: dict
    failed: Enum
    state: Enum

    def _target(self, event: str) -> Enum:
        target = self.transitions.get((self.state, event))
        if target is None:
            raise IllegalTransitionError(f"{type(self).__name__}: no {event!r} in state {self.state.name}")
        return target

    def _fail(self) -> None:
        self.state = self.failed
        self._forget()

    def _forget(self) -> None:
        raise NotImplementedError


class ClientRegistration:
    """Turn a username and password into the ``Register`` message a backup peer stores."""

    def __init__(self, username: str, password: str | bytes, params: Argon2Params = INTERACTIVE,
                 *, salt: bytes | None = None) -> None:
        self.username = check_username(username)
        salt = sodium.randombytes(SALT_BYTES) if salt is None else salt
        secrets = password_secrets(stretch(password, salt, params))
        self._message = Register(ServerStore(self.username, salt, params, secrets.m, secrets.n, secrets.k,
                                             secrets.l))

    def message(self) -> Register:
        return self._message


def accept_registration(msg: Register, *, min_params: Argon2Params = INTERACTIVE,
                        max_params: Argon2Params = CEILING) -> ServerStore:
    """The server side of registration: the record to store, or :class:`WeakParametersError`."""
    if not msg.record.params.at_least(min_params) or not msg.record.params.at_most(max_params):
        raise WeakParametersError("registration limits outside what this backup peer accepts")
    for name, p in (("M", msg.record.m), ("N", msg.record.n), ("L", msg.record.l)):
        _valid_point(p, name)
    return msg.record


def decoy_record(username: str, server_secret: bytes, params: Argon2Params) -> ServerStore:
    """The record of a name with no account: the same for every attempt on that name, built like
    a real record of an unknown password, so that no run on it can succeed or stand out."""
    seed = fake_seed(server_secret, check_username(username))
    secrets = password_secrets(derive(FAKE_STRETCHED_CONTEXT, seed))
    return ServerStore(username, derive(FAKE_SALT_CONTEXT, seed, SALT_BYTES), params, secrets.m, secrets.n,
                       secrets.k, secrets.l)


def record_or_decoy(username: str, lookup: Callable[[str], ServerStore | None], *, server_secret: bytes,
                    default_params: Argon2Params = INTERACTIVE) -> ServerStore:
    record = lookup(username)
    decoy = decoy_record(username, server_secret, default_params)  # always: same cost either way
    return ServerStore.decode((decoy if record is None else record).encode())


class ClientLogin(_Machine):
    """The client's half of a login. ``start() -> LoginHello``, ``on_params -> ClientCommit``,
    ``on_server_commit -> ClientConfirm``; then ``session_key`` is set."""

    transitions = CLIENT_TRANSITIONS
    failed = ClientState.FAILED

    def __init__(self, username: str, password: str | bytes, *, server_id: bytes = DEFAULT_SERVER_ID,
                 min_params: Argon2Params = INTERACTIVE, max_params: Argon2Params = CEILING) -> None:
        self.username = check_username(username)
        self.server_id = server_id
        self.min_params, self.max_params = min_params, max_params
        self.state: ClientState = ClientState.START
        self.session_key: bytes | None = None
        self._password: bytes | None = password_bytes(password)
        self._params: LoginParams | None = None
        self._secrets: PasswordSecrets | None = None
        self._x: bytes | None = None
        self._X: bytes | None = None

    def _forget(self) -> None:
        self._password = self._secrets = self._x = None

    def start(self) -> LoginHello:
        self.state = self._target("start")
        return LoginHello(self.username)

    def on_params(self, msg: LoginParams) -> ClientCommit:
        target = self._target("params")
        try:
            if not msg.params.at_least(self.min_params) or not msg.params.at_most(self.max_params):
                raise WeakParametersError("the backup peer asked for password-hashing limits out of range")
            assert self._password is not None
            secrets = password_secrets(stretch(self._password, msg.salt, msg.params))
            x = random_scalar()
            big_x = _add(sodium.crypto_scalarmult_ed25519_base_noclamp(x), secrets.m)
        except BaseException:
            self._fail()
            raise
        self._password = None
        self._params, self._secrets, self._x, self._X = msg, secrets, x, big_x
        self.state = target
        return ClientCommit(big_x)

    def on_server_commit(self, msg: ServerCommit) -> ClientConfirm:
        target = self._target("server_commit")
        try:
            assert self._secrets is not None and self._x is not None and self._X and self._params
            y = _valid_point(msg.y, "Y")
            z = _unblind_mul(self._x, y, self._secrets.n)
            v = _unblind_mul(self._secrets.w, y, self._secrets.n)
            s = session_secrets(username=self.username, server_id=self.server_id, salt=self._params.salt,
                                params=self._params.params, x=self._X, y=y, z=z, k=self._secrets.k, v=v)
            if not hmac.compare_digest(msg.confirm, s.server_confirm):
                raise WrongPasswordError("wrong password or unknown username")
        except BaseException:
            self._fail()
            raise
        self._forget()
        self.session_key = s.session_key
        self.state = target
        return ClientConfirm(s.client_confirm)

    def receive(self, msg: Message) -> Message:
        """Dispatch a decoded message from the server to its handler."""
        if isinstance(msg, LoginParams):
            return self.on_params(msg)
        if isinstance(msg, ServerCommit):
            return self.on_server_commit(msg)
        raise IllegalTransitionError(f"ClientLogin: unexpected {type(msg).__name__} in state {self.state.name}")


class ServerLogin(_Machine):
    """The backup peer's half of a login on one record (real or decoy). ``start() -> LoginParams``,
    ``on_client_commit -> ServerCommit``, ``on_client_confirm -> session key``."""

    transitions = SERVER_TRANSITIONS
    failed = ServerState.FAILED

    def __init__(self, record: ServerStore, *, server_id: bytes = DEFAULT_SERVER_ID) -> None:
        self.record = record
        self.server_id = server_id
        self.state: ServerState = ServerState.START
        self.session_key: bytes | None = None
        self._pending: tuple[bytes, bytes] | None = None  # (session key, expected client confirm)

    @classmethod
    def for_hello(cls, hello: LoginHello, lookup: Callable[[str], ServerStore | None], *, server_secret: bytes,
                  default_params: Argon2Params = INTERACTIVE, server_id: bytes = DEFAULT_SERVER_ID) -> ServerLogin:
        record = record_or_decoy(hello.username, lookup, server_secret=server_secret, default_params=default_params)
        return cls(record, server_id=server_id)

    def _forget(self) -> None:
        self._pending = None

    def start(self) -> LoginParams:
        self.state = self._target("start")
        return LoginParams(self.record.salt, self.record.params)

    def on_client_commit(self, msg: ClientCommit) -> ServerCommit:
        target = self._target("client_commit")
        r = self.record
        try:
            big_x = _valid_point(msg.x, "X")
            y = random_scalar()
            big_y = _add(sodium.crypto_scalarmult_ed25519_base_noclamp(y), r.n)
            z = _unblind_mul(y, big_x, r.m)
            v = sodium.crypto_scalarmult_ed25519_noclamp(y, r.l)
            s = session_secrets(username=r.username, server_id=self.server_id, salt=r.salt, params=r.params,
                                x=big_x, y=big_y, z=z, k=r.k, v=v)
        except BaseException:
            self._fail()
            raise
        self._pending = (s.session_key, s.client_confirm)
        self.state = target
        return ServerCommit(big_y, s.server_confirm)

    def on_client_confirm(self, msg: ClientConfirm) -> bytes:
        target = self._target("client_confirm")
        assert self._pending is not None
        session_key, expected = self._pending
        if not hmac.compare_digest(msg.confirm, expected):
            self._fail()
            raise LoginFailedError("the client's confirmation does not match")
        self._forget()
        self.session_key = session_key
        self.state = target
        return session_key

    def receive(self, msg: Message) -> Message | bytes:
        """Dispatch a decoded message from the client to its handler."""
        if isinstance(msg, ClientCommit):
            return self.on_client_commit(msg)
        if isinstance(msg, ClientConfirm):
            return self.on_client_confirm(msg)
        raise IllegalTransitionError(f"ServerLogin: unexpected {type(msg).__name__} in state {self.state.name}")
