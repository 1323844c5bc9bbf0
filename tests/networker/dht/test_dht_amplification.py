"""Issue 12.12: no amplification towards unverified sources, tokens bound to their key, and
malformed datagrams dropped quietly (sans-IO: the protocol object with a fake transport)."""

from __future__ import annotations

import logging
import os
from typing import Any

import umsgpack
from kademlia.node import Node

from networker.dht.protocol import DHTProtocol
from networker.dht.records import PeerRecord, dht_key
from networker.dht.storage import RecordStorage
from networker.dht.tokens import AMPLIFICATION, TokenIssuer
from networker.encoding import encode_key
from networker.identity import DeviceIdentity

NOW = 1_700_000_000
ATTACKER = ("198.51.100.7", 4444)
VICTIM = ("203.0.113.50", 53)


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def protocol_with_records(topic: bytes, n_records: int = 30, n_contacts: int = 30) -> DHTProtocol:
    p = DHTProtocol(Node(os.urandom(20)), RecordStorage(clock=lambda: NOW), 20, clock=lambda: NOW)
    p.transport = Transport()  # type: ignore[assignment]
    for i in range(n_contacts):
        p.router.add_contact(Node(os.urandom(20), f"192.0.{i}.1", 5000 + i))
    for i in range(n_records):
        ident = DeviceIdentity.generate()
        k = encode_key(ident.peer_id)
        addrs = [f"tcp:192.0.2.{i % 250}:{1000 + j}~noise:{k}" for j in range(4)]
        assert p.storage.add(dht_key(topic), PeerRecord.create(ident, topic, addrs, ttl=600, now=NOW), f"10.{i}.0.1")
    return p


def request(name: str, *args: Any) -> bytes:
    return b"\x00" + os.urandom(20) + umsgpack.packb([name, list(args)])


def ask(p: DHTProtocol, data: bytes, source: tuple[str, int]) -> tuple[bytes, Any]:
    transport: Transport = p.transport  # type: ignore[assignment]
    before = len(transport.sent)
    p.datagram_received(data, source)
    assert len(transport.sent) == before + 1, "no reply"
    reply, to = transport.sent[-1]
    assert to == source
    return reply, umsgpack.unpackb(reply[21:])


def test_lookup_from_a_spoofed_source_is_not_amplified():
    """The attack: a 74-byte lookup with the victim's address as source used to draw an 8 KiB
    reply. Now the victim gets a reply no bigger than AMPLIFICATION x the request."""
    topic = os.urandom(32)
    p = protocol_with_records(topic)
    data = request("lookup", os.urandom(20), dht_key(topic))
    assert len(data) < 80
    raw, reply = ask(p, data, VICTIM)
    assert len(raw) <= AMPLIFICATION * len(data)
    assert reply[:3] == [[], [], b""] and len(reply[3]) == 16
    # Whoever really is at the address echoes the cookie and gets the full answer.
    raw, full = ask(p, request("lookup", os.urandom(20), dht_key(topic), reply[3]), VICTIM)
    assert len(full[0]) > 10 and len(full[1]) > 10 and len(full[2]) == 20
    assert len(raw) > 20 * len(data)
    # The cookie is bound to the address: from elsewhere it proves nothing.
    raw, again = ask(p, request("lookup", os.urandom(20), dht_key(topic), reply[3]), ATTACKER)
    assert again[:3] == [[], [], b""] and len(raw) <= AMPLIFICATION * len(data)


def test_find_node_from_an_unverified_source_is_not_amplified():
    p = protocol_with_records(os.urandom(32), n_records=0)
    data = request("find_node", os.urandom(20), os.urandom(20))
    raw, nodes = ask(p, data, VICTIM)
    assert len(raw) <= AMPLIFICATION * len(data)
    cookie = p.tokens.cookie(VICTIM)
    raw, nodes = ask(p, request("find_node", os.urandom(20), os.urandom(20), cookie), VICTIM)
    assert len(nodes) == 30


