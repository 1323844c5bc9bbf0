"""Custody receipts: a backup peer's signed statement of how much of a feed it holds.

A receipt says "I, ``signer``, hold the first ``length`` entries of ``feed`` in the group with
``discovery_key``, whose Merkle tree hashes to ``root_hash``, as of ``time``", signed with the
backup peer's device key. The root hash pins the exact data: a member compares it with its own
tree at that length, so a receipt for data the backup does not really hold (or holds altered)
does not verify. ``quota_full`` tells members the backup peer stopped taking new data for the
group. Members keep the latest receipt per (backup peer, feed).

On the wire a receipt is the body of a networker ``Extension`` named ``EXTENSION`` on the
group's channel (``to_body`` / ``from_body``, strict): the network layer carries it unread.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

import msgpack
import nacl.exceptions
import nacl.signing

from ..errors import CoboxError

CONTEXT = b"cobox custody receipt v1\x00"
EXTENSION = "cobox/receipt"  # the networker Extension name receipts travel under
_U64 = struct.Struct(">Q")


class BadReceiptError(CoboxError):
    """A custody receipt does not verify (bad signature, or it names data that differs from
    ours)."""

    code = "bad_receipt"


@dataclass(frozen=True)
class Receipt:
    discovery_key: bytes
    feed: bytes
    length: int
    root_hash: bytes
    time_ms: int
    signer: bytes
    signature: bytes
    quota_full: bool = False

    def signable(self) -> bytes:
        return (CONTEXT + self.discovery_key + self.feed + _U64.pack(self.length) + self.root_hash
                + _U64.pack(self.time_ms) + (b"\x01" if self.quota_full else b"\x00"))

    @classmethod
    def make(cls, sign: object, signer: bytes, discovery_key: bytes, feed: bytes, length: int,
             root_hash: bytes, time_ms: int, quota_full: bool = False) -> Receipt:
        unsigned = cls(discovery_key, feed, length, root_hash, time_ms, signer, b"", quota_full)
        return cls(discovery_key, feed, length, root_hash, time_ms, signer,
                   sign(unsigned.signable()), quota_full)  # type: ignore[operator]

    def to_body(self) -> bytes:
        """The receipt as the body of an ``EXTENSION`` message (the group is the channel's, so
        it is not sent)."""
        return msgpack.packb([self.feed, self.length, self.root_hash, self.time_ms, self.signer,
                              self.signature, self.quota_full], use_bin_type=True)

    @classmethod
    def from_body(cls, discovery_key: bytes, body: bytes) -> Receipt:
        """Strictly decode an ``EXTENSION`` body; raise :class:`BadReceiptError` on anything
        malformed (it comes from another device)."""
        try:
            f = msgpack.unpackb(body, raw=False, use_list=True, max_bin_len=64, max_str_len=0,
                                max_array_len=7, max_map_len=0, max_ext_len=0)
        except Exception:  # msgpack raises a zoo of types for bad input
            raise BadReceiptError("an undecodable receipt") from None
        ok = (type(f) is list and len(f) == 7
              and all(type(f[i]) is bytes and len(f[i]) == 32 for i in (0, 2, 4))
              and all(type(f[i]) is int and 0 <= f[i] < 1 << 63 for i in (1, 3))
              and type(f[5]) is bytes and len(f[5]) == 64 and type(f[6]) is bool)
        if not ok:
            raise BadReceiptError("a malformed receipt")
        return cls(discovery_key, f[0], f[1], f[2], f[3], f[4], f[5], f[6])

    def verify(self) -> None:
        try:
            nacl.signing.VerifyKey(self.signer).verify(self.signable(), self.signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise BadReceiptError("the receipt's signature does not verify") from None

    def encode(self) -> bytes:
        return msgpack.packb(asdict(self), use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        return cls(**msgpack.unpackb(data, raw=False))
