"""Signed peer records: what a peer announces under a topic in the DHT.

Theory of operation
-------------------
A *topic* is a group's 32-byte discovery key. Its place in the DHT (the 160-bit Kademlia key)
is ``blake3(topic)`` truncated to 20 bytes (:func:`dht_key`), so a DHT node never learns the
topic from the key alone (though records carry it, for verification).

A :class:`PeerRecord` says "peer ``peer_id`` can be reached at ``addresses`` for ``topic`` until
``expires``". The peer signs, with its Ed25519 device key, a domain-separated msgpack encoding
of the four fields (:data:`SIGNING_DOMAIN` prefix), so a record cannot be replayed as any other
signed object, and no field can be changed without the signature failing.

On the wire a record is one msgpack array ``[peer_id, topic, addresses, expires, signature]``
(:meth:`PeerRecord.encode` / :meth:`PeerRecord.decode`), at most :data:`MAX_RECORD_BYTES`.

Invariants checked by :meth:`PeerRecord.verify` (every node checks them on store, on lookup
replies and before handing records to callers):

1. types and lengths: 32-byte peer id and topic, 64-byte signature, integer expiry, 1 to
   :data:`MAX_ADDRESSES` address strings; encoded size at most :data:`MAX_RECORD_BYTES`;
2. the signature verifies under ``peer_id`` (before anything else is parsed);
3. not expired (``expires > now``) and not absurdly far in the future (:data:`MAX_TTL`);
4. each address parseable by :func:`networker.address.parse`, and every ``~noise:`` key in them
   equal to ``peer_id`` (a peer cannot point at another key).

Every failure is an :class:`InvalidRecordError` (the only error :meth:`PeerRecord.decode` and
:meth:`PeerRecord.verify` raise). Which of a valid record's addresses may be *dialled* is a
separate, local decision: :mod:`.policy`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import blake3
import msgpack
import nacl.exceptions
import nacl.signing

from ..address import parse
from ..errors import AddressError, InvalidRecordError, RecordExpiredError
from ..identity import DeviceIdentity

SIGNING_DOMAIN = b"cobox/dht/peer-record/v1\x00"
DHT_KEY_BYTES = 20
KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_RECORD_BYTES = 1024
MAX_ADDRESSES = 8
MAX_TTL = 24 * 3600


def dht_key(topic: bytes) -> bytes:
    """The 160-bit Kademlia key under which a topic's records live."""
    return blake3.blake3(topic).digest(length=DHT_KEY_BYTES)


