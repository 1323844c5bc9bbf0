"""Password recovery: SPAKE2+EE login machines, their messages, the keyring and the rate limiter.
Every test uses libsodium's minimum Argon2id limits so the suite stays fast."""

from __future__ import annotations

import unicodedata

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cobox.backup import kdf
from cobox.backup import messages as m
from cobox.backup.keyring import (
    GroupSecret,
    Keyring,
    open_keyring,
    seal_keyring,
    unwrap_from_session,
    wrap_for_session,
)
from cobox.backup.recovery import (
    MINIMUM,
    Argon2Params,
    ClientLogin,
    ClientRegistration,
    ClientState,
    ServerLogin,
    ServerState,
    ServerStore,
    accept_registration,
    decoy_record,
)
from cobox.errors import (
    IllegalTransitionError,
    KeyringDecryptError,
    LoginFailedError,
    RecoveryProtocolError,
    WeakParametersError,
    WrongPasswordError,
)

SECRET = bytes(range(32))
PASSWORD = "correct horse battery staple"


class Wire:
    """Carries messages between the two machines as bytes, keeping a copy of each."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __call__(self, msg: m.Message) -> m.Message:
        data = m.encode(msg)
        self.sent.append(data)
        return m.decode(data)


def register(username: str = "alice", password: str | bytes = PASSWORD, wire: Wire | None = None) -> ServerStore:
    msg = ClientRegistration(username, password, MINIMUM).message()
    return accept_registration((wire or Wire())(msg), min_params=MINIMUM)  # type: ignore[arg-type]


def client(username: str = "alice", password: str | bytes = PASSWORD) -> ClientLogin:
    return ClientLogin(username, password, min_params=MINIMUM)


def lookup_in(records: dict[str, ServerStore]):
    return records.get


def login(c: ClientLogin, records: dict[str, ServerStore], wire: Wire | None = None,
          tamper: int | None = None) -> ServerLogin:
    """Run a whole login; ``tamper`` flips a bit in message number ``tamper`` (0-4) on the wire
    (message 2, the client's point, is replaced by a non-point instead)."""
    wire = wire or Wire()
    n = 0

    def send(msg: m.Message) -> m.Message:
        nonlocal n
        data = m.encode(msg)
        if n == tamper == 2:  # X replaced by an encoding that is no point (y >= p): a flipped bit
            data = data[:-32] + b"\xff" * 31 + b"\x7f"  # alone is another valid point half the time
        elif n == tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        n += 1
        wire.sent.append(data)
        return m.decode(data)

    hello = send(c.start())
    s = ServerLogin.for_hello(hello, lookup_in(records), server_secret=SECRET, default_params=MINIMUM)  # type: ignore[arg-type]
    commit = send(c.on_params(send(s.start())))  # type: ignore[arg-type]
    confirm = send(c.on_server_commit(send(s.on_client_commit(commit))))  # type: ignore[arg-type, arg-type]
    s.on_client_confirm(confirm)  # type: ignore[arg-type]
    return s


def test_round_trip_gives_equal_session_keys():
    records = {"alice": register()}
    c = client()
    s = login(c, records)
    assert c.state is ClientState.DONE and s.state is ServerState.DONE
    assert c.session_key == s.session_key and len(c.session_key or b"") == 32


def test_session_keys_differ_per_login():
    records = {"alice": register()}
    c1, c2 = client(), client()
    login(c1, records), login(c2, records)
    assert c1.session_key != c2.session_key


def test_unicode_password_is_normalized():
    records = {"alice": register(password="cafe\u0301")}
    c = client(password="caf\u00e9")
    assert login(c, records).session_key == c.session_key


def _wrong_password_run(records: dict[str, ServerStore], username: str, wire: Wire) -> ServerLogin:
    c = client(username, "not the password")
    hello = wire(c.start())
    s = ServerLogin.for_hello(hello, lookup_in(records), server_secret=SECRET, default_params=MINIMUM)  # type: ignore[arg-type]
    commit = wire(c.on_params(wire(s.start())))  # type: ignore[arg-type]
    server_commit = wire(s.on_client_commit(commit))  # type: ignore[arg-type]
    with pytest.raises(WrongPasswordError):
        c.on_server_commit(server_commit)  # type: ignore[arg-type]
    assert c.state is ClientState.FAILED and c.session_key is None
    return s


def test_wrong_password_fails_on_both_sides():
    records = {"alice": register()}
    s = _wrong_password_run(records, "alice", Wire())
    # A client that sends a confirmation anyway (guessing it) is refused by the server.
    with pytest.raises(LoginFailedError):
        s.on_client_confirm(m.ClientConfirm(bytes(32)))
    assert s.state is ServerState.FAILED and s.session_key is None


def test_unknown_user_looks_like_wrong_password():
    records = {"alice": register(), "bob": register("bob")}
    known, unknown = Wire(), Wire()
    _wrong_password_run(records, "alice", known)
    s = _wrong_password_run(records, "carol", unknown)  # same name length as "alice"
    assert [len(x) for x in known.sent] == [len(x) for x in unknown.sent]
    assert [x[:2] for x in known.sent] == [x[:2] for x in unknown.sent]  # same types and layout
    assert [type(m.decode(x)) for x in known.sent] == [type(m.decode(x)) for x in unknown.sent]
    # The decoy salt is stable per name and differs between names, like real salts.
    params = [m.decode(w.sent[1]) for w in (known, unknown)]
    again = Wire()
    _wrong_password_run(records, "carol", again)
    assert m.decode(again.sent[1]) == params[1]
    assert params[0].salt != params[1].salt  # type: ignore[union-attr]
    assert params[0].params == params[1].params  # type: ignore[union-attr]
    assert decoy_record("carol", SECRET, MINIMUM).salt != decoy_record("dave", SECRET, MINIMUM).salt
    with pytest.raises(LoginFailedError):
        s.on_client_confirm(m.ClientConfirm(bytes(32)))


def test_decoy_record_depends_on_server_secret():
    a = decoy_record("carol", SECRET, MINIMUM)
    b = decoy_record("carol", bytes(32), MINIMUM)
    assert a.salt != b.salt and a.l != b.l
    assert m.ServerStore.decode(a.encode()) == a


def _windows(data: bytes, size: int) -> set[bytes]:
    return {data[i:i + size] for i in range(len(data) - size + 1)}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=st.binary(min_size=8, max_size=40))