def test_every_reply_to_an_unverified_source_is_small():
    topic = os.urandom(32)
    p = protocol_with_records(topic)
    for data in (request("ping", os.urandom(20)), request("find_node", os.urandom(20), dht_key(topic)),
                 request("lookup", os.urandom(20), dht_key(topic)),
                 request("announce", os.urandom(20), b"x", os.urandom(20))):
        raw, _ = ask(p, data, VICTIM)
        assert len(raw) <= AMPLIFICATION * len(data), data


def test_announce_tokens_are_bound_to_their_key_and_address():
    topic, other_topic = os.urandom(32), os.urandom(32)
    p = protocol_with_records(topic, n_records=0)
    ident = DeviceIdentity.generate()
    address = f"tcp:192.0.2.1:1~noise:{encode_key(ident.peer_id)}"
    rec = PeerRecord.create(ident, other_topic, [address], ttl=600, now=NOW)
    cookie = p.tokens.cookie(ATTACKER)
    _, reply = ask(p, request("lookup", os.urandom(20), dht_key(topic), cookie), ATTACKER)
    token_for_topic = reply[2]
    # A token for one key does not store a record under another.
    _, stored = ask(p, request("announce", os.urandom(20), rec.encode(), token_for_topic), ATTACKER)
    assert stored is False and p.storage.records(rec.key) == []
    _, reply = ask(p, request("lookup", os.urandom(20), rec.key, cookie), ATTACKER)
    # Nor does it work from another address.
    _, stored = ask(p, request("announce", os.urandom(20), rec.encode(), reply[2]), VICTIM)
    assert stored is False
    _, stored = ask(p, request("announce", os.urandom(20), rec.encode(), reply[2]), ATTACKER)
    assert stored is True and p.storage.records(rec.key) == [rec]


def test_cookies_and_tokens_rotate():
    now = [0.0]
    issuer = TokenIssuer(rotation=10, clock=lambda: now[0])
    cookie, token = issuer.cookie(VICTIM), issuer.token(VICTIM, b"k" * 20)
    now[0] = 11
    assert issuer.check_cookie(VICTIM, cookie) and issuer.check_token(VICTIM, b"k" * 20, token)
    now[0] = 22
    assert not issuer.check_cookie(VICTIM, cookie) and not issuer.check_token(VICTIM, b"k" * 20, token)
    assert not issuer.check_cookie(VICTIM, "text") and not issuer.check_token(VICTIM, b"k" * 20, None)


def test_malformed_datagrams_are_dropped_with_a_rate_limited_debug_line(caplog):
    p = protocol_with_records(os.urandom(32), n_records=0)
    transport: Transport = p.transport  # type: ignore[assignment]
    bad = [
        b"\x00" + os.urandom(20) + umsgpack.packb([["lookup"], []]),  # RPC name as a list
        b"\x00" + os.urandom(20) + umsgpack.packb([{"a": 1}, []]),  # ... as a dict
        b"\x00" + os.urandom(20) + umsgpack.packb([7, []]),
        b"\x00" + os.urandom(20) + b"\xc1\xc1\xc1",  # not msgpack
        b"\x00" + os.urandom(20) + umsgpack.packb(["lookup", {"x": 1}]),  # args not a list
        request("lookup", "not bytes", 5),  # wrong types
        request("lookup", os.urandom(20)),  # too few arguments
        request("ping", os.urandom(20), 1, 2, 3, 4),  # too many
        request("store", os.urandom(20), os.urandom(20), b"v"),  # not served
        b"\x07" + os.urandom(40),  # unknown datagram type
        b"\x00" * 5,
    ]
    with caplog.at_level(logging.DEBUG, logger="networker.dht.protocol"):
        for _ in range(20):
            for data in bad:
                p.datagram_received(data, ATTACKER)
    assert transport.sent == []
    assert p.dropped_datagrams == 20 * len(bad)
    lines = [r for r in caplog.records if r.name == "networker.dht.protocol"]
    assert 0 < len(lines) <= 5
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in lines)
    _, pong = ask(p, request("ping", os.urandom(20)), ATTACKER)  # still serving
    assert pong == p.source_node.id