@dataclass(frozen=True, slots=True)
class PeerRecord:
    peer_id: bytes
    topic: bytes
    addresses: tuple[str, ...]
    expires: int
    signature: bytes

    @classmethod
    def create(
        cls,
        identity: DeviceIdentity,
        topic: bytes,
        addresses: tuple[str, ...] | list[str],
        ttl: int,
        now: float | None = None,
    ) -> PeerRecord:
        """Sign a record for ``identity`` valid for ``ttl`` seconds from ``now``."""
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"a record ttl is 1..{MAX_TTL} seconds")
        expires = int(time.time() if now is None else now) + int(ttl)
        addrs = tuple(addresses)
        payload = _signing_payload(identity.peer_id, topic, addrs, expires)
        record = cls(identity.peer_id, topic, addrs, expires, identity.sign(payload))
        record.verify(expires - ttl)
        return record

    @property
    def key(self) -> bytes:
        return dht_key(self.topic)

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [self.peer_id, self.topic, list(self.addresses), self.expires, self.signature],
            use_bin_type=True,
        )
        return packed

    @classmethod
    def decode(cls, data: bytes) -> PeerRecord:
        """Parse a record (shape only; call :meth:`verify` before trusting it)."""
        if not isinstance(data, bytes) or len(data) > MAX_RECORD_BYTES:
            raise InvalidRecordError(f"a record is bytes of at most {MAX_RECORD_BYTES}")
        try:
            fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception:
            raise InvalidRecordError("a record is not valid msgpack") from None
        if not isinstance(fields, list) or len(fields) != 5:
            raise InvalidRecordError("a record is a 5-element array")
        peer_id, topic, addresses, expires, signature = fields
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise InvalidRecordError("record addresses are a list of strings")
        record = cls(peer_id, topic, tuple(addresses), expires, signature)
        record._check_shape()
        return record

    def _check_shape(self) -> None:
        if not (isinstance(self.peer_id, bytes) and len(self.peer_id) == KEY_BYTES):
            raise InvalidRecordError("a record's peer id is 32 bytes")
        if not (isinstance(self.topic, bytes) and len(self.topic) == KEY_BYTES):
            raise InvalidRecordError("a record's topic is 32 bytes")
        if not (isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_BYTES):
            raise InvalidRecordError("a record's signature is 64 bytes")
        if type(self.expires) is not int or self.expires < 0:
            raise InvalidRecordError("a record's expiry is a non-negative integer")
        if not (isinstance(self.addresses, tuple) and 1 <= len(self.addresses) <= MAX_ADDRESSES):
            raise InvalidRecordError(f"a record has 1..{MAX_ADDRESSES} addresses")
        if not all(type(a) is str for a in self.addresses):
            raise InvalidRecordError("record addresses are strings")

    def verify(self, now: float | None = None) -> None:
        """Raise :class:`InvalidRecordError` (or :class:`RecordExpiredError`) unless this record
        is well formed, small enough, signed by ``peer_id`` and unexpired.

        The order matters: only the shape (types and lengths) is looked at before the signature;
        the addresses are parsed only once the signature shows that ``peer_id`` wrote them, so
        a forged record costs one signature check and nothing else."""
        self._check_shape()
        try:
            payload = _signing_payload(self.peer_id, self.topic, self.addresses, self.expires)
            encoded = self.encode()
        except (ValueError, TypeError, OverflowError):
            raise InvalidRecordError("the record cannot be encoded") from None
        if len(encoded) > MAX_RECORD_BYTES:
            raise InvalidRecordError(f"the record is larger than {MAX_RECORD_BYTES} bytes")
        try:
            nacl.signing.VerifyKey(self.peer_id).verify(payload, self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
            raise InvalidRecordError("the record's signature does not verify") from None
        now = time.time() if now is None else now
        if self.expires <= now:
            raise RecordExpiredError("the record has expired")
        if self.expires > now + MAX_TTL + 60:
            raise InvalidRecordError("the record expires too far in the future")
        for text in self.addresses:
            try:
                multi = parse(text)
            except AddressError as e:
                raise InvalidRecordError(f"bad address in record: {e}") from None
            for alt in multi.alternatives:
                if alt.peer_key is not None and alt.peer_key != self.peer_id:
                    raise InvalidRecordError("an address names another peer's key")

    def is_valid(self, now: float | None = None) -> bool:
        try:
            self.verify(now)
        except InvalidRecordError:
            return False
        return True


def _signing_payload(peer_id: bytes, topic: bytes, addresses: tuple[str, ...], expires: int) -> bytes:
    packed: bytes = msgpack.packb([peer_id, topic, list(addresses), expires], use_bin_type=True)
    return SIGNING_DOMAIN + packed


def decode_valid(data: object, now: float) -> PeerRecord | None:
    """Decode and verify a record from the wire; ``None`` if it is anything but valid."""
    if not isinstance(data, bytes):
        return None
    try:
        record = PeerRecord.decode(data)
        record.verify(now)
    except InvalidRecordError:
        return None
    return record


def newest_per_peer(records: list[PeerRecord]) -> list[PeerRecord]:
    """Keep one record per (topic, peer): the one that expires last."""
    best: dict[tuple[bytes, bytes], PeerRecord] = {}
    for r in records:
        k = (r.topic, r.peer_id)
        if k not in best or r.expires > best[k].expires:
            best[k] = r
    return sorted(best.values(), key=lambda r: r.peer_id)
