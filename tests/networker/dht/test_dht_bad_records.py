"""Issue 12.8: a bad record (the ``"²"`` port first of all) is dropped alone, never fatal: not for
the record decoder, not for the lookup path, not for ``DHT.start``, ``announce`` or ``lookup``."""

from __future__ import annotations

import asyncio
import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kademlia.node import Node

from networker.dht import DHT, records
from networker.dht.protocol import DHTProtocol
from networker.dht.records import PeerRecord, decode_valid, dht_key
from networker.dht.storage import RecordStorage
from networker.encoding import encode_key
from networker.errors import InvalidRecordError
from networker.identity import DeviceIdentity
from tests.networker.dht.conftest import RPC_TIMEOUT, fake_node

NOW = 1_700_000_000
TOPIC = bytes(range(32))
IDENT = DeviceIdentity.from_seed(b"\x02" * 32)
KEY = encode_key(IDENT.peer_id)


def signed(addresses: tuple[str, ...], expires: int = NOW + 60, ident: DeviceIdentity = IDENT,
           topic: bytes = TOPIC) -> PeerRecord:
    payload = records._signing_payload(ident.peer_id, topic, addresses, expires)
    return PeerRecord(ident.peer_id, topic, addresses, expires, ident.sign(payload))


def test_superscript_two_port_record_is_refused_with_its_own_error():
    rec = signed(("tcp:1.2.3.4:²",))
    with pytest.raises(InvalidRecordError, match="bad port"):
        rec.verify(NOW)
    assert decode_valid(rec.encode(), NOW) is None
    assert not rec.is_valid(NOW)


def test_signature_is_checked_before_addresses_are_parsed(monkeypatch):
    def boom(text: str) -> object:
        raise AssertionError("an address was parsed before the signature was checked")

    monkeypatch.setattr(records, "parse", boom)
    forged = PeerRecord(IDENT.peer_id, TOPIC, ("tcp:1.2.3.4:²",), NOW + 60, bytes(64))
    with pytest.raises(InvalidRecordError, match="signature"):
        forged.verify(NOW)
    assert decode_valid(forged.encode(), NOW) is None


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), MSGPACK_VALUES.map(lambda v: msgpack.packb(v, use_bin_type=True))))
def test_record_decoder_raises_only_its_own_error(blob):
    try:
        PeerRecord.decode(blob).verify(NOW)
    except InvalidRecordError:
        pass
    assert decode_valid(blob, NOW) is None or isinstance(decode_valid(blob, NOW), PeerRecord)


ADDRESS_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(lambda h, p: f"tcp:{h}:{p}", st.text(max_size=15), st.text(max_size=6)),
    st.builds(lambda p: f"tcp:1.2.3.4:{p}~noise:{KEY}", st.text(alphabet="0123456789²٣\uff11+- ", max_size=6)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ADDRESS_TEXT, min_size=1, max_size=8), st.integers(NOW - 10, NOW + 10**6))
def test_signed_records_with_fuzzed_addresses_raise_only_their_own_error(addresses, expires):
    rec = signed(tuple(addresses), expires)
    try:
        rec.verify(NOW)
    except InvalidRecordError:
        return
    assert decode_valid(rec.encode(), NOW) == rec


def protocol() -> DHTProtocol:
    return DHTProtocol(Node(os.urandom(20)), RecordStorage(clock=lambda: NOW), 20, clock=lambda: NOW)


GOOD = signed((f"tcp:1.2.3.4:5~noise:{KEY}",), NOW + 600)
BAD = signed(("tcp:1.2.3.4:²",), NOW + 600)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(MSGPACK_VALUES, st.lists(st.one_of(MSGPACK_VALUES, st.just(BAD.encode()), st.just(GOOD.encode())),
                                max_size=5))
def test_lookup_reply_parser_takes_only_valid_records(reply, blobs):
    proto = protocol()
    proto._parse_lookup_reply(reply)  # whatever it returns, it never raises
    parsed = proto._parse_lookup_reply([blobs, [reply], os.urandom(20), os.urandom(16)])
    assert parsed is not None
    found, nodes, _, _ = parsed
    assert all(r == GOOD for r in found)
    assert found.count(GOOD) == blobs.count(GOOD.encode())


async def test_hostile_node_serving_bad_records_breaks_nothing():
    """A DHT node answers every lookup with the "²" record, garbage, bad contacts and one good
    record. DHT.start (which looks up its own id), announce and lookup all work; only the good
    record comes back."""
    good = PeerRecord.create(IDENT, TOPIC, [f"tcp:1.2.3.4:5~noise:{KEY}"], ttl=600)
    bad = signed(("tcp:1.2.3.4:²",), int(good.expires))
    junk_nodes = [[os.urandom(20), "not an ip", 1], [b"x", "1.2.3.4", 5], "junk", [os.urandom(20), "1.2.3.4", "²"],
                  *([os.urandom(20), ip, 5] for ip in ("0.0.0.0", "255.255.255.255", "224.0.0.1", "٣.2.3.4"))]

    def answer(name: str, args: list, addr: tuple[str, int]) -> object:
        if name == "lookup":
            return [[bad.encode(), b"\xc1", "text", good.encode(), 7], junk_nodes, os.urandom(20), os.urandom(16)]
        if name == "announce":
            return True
        return [{"x": 1}]

    hostile = await fake_node(answer)
    dht = DHT(DeviceIdentity.generate(), bootstrap=[hostile.address], rpc_timeout=RPC_TIMEOUT)
    try:
        async with asyncio.timeout(10):
            await dht.start()
            assert [c.port for c in dht.contacts()] == [hostile.address[1]]
            found = await dht.lookup(TOPIC)
            assert found == [good]
            assert await dht.announce(os.urandom(32), [f"tcp:1.2.3.4:9~noise:{encode_key(dht.identity.peer_id)}"]) >= 1
    finally:
        await dht.stop()
        hostile.close()
    assert dht_key(TOPIC) in [args[1] for name, args in hostile.requests if name == "lookup"]


def test_announcing_the_superscript_record_is_refused_quietly():
    """The "²" record sent as an announce (with a valid token): refused, nothing stored, no raise."""
    proto = protocol()
    sender = ("198.51.100.3", 4000)
    token = proto.make_token(sender, BAD.key)
    assert proto.rpc_announce(sender, os.urandom(20), BAD.encode(), token) is False
    assert proto.refused_announces == 1 and proto.storage.count() == 0
    assert proto.rpc_announce(sender, os.urandom(20), GOOD.encode(), proto.make_token(sender, GOOD.key)) is True
