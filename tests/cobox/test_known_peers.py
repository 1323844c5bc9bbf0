"""Known peers (``cobox peers add``): kept, keyed, redialled with a backoff, forgotten; without sockets."""

from __future__ import annotations

import pytest

from cobox.errors import NotFoundError, UsageError
from cobox.knownpeers import BASE, CAP, SCOPE, KnownPeers, keyed
from networker import encode_key
from networker.identity import DeviceIdentity


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}

    async def records(self, scope: str) -> dict[str, bytes]:
        assert scope == SCOPE
        return dict(self.rows)

    async def put_record(self, scope: str, key: str, value: bytes) -> None:
        self.rows[key] = value

    async def delete_record(self, scope: str, key: str) -> None:
        self.rows.pop(key, None)


class Peer:
    closed = False

    def close(self) -> None:
        self.closed = True


class Node:
    def __init__(self) -> None:
        self.peers: dict[bytes, Peer] = {}


def ids(n: int) -> list[bytes]:
    return [DeviceIdentity.generate().peer_id for _ in range(n)]


async def test_kept_with_the_key_the_handshake_proved_and_loaded_again():
    store, (a,) = Store(), ids(1)
    known = KnownPeers(store, Node())
    await known.add("tcp:192.168.1.20:47100", a)
    assert store.rows == {a.hex(): f"tcp:192.168.1.20:47100~noise:{encode_key(a)}".encode()}
    store.rows["zz-not-hex"] = b"tcp:1.2.3.4:1"  # a corrupt record is skipped, not fatal
    store.rows[ids(1)[0].hex()] = b"garbage"
    again = KnownPeers(store, Node())
    await again.load()
    assert list(again.known) == [a]


def test_an_address_naming_another_key_is_refused():
    a, b = ids(2)
    with pytest.raises(UsageError, match="another key"):
        keyed(f"tcp:10.0.0.1:1~noise:{encode_key(b)}", a)


async def test_redialled_with_a_capped_backoff_until_connected():
    (a,) = ids(1)
    node = Node()
    known = KnownPeers(Store(), node)
    await known.add("tcp:10.0.0.1:47100", a)
    assert [k.peer_id for k in known.due(set(), 0.0)] == [a]
    k = known.known[a]
    waits = []
    for _ in range(12):
        known.failed(k, 100.0)
        waits.append(k.next_try - 100.0)
    assert waits[:3] == [BASE, 2 * BASE, 4 * BASE] and max(waits) == CAP
    assert known.due(set(), 100.0 + CAP - 1) == [] and known.due(set(), 100.0 + CAP) == [k]
    assert known.due({a}, 0.0) == [] and k.failures == 0  # connected (by any means): the backoff resets


async def test_forgotten_by_key_prefix_or_address_and_its_connection_closed():
    a, b = ids(2)
    node = Node()
    node.peers[a] = peer = Peer()
    known = KnownPeers(Store(), node)
    await known.add("tcp:10.0.0.1:47100", a)
    await known.add("tcp:10.0.0.2:47100", b)
    with pytest.raises(UsageError, match="names 2"):
        known.find("tcp:10.0.0.")
    with pytest.raises(NotFoundError):
        known.find("ffffffffffff")
    assert await known.remove(a.hex()[:8]) == a and peer.closed and list(known.known) == [b]
    assert await known.remove("tcp:10.0.0.2:47100") == b and known.known == {}