def test_no_message_carries_the_password_or_its_argon2_output(password: bytes):
    wire = Wire()
    record = register(password=password, wire=wire)
    c = client(password=password)
    s = login(c, {"alice": record}, wire)
    assert s.session_key == c.session_key
    _wrong_password_run({"alice": record}, "alice", wire)
    stretched = kdf.stretch(password, record.salt, record.params)
    secrets = kdf.password_secrets(stretched)
    # Any 8-byte piece of the password, of the Argon2id output or of the client-only scalar
    # w would be a leak (the password itself too, if shorter).
    needles = _windows(password, 8) | _windows(stretched, 8) | _windows(secrets.w, 8)
    for data in wire.sent:
        assert not any(n in data for n in needles)
    # What registration does send is the verifier only.
    assert {record.m, record.n, record.k, record.l} == {secrets.m, secrets.n, secrets.k, secrets.l}


@pytest.mark.parametrize(("tamper", "error"), [
    (0, WrongPasswordError),  # another username: a decoy record answers
    (1, WrongPasswordError),  # other Argon2 limits: another stretched key
    (2, RecoveryProtocolError),  # X no longer a point
    (3, WrongPasswordError),  # server confirmation
    (4, LoginFailedError),  # client confirmation
])
def test_tampered_messages_fail(tamper: int, error: type[Exception]):
    records = {"alice": register()}
    with pytest.raises(error):
        login(client(), records, tamper=tamper)


def test_substituted_points_fail():
    records = {"alice": register()}
    c, s = client(), ServerLogin(records["alice"])
    c.start()
    c.on_params(s.start())
    other = kdf.password_secrets(bytes(32)).l  # a valid point, not the client's
    with pytest.raises(WrongPasswordError):
        c.on_server_commit(s.on_client_commit(m.ClientCommit(other)))
    c, s = client(), ServerLogin(records["alice"])
    c.start()
    s.on_client_commit(c.on_params(s.start()))
    with pytest.raises(WrongPasswordError):
        c.on_server_commit(m.ServerCommit(other, bytes(32)))


def test_identity_and_small_order_points_are_refused():
    identity = b"\x01" + bytes(31)
    with pytest.raises(m.DecodeError):
        m.decode(m.encode(m.ClientCommit(identity)))
    s = ServerLogin(register())
    s.start()
    with pytest.raises(RecoveryProtocolError):
        s.on_client_commit(m.ClientCommit(identity))
    assert s.state is ServerState.FAILED


