"""Hole-punch decisions, messages and the service's refusals, without a network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from networker import holepunch
from networker.address import Address
from networker.holepunch import (
    PING,
    PREPARE,
    PREPARED,
    SERVICE,
    SYNC,
    HolePunchError,
    PunchMessage,
    Upgrader,
    allow,
    decode_message,
    encode_message,
    lan_candidates,
    retry_delay,
    sync_delay,
)
from networker.identity import DeviceIdentity
from networker.peer import ServiceError


def test_three_quick_tries_then_later():
    delays = [retry_delay(n, attempts=3, later=300.0) for n in range(1, 8)]
    assert delays == [1.0, 2.0, 300.0, 1.0, 2.0, 300.0, 1.0]
    assert retry_delay(0) == 0.0


def test_initiator_dials_half_a_round_trip_after_sync():
    assert sync_delay(0.1) == pytest.approx(0.05)
    assert sync_delay(-1.0) == 0.0
    assert sync_delay(60.0) == 2.0  # a huge RTT is capped: the peer's SYN retransmits cover the rest


@pytest.mark.parametrize("m", [PunchMessage(PREPARE, "198.18.0.101", 40000), PunchMessage(PREPARED, "2001:db8::1", 1),
                               PunchMessage(PREPARE, "198.18.0.101", 9, (("10.1.0.2", 47100), ("fd00::7", 47100))),
                               PunchMessage(PREPARED, "198.18.0.1", 9,
                                            tuple((f"192.168.0.{k}", k) for k in (1, 2, 3, 4))),
                               PunchMessage(PING), PunchMessage(SYNC)])
def test_messages_round_trip(m):
    assert decode_message(encode_message(m)) == m


def _addr(host: bytes, port: int = 1) -> bytes:
    return port.to_bytes(2, "big") + bytes([len(host)]) + host


@pytest.mark.parametrize("bad", [
    b"", bytes([PING, 0]), bytes([99]), bytes([PREPARE]), bytes([PREPARE, 0]),
    bytes([PREPARE, 1]) + _addr(b"01.2.3.4"), bytes([PREPARE, 1]) + _addr(b"1.2.3.4", 0),
    bytes([PREPARE, 1]) + _addr(b"not-an-ip"), bytes([PREPARE, 1]) + _addr(b"1" * 60),
    bytes([PREPARE, 1]) + _addr(b"1.2.3.4")[:-1], bytes([PREPARE, 1]) + _addr(b"1.2.3.4") + b"x",
    bytes([PREPARE, 2]) + _addr(b"1.2.3.4") + _addr(b"8.8.8.8"),  # a candidate must be private
    bytes([PREPARE, 2]) + _addr(b"1.2.3.4") + _addr(b"127.0.0.1"),
    bytes([PREPARE, 6]) + _addr(b"1.2.3.4") + _addr(b"10.0.0.1") * 5,  # too many
])
def test_bad_messages_are_refused(bad):
    with pytest.raises(HolePunchError):
        decode_message(bad)


def test_candidates_are_dialled_only_behind_one_nat():
    reply = PunchMessage(PREPARED, "198.18.0.1", 4000, (("10.1.0.3", 47100),))
    assert lan_candidates("198.18.0.1", reply) == (("10.1.0.3", 47100),)
    assert lan_candidates("198.18.0.2", reply) == ()  # another NAT: its private addresses are not ours to dial
    assert lan_candidates("10.0.0.1", PunchMessage(PREPARED, "10.0.0.1", 1, (("10.1.0.3", 1),))) == ()


async def test_only_private_listening_addresses_are_offered():
    node = FakeNode()
    up = Upgrader(node, host_candidates=lambda: [("127.0.0.1", 1), ("10.1.0.2", 47100), ("198.18.0.5", 47100),
                                                  ("fe80::1", 1), ("10.1.0.2", 47100), ("192.168.1.2", 0)])  # type: ignore[arg-type]
    assert up._candidates() == (("10.1.0.2", 47100),)
    await up.close()


@given(st.binary(max_size=64))
def test_decoder_raises_only_its_own_error(data):
    try:
        decode_message(data)
    except HolePunchError:
        pass


def test_a_peer_gets_at_most_three_punches_per_window():
    times: list[float] = []
    assert [allow(times, t, 3, 300.0) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert allow(times, 301.0, 3, 300.0)  # the first one left the window


class FakeConn:
    def __init__(self, relay_via: bytes, remote_address: str) -> None:
        self.relay_via = relay_via
        self.remote_address = remote_address
        self.is_initiator = True


class FakePeer:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn
        self.remote_peer_id = b"p" * 32


class FakeNode:
    def __init__(self) -> None:
        self.services: dict = {}
        self.on_event: list = []
        self.peers: dict = {}
        self.identity = DeviceIdentity.generate()


async def test_the_service_refuses_direct_connections_and_a_peer_asking_too_often():
    node = FakeNode()
    up = Upgrader(node, attempts=3, retry_later=300.0)  # type: ignore[arg-type]
    serve = node.services[SERVICE]
    prepare = encode_message(PunchMessage(PREPARE, "198.18.0.9", 4000))
    with pytest.raises(ServiceError, match="relayed connections"):
        await serve(FakePeer(FakeConn(b"", "tcp:198.18.0.9:4000")), prepare)
    relay = DeviceIdentity.generate().peer_id
    dead = Address("tcp", "127.0.0.1", 1, peer_key=node.identity.peer_id, relay_key=relay).format()
    peer = FakePeer(FakeConn(relay, dead))  # its relay is unreachable: observing fails
    for _ in range(3):
        with pytest.raises(ServiceError, match="cannot observe"):
            await serve(peer, prepare)
    with pytest.raises(ServiceError, match="at most 3 hole punches"):  # no fourth dial for this peer
        await serve(peer, prepare)
    with pytest.raises(ServiceError, match="SYNC without PREPARE"):
        await serve(peer, encode_message(PunchMessage(SYNC)))
    await up.close()


async def test_a_peer_cannot_make_us_punch_into_our_lan_or_this_host_and_fresh_ids_share_a_limit():
    """Through a relay anyone can reach us with a fresh peer id: a PREPARE naming a loopback,
    private or link-local address is refused before we open anything, and all peers together
    get a bounded number of punches."""
    node = FakeNode()
    up = Upgrader(node, attempts=3, retry_later=300.0)  # type: ignore[arg-type]
    serve = node.services[SERVICE]
    relay = DeviceIdentity.generate().peer_id
    dead = Address("tcp", "127.0.0.1", 1, peer_key=node.identity.peer_id, relay_key=relay).format()
    for host in ("127.0.0.1", "10.0.0.5", "192.168.1.1", "169.254.1.1", "::1", "fe80::1", "0.0.0.0"):
        with pytest.raises(ServiceError, match="public addresses only"):
            await serve(FakePeer(FakeConn(relay, dead)), encode_message(PunchMessage(PREPARE, host, 22)))
    refused = 0
    for k in range(40):  # 40 throwaway identities, 1 PREPARE each, at a test network's public address
        peer = FakePeer(FakeConn(relay, dead))
        peer.remote_peer_id = bytes([k]) * 32
        try:
            await serve(peer, encode_message(PunchMessage(PREPARE, "198.18.0.9", 4000)))
        except ServiceError as e:
            refused += "at most" in str(e)
    assert refused == 40 - 3 * holepunch.ALL_PEERS_FACTOR
    await up.close()


def test_remembered_peers_are_bounded():
    d = {k.to_bytes(2, "big"): k for k in range(holepunch.MAX_REMEMBERED + 50)}
    holepunch._bound(d)
    assert len(d) == holepunch.MAX_REMEMBERED and next(iter(d.values())) == 50  # the oldest went
