"""Invite hints (issue 14 item 7): where the inviter can be reached and DHT nodes to start from,
carried in the URI and parsed strictly."""

from __future__ import annotations

import os
import urllib.parse

import pytest

from cobox.errors import InvalidURIError
from cobox.uri import MAX_HINTS, MAX_URI, RELAYED_ROOM, Invite, parse_invite
from networker.encoding import encode_key

# Fixed keys: they show in the parameter ids, which must be the same in every pytest-xdist worker.
KEY = bytes(range(32))
PEER = encode_key(bytes(range(32, 64)))
ADDR = f"tcp:198.18.0.1:47100~noise:{PEER}"
ADDR6 = f"tcp:[2001:db8::1]:47100~noise:{PEER}"


def uri(**query: object) -> str:
    return f"cobox://join/{encode_key(KEY)}?" + urllib.parse.urlencode(query, doseq=True)


def test_hints_round_trip():
    invite = Invite("join", KEY, "photos").with_hints([ADDR, ADDR6], [("198.18.0.1", 47100), ("2001:db8::2", 7)])
    back = parse_invite(invite.format())
    assert back == invite
    assert back.peers == (ADDR, ADDR6) and back.dht == (("198.18.0.1", 47100), ("2001:db8::2", 7))
    assert "peers=2" in repr(back) and encode_key(KEY) not in repr(back)


def test_relayed_addresses_keep_their_room_among_the_peer_hints():
    relay = encode_key(os.urandom(32))
    relayed = [f"tcp:198.18.0.{i}:47200~noise:{relay}~relay:{PEER}" for i in range(1, 4)]
    direct = [f"tcp:198.18.1.{i}:47100~noise:{PEER}" for i in range(1, 9)]
    invite = Invite("join", KEY).with_hints(direct + relayed, [])
    assert invite.peers == (*direct[:MAX_HINTS - RELAYED_ROOM], *relayed[:RELAYED_ROOM])
    assert parse_invite(invite.format()) == invite
    assert Invite("join", KEY).with_hints(relayed[:1], []).peers == tuple(relayed[:1])


def test_an_invite_without_hints_still_parses():
    assert parse_invite(f"cobox://seed/{encode_key(KEY)}") == Invite("seed", KEY)


def test_with_hints_keeps_the_uri_bounded_and_drops_unusable_hints():
    many = [f"tcp:198.18.0.{i}:47100~noise:{PEER}" for i in range(20)]
    invite = Invite("join", KEY, "x" * 64).with_hints(["unix:/tmp/s", "tcp:198.18.0.1:1", *many],
                                                      [("example.org", 1), ("198.18.0.1", 0)] + [("198.18.0.9", 1)] * 9)
    assert len(invite.format()) <= MAX_URI
    assert invite.peers == tuple(many[:MAX_HINTS])  # the unusable ones take no place
    assert invite.dht == (("198.18.0.9", 1),)


@pytest.mark.parametrize(("text", "says"), [
    (uri(name="a", bogus="1"), "unknown parameter"),
    (uri(name=["a", "b"]), "twice"),
    (uri(peer="tcp:198.18.0.1:47100"), "peer hint"),  # no key: anybody could answer
    (uri(peer=f"unix:/run/x~noise:{PEER}"), "peer hint"),
    (uri(peer=f"tcp:example.org:1~noise:{PEER}"), "peer hint"),
    (uri(peer=f"{ADDR};{ADDR}"), "peer hint"),
    (uri(peer=f"tcp:example.org:1~noise:{PEER}~relay:{PEER}"), "peer hint"),
    (uri(peer="x" * 300), "peer hint"),
    (uri(dht="198.18.0.1"), "DHT hint"),
    (uri(dht="198.18.0.1:0"), "DHT hint"),
    (uri(dht="198.18.0.1:123456"), "DHT hint"),
    (uri(dht="example.org:47100"), "DHT hint"),
    (uri(dht="2001:db8::1:47100"), "DHT hint"),
    (uri(dht=["198.18.0.1:1"] * (MAX_HINTS + 1)), "malformed query|more than"),
    (uri(peer=[ADDR] * (MAX_HINTS + 1)), "malformed query|more than"),
    (uri(name="a") + "#rest", "fragment"),
    (uri(name="a") + "&&&", "malformed query"),
    (uri(name="a") + "&x" * 2000, "too long"),
])
def test_broken_uris_get_a_clear_error(text, says):
    with pytest.raises(InvalidURIError, match=says):
        parse_invite(text)