def test_client_commit_equal_to_m_is_refused():
    record = register()
    s = ServerLogin(record)
    s.start()
    with pytest.raises(RecoveryProtocolError):
        s.on_client_commit(m.ClientCommit(record.m))


def test_illegal_transitions_raise():
    record = register()
    c, s = client(), ServerLogin(record)
    with pytest.raises(IllegalTransitionError):
        c.on_params(m.LoginParams(record.salt, record.params))
    with pytest.raises(IllegalTransitionError):
        s.on_client_confirm(m.ClientConfirm(bytes(32)))
    c.start()
    with pytest.raises(IllegalTransitionError):
        c.start()
    params = s.start()
    with pytest.raises(IllegalTransitionError):
        c.on_server_commit(m.ServerCommit(record.n, bytes(32)))
    with pytest.raises(IllegalTransitionError):
        c.receive(m.LoginHello("alice"))
    commit = c.on_params(params)
    s.on_client_commit(commit)
    with pytest.raises(IllegalTransitionError):
        s.on_client_commit(commit)
    with pytest.raises(IllegalTransitionError):
        s.receive(m.LoginHello("x"))


def test_failed_machines_stay_failed():
    s = _wrong_password_run({"alice": register()}, "alice", Wire())
    with pytest.raises(LoginFailedError):
        s.on_client_confirm(m.ClientConfirm(bytes(32)))
    with pytest.raises(IllegalTransitionError):
        s.on_client_confirm(m.ClientConfirm(bytes(32)))
    assert s.state is ServerState.FAILED


def test_receive_dispatches_by_type():
    record = register()
    c, s = client(), ServerLogin(record)
    c.start()
    confirm = c.receive(s.receive(c.receive(s.start())))  # type: ignore[arg-type]
    assert s.receive(confirm) == c.session_key


def test_client_refuses_weak_or_huge_parameters():
    record = register()
    c = ClientLogin("alice", PASSWORD)  # default floor: INTERACTIVE
    c.start()
    with pytest.raises(WeakParametersError):
        c.on_params(m.LoginParams(record.salt, MINIMUM))
    assert c.state is ClientState.FAILED
    c = ClientLogin("alice", PASSWORD, min_params=MINIMUM, max_params=Argon2Params(4, 1 << 20))
    c.start()
    with pytest.raises(WeakParametersError):
        c.on_params(m.LoginParams(record.salt, Argon2Params(4, 1 << 30)))


def test_server_refuses_weak_registration():
    msg = ClientRegistration("alice", PASSWORD, MINIMUM).message()
    with pytest.raises(WeakParametersError):
        accept_registration(msg)
    assert accept_registration(msg, min_params=MINIMUM) == msg.record


def test_bad_usernames_are_refused():
    for bad in ("", "a\nb", "x" * 256, "cafe\u0301"):
        with pytest.raises(ValueError):
            ClientLogin(bad, PASSWORD)
    data = msgpack.packb([2, 1, "a\x00b"], use_bin_type=True)
    with pytest.raises(m.DecodeError):
        m.decode(data)


key32 = st.binary(min_size=32, max_size=32)
points = st.sampled_from([kdf.password_secrets(bytes([i]) * 32).m for i in range(4)])
# Valid usernames are NFC text: letters such as U+F900 (a CJK compatibility ideograph) are not
# NFC, so the strategy normalizes what it draws (and keeps what still fits).
usernames = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20).map(
    lambda s: unicodedata.normalize("NFC", s)).filter(lambda s: _valid_username(s))


def _valid_username(s: str) -> bool:
    try:
        m.check_username(s)
        return True
    except ValueError:
        return False


def test_username_strategy_yields_only_valid_names():
    assert m.decode(m.encode(m.LoginHello(unicodedata.normalize("NFC", "\uf900")))) == m.LoginHello("\u8c48")
    with pytest.raises(ValueError):
        m.check_username("\uf900")  # what failed the property test: not NFC
params = st.builds(Argon2Params, st.integers(1, 10), st.integers(8192, 1 << 28))
stores = st.builds(ServerStore, usernames, st.binary(min_size=16, max_size=16), params, points, points, key32, points)
messages = st.one_of(
    st.builds(m.Register, stores),
    st.builds(m.LoginHello, usernames),
    st.builds(m.LoginParams, st.binary(min_size=16, max_size=16), params),
    st.builds(m.ClientCommit, points),
    st.builds(m.ServerCommit, points, key32),
    st.builds(m.ClientConfirm, key32),
)


