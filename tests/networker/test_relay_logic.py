"""Relay logic without sockets: the address form, control messages, reservations, circuits,
byte buckets, connection kinds."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from networker.address import Address, parse
from networker.encoding import encode_key
from networker.errors import AddressError
from networker.relay import connection_kind, is_behind_nat_ip
from networker.relay.state import ByteBucket, RelayLimits, RelayState
from networker.relay.wire import (
    ACCEPT,
    CONNECT,
    INCOMING,
    NO_RESERVATION,
    PING,
    REFUSED,
    RELAY_FULL,
    RESERVED,
    Message,
    RelayProtocolError,
    decode,
    encode,
)

R, P = bytes(range(32)), bytes(range(32, 64))  # fixed: they show in parameter ids (the same in every xdist worker)


def test_relayed_address_round_trips_and_names_the_end_to_end_key():
    text = f"tcp:198.18.0.1:4000~noise:{encode_key(R)}~relay:{encode_key(P)}"
    (a,) = parse(text).alternatives
    assert a.relayed and a.peer_key == P and a.relay_key == R
    assert a.relay_hop() == Address("tcp", "198.18.0.1", 4000, peer_key=R)
    assert a.format() == text
    assert parse(f"tcp:10.0.0.1:1~noise:{encode_key(P)};{text}").alternatives[1] == a


@pytest.mark.parametrize("text", [
    f"tcp:1.2.3.4:5~relay:{encode_key(P)}",  # no relay key
    f"tcp:1.2.3.4:5~noise:{encode_key(R)}~relay:{encode_key(P)}~relay:{encode_key(P)}",
    f"tcp:1.2.3.4:5~noise:{encode_key(R)}~relay:{encode_key(P)}~noise:{encode_key(R)}",
    f"unix:/tmp/s~noise:{encode_key(R)}~relay:{encode_key(P)}",
    f"tcp:1.2.3.4:5~noise:{encode_key(R)}~relay:{encode_key(R)}",  # to itself
    f"tcp:1.2.3.4:5~noise:{encode_key(R)}~relay:notakey",
])
def test_bad_relayed_addresses_are_refused(text):
    with pytest.raises(AddressError):
        parse(text)


@pytest.mark.parametrize("m", [
    Message(PING), Message(RESERVED, ttl=60), Message(REFUSED, code=RELAY_FULL, reason="full ü"),
    Message(CONNECT, key=P), Message(INCOMING, circuit=os.urandom(16), key=P), Message(ACCEPT, circuit=b"c" * 16)])
def test_control_messages_round_trip(m):
    assert decode(encode(m)) == m


@given(st.binary(max_size=300))
def test_decoder_raises_only_its_own_error(data):
    try:
        decode(data)
    except RelayProtocolError:
        pass


def test_decoder_is_strict_about_lengths_and_types():
    for bad in (b"", bytes([CONNECT]) + b"x" * 31, bytes([PING, 0]), bytes([99]), bytes([REFUSED]),
                bytes([REFUSED, 1, 0xff]), bytes([RESERVED]) + b"\0" * 300):
        with pytest.raises(RelayProtocolError):
            decode(bad)


def test_reservations_replace_and_are_bounded():
    s: RelayState[str] = RelayState(RelayLimits(max_reservations=2))
    assert s.reserve(b"a", "c1") == (None, None)
    assert s.reserve(b"a", "c2") == ("c1", None)  # the newer replaces the older (to be closed)
    s.unreserve(b"a", "c1")  # the old one ending does not drop the new one
    assert s.reservations == {b"a": "c2"}
    assert s.reserve(b"b", "c3")[1] is None
    old, refusal = s.reserve(b"c", "c4")
    assert old is None and refusal is not None and refusal.code == RELAY_FULL


def test_circuits_need_a_reservation_and_only_the_target_accepts_once():
    s: RelayState[str] = RelayState(RelayLimits(accept_timeout=5))
    c, refusal = s.open_circuit(b"d", b"t", 0.0)
    assert c is None and refusal is not None and refusal.code == NO_RESERVATION
    s.reserve(b"t", "ctl")
    c, refusal = s.open_circuit(b"d", b"t", 0.0)
    assert c is not None and refusal is None
    assert s.accept(c.id, b"someone else", "x", 1.0) is None
    assert s.accept(os.urandom(16), b"t", "x", 1.0) is None
    assert s.accept(c.id, b"t", "conn", 1.0) is c and c.accepted == "conn"
    assert s.accept(c.id, b"t", "again", 1.0) is None
    s.spliced(c)
    assert s.circuits_total == 1
    s.close_circuit(c)
    assert not s.circuits


def test_circuits_expire_and_are_bounded_in_total_and_while_being_set_up():
    s: RelayState[str] = RelayState(RelayLimits(max_circuits=3, max_pending=2, accept_timeout=5))
    s.reserve(b"t", "ctl")
    c1, _ = s.open_circuit(b"d1", b"t", 0.0)
    c2, _ = s.open_circuit(b"d2", b"t", 0.0)
    _, refusal = s.open_circuit(b"d3", b"t", 0.0)
    assert refusal is not None and "being set up" in refusal.reason
    assert c1 is not None and c2 is not None
    s.accept(c1.id, b"t", "c", 1.0)
    s.spliced(c1)
    c3, _ = s.open_circuit(b"d3", b"t", 1.0)
    assert c3 is not None
    _, refusal = s.open_circuit(b"d4", b"t", 1.0)
    assert refusal is not None and "3 circuits" in refusal.reason
    assert s.expire(5.5) == [c2]
    assert s.expire(6.0) == [c3]
    assert list(s.circuits) == [c1.id]  # the spliced one stays
    assert s.accept(c2.id, b"t", "late", 7.0) is None


def test_byte_bucket_bounds_the_rate_and_zero_is_unlimited():
    b = ByteBucket(100_000, 0.0)
    assert b.take(100_000, 0.0) == 0.0  # one second's burst
    assert b.take(50_000, 0.0) == pytest.approx(0.5)
    assert b.take(50_000, 0.5) == pytest.approx(0.5)  # refilled 50k, owed 50k more
    free = ByteBucket(0, 0.0)
    assert all(free.take(10 ** 9, 0.0) == 0.0 for _ in range(3))


def test_nat_ranges_and_connection_kinds():
    assert all(is_behind_nat_ip(h) for h in ("10.1.2.3", "192.168.1.1", "172.16.0.1", "100.64.0.1", "127.0.0.1",
                                              "fd00::1", "fe80::1", None))
    assert not any(is_behind_nat_ip(h) for h in ("198.18.0.1", "8.8.8.8", "2001:db8::1"))

    class Conn:
        remote_host: str | None = "198.18.0.5"

    c = Conn()
    assert connection_kind(c) == "direct internet"
    c.remote_host = "192.168.0.2"
    assert connection_kind(c) == "direct LAN"
    c.punched = True  # type: ignore[attr-defined]
    assert connection_kind(c) == "hole-punched"
    c.relay_via = R  # type: ignore[attr-defined]
    assert connection_kind(c) == f"relayed via {encode_key(R)[:12]}"


def test_exempt_circuits_pass_the_limits_and_do_not_count():
    s: RelayState[str] = RelayState(RelayLimits(max_circuits=1, max_pending=1))
    s.reserve(b"t", "ctl")
    c1, _ = s.open_circuit(b"d1", b"t", 0.0)
    assert c1 is not None
    _, refusal = s.open_circuit(b"d2", b"t", 0.0)
    assert refusal is not None  # full for everyone else...
    member, refusal = s.open_circuit(b"m", b"t", 0.0, exempt=True)
    assert member is not None and refusal is None and member.exempt  # ...but a member's circuit goes through
    s.close_circuit(c1)
    c2, refusal = s.open_circuit(b"d2", b"t", 0.0)
    assert c2 is not None  # the exempt circuit does not use up the limit
    _, refusal = s.open_circuit(b"m2", b"t", 0.0, exempt=True)
    assert refusal is not None and "being set up" in refusal.reason  # but members' pending ones are bounded
