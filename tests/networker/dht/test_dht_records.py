from __future__ import annotations

import dataclasses
import os

import msgpack
import pytest

from networker.dht import records
from networker.dht.records import MAX_RECORD_BYTES, PeerRecord, decode_valid, dht_key, newest_per_peer
from networker.encoding import encode_key
from networker.errors import InvalidRecordError, RecordExpiredError
from networker.identity import DeviceIdentity

NOW = 1_700_000_000
TOPIC = bytes(range(32))


def signed(
    identity: DeviceIdentity, addresses: tuple[str, ...], expires: int, topic: bytes = TOPIC
) -> PeerRecord:
    """A correctly signed record built by hand, bypassing create()'s checks."""
    payload = records._signing_payload(identity.peer_id, topic, addresses, expires)
    return PeerRecord(identity.peer_id, topic, addresses, expires, identity.sign(payload))


@pytest.fixture
def ident() -> DeviceIdentity:
    return DeviceIdentity.from_seed(b"\x01" * 32)


def test_create_encode_decode_verify(ident):
    addr = f"tcp:127.0.0.1:4000~noise:{encode_key(ident.peer_id)}"
    rec = PeerRecord.create(ident, TOPIC, [addr, "unix:/tmp/s"], ttl=60, now=NOW)
    assert rec.expires == NOW + 60
    blob = rec.encode()
    assert len(blob) < 300
    again = PeerRecord.decode(blob)
    assert again == rec
    again.verify(NOW)
    assert decode_valid(blob, NOW) == rec
    assert rec.key == dht_key(TOPIC) and len(rec.key) == 20


def test_wrong_signature_refused(ident):
    rec = PeerRecord.create(ident, TOPIC, ["tcp:127.0.0.1:1"], ttl=60, now=NOW)
    for bad in (
        dataclasses.replace(rec, signature=bytes(64)),
        dataclasses.replace(rec, addresses=("tcp:127.0.0.1:2",)),
        dataclasses.replace(rec, expires=rec.expires + 1),
        dataclasses.replace(rec, topic=os.urandom(32)),
        dataclasses.replace(rec, peer_id=DeviceIdentity.generate().peer_id),
    ):
        with pytest.raises(InvalidRecordError, match="signature"):
            bad.verify(NOW)
        assert decode_valid(bad.encode(), NOW) is None


def test_signature_is_domain_separated(ident):
    rec = PeerRecord.create(ident, TOPIC, ["tcp:127.0.0.1:1"], ttl=60, now=NOW)
    plain = msgpack.packb([rec.peer_id, rec.topic, list(rec.addresses), rec.expires])
    forged = dataclasses.replace(rec, signature=ident.sign(plain))
    assert not forged.is_valid(NOW)


def test_expired_refused(ident):
    rec = PeerRecord.create(ident, TOPIC, ["tcp:127.0.0.1:1"], ttl=60, now=NOW)
    rec.verify(NOW + 59)
    with pytest.raises(RecordExpiredError):
        rec.verify(NOW + 60)
    assert decode_valid(rec.encode(), NOW + 61) is None


def test_far_future_expiry_refused(ident):
    rec = signed(ident, ("tcp:127.0.0.1:1",), NOW + 10 * 24 * 3600)
    with pytest.raises(InvalidRecordError, match="future"):
        rec.verify(NOW)


def test_oversized_refused(ident):
    key = encode_key(ident.peer_id)
    addrs = tuple(f"unix:/{'x' * 120}/{i}~noise:{key}" for i in range(8))
    rec = signed(ident, addrs, NOW + 60)
    assert len(rec.encode()) > MAX_RECORD_BYTES
    with pytest.raises(InvalidRecordError, match="larger"):
        rec.verify(NOW)
    with pytest.raises(InvalidRecordError):
        PeerRecord.decode(rec.encode())


def test_too_many_or_no_addresses_refused(ident):
    nine = tuple(f"tcp:127.0.0.1:{i + 1}" for i in range(9))
    with pytest.raises(InvalidRecordError, match="addresses"):
        signed(ident, nine, NOW + 60).verify(NOW)
    with pytest.raises(InvalidRecordError, match="addresses"):
        signed(ident, (), NOW + 60).verify(NOW)


def test_unparseable_address_refused(ident):
    with pytest.raises(InvalidRecordError, match="bad address"):
        signed(ident, ("http://example.com",), NOW + 60).verify(NOW)


def test_foreign_noise_key_refused(ident):
    other = encode_key(DeviceIdentity.generate().peer_id)
    rec = signed(ident, (f"tcp:127.0.0.1:1~noise:{other}",), NOW + 60)
    with pytest.raises(InvalidRecordError, match="another peer"):
        rec.verify(NOW)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb([b"a", b"b", ["x"], 1, b"s"]),
     msgpack.packb([bytes(32), bytes(32), "notalist", 1, bytes(64)]),
     msgpack.packb([bytes(32), bytes(32), ["tcp:127.0.0.1:1"], -5, bytes(64)]),
     msgpack.packb([bytes(32), bytes(32), ["tcp:127.0.0.1:1"], 1.5, bytes(64)])],
)
def test_garbage_refused(blob):
    with pytest.raises(InvalidRecordError):
        PeerRecord.decode(blob)
    assert decode_valid(blob, NOW) is None
    assert decode_valid("not bytes", NOW) is None


def test_newest_per_peer(ident):
    other = DeviceIdentity.generate()
    old = PeerRecord.create(ident, TOPIC, ["tcp:127.0.0.1:1"], ttl=60, now=NOW)
    new = PeerRecord.create(ident, TOPIC, ["tcp:127.0.0.1:2"], ttl=60, now=NOW + 10)
    theirs = PeerRecord.create(other, TOPIC, ["tcp:127.0.0.1:3"], ttl=60, now=NOW)
    got = newest_per_peer([old, theirs, new, old])
    assert sorted(got, key=lambda r: r.peer_id) == sorted([new, theirs], key=lambda r: r.peer_id)