@given(messages)
def test_messages_round_trip(msg: m.Message):
    assert m.decode(m.encode(msg)) == msg


@given(st.binary(max_size=200))
def test_decoder_never_crashes(data: bytes):
    try:
        m.decode(data)
    except m.DecodeError:
        pass


@given(messages, st.data())
def test_decoder_rejects_changed_lengths(msg: m.Message, data: st.DataObject):
    encoded = m.encode(msg)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(m.DecodeError):
        m.decode(encoded[:cut])
    with pytest.raises(m.DecodeError):
        m.decode(encoded + b"\x00")


def test_decoder_rejects_wrong_shapes():
    for obj in ([9, b"x"], [4, bytes(31)], [4, bytes(33)], [6, bytes(32), bytes(32)], [2, 2, "a"],
                [3, bytes(16), 0, 8192], [3, bytes(16), True, 8192], {"a": 1}, [5, bytes(32), bytes(32)]):
        with pytest.raises(m.DecodeError):
            m.decode(msgpack.packb(obj, use_bin_type=True))
    # Non-canonical: a fixint written as a uint64.
    good = m.encode(m.LoginHello("alice"))
    with pytest.raises(m.DecodeError):
        m.decode(b"\x93\xcf" + (2).to_bytes(8, "big") + good[2:])


# --- keyring ---------------------------------------------------------------------------------

KEYRING = Keyring(bytes(range(32)), {"family": GroupSecret("address", bytes(32)),
                                     "work backup": GroupSecret("replication_key", b"\x07" * 32)})


def test_keyring_round_trip_and_wrong_password():
    blob = seal_keyring(KEYRING, PASSWORD, MINIMUM, username="alice")
    assert open_keyring(blob, PASSWORD, username="alice") == KEYRING
    with pytest.raises(KeyringDecryptError):
        open_keyring(blob, "wrong", username="alice")
    with pytest.raises(KeyringDecryptError):
        open_keyring(blob, PASSWORD, username="bob")  # bound to its account
    assert PASSWORD.encode() not in blob and KEYRING.identity_seed not in blob
    assert seal_keyring(KEYRING, PASSWORD, MINIMUM) != seal_keyring(KEYRING, PASSWORD, MINIMUM)


def test_keyring_tampering_and_limits():
    blob = seal_keyring(KEYRING, PASSWORD, MINIMUM)
    for i in range(0, len(blob), 7):
        bad = blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1:]
        with pytest.raises((KeyringDecryptError, WeakParametersError)):
            open_keyring(bad, PASSWORD)
    big = seal_keyring(KEYRING, PASSWORD, Argon2Params(1, 1 << 16))
    with pytest.raises(WeakParametersError):
        open_keyring(big, PASSWORD, max_params=MINIMUM)


def test_keyring_uses_its_own_salt():
    record = register()
    blob = seal_keyring(KEYRING, PASSWORD, MINIMUM)
    assert record.salt not in blob


def test_keyring_travels_wrapped_in_the_session_key():
    records = {"alice": register()}
    c = client()
    s = login(c, records)
    blob = seal_keyring(KEYRING, PASSWORD, MINIMUM, username="alice")
    wrapped = wrap_for_session(s.session_key, blob)  # type: ignore[arg-type]
    assert blob not in wrapped
    assert open_keyring(unwrap_from_session(c.session_key, wrapped), PASSWORD, username="alice") == KEYRING  # type: ignore[arg-type]
    with pytest.raises(KeyringDecryptError):
        unwrap_from_session(bytes(32), wrapped)


@given(st.dictionaries(st.text(min_size=1, max_size=20),
                       st.builds(GroupSecret, st.sampled_from(["address", "replication_key"]), key32), max_size=5),
       key32)
def test_keyring_encoding_round_trips(groups: dict[str, GroupSecret], seed: bytes):
    k = Keyring(seed, groups)
    assert Keyring.decode(k.encode()) == k


def test_keyring_rejects_bad_entries():
    with pytest.raises(ValueError):
        GroupSecret("password", bytes(32))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Keyring(bytes(31))
    with pytest.raises(KeyringDecryptError):
        Keyring.decode(msgpack.packb({"identity_seed": bytes(32), "groups": {"g": ["address", b"x"]}}))


# --- rate limiter ----------------------------------------------------------------------------
