"""Custody receipts: a backup peer's signed statement of how much of a feed it holds.

A receipt says "I, ``signer``, hold the first ``length`` entries of ``feed`` in the group with
``discovery_key``, whose Merkle tree hashes to ``root_hash``, as of ``time``", signed with the
backup peer's device key. The root hash pins the exact data: a member compares it with its own
tree at that length, so a receipt for data the backup does not really hold (or holds altered)
does not verify. ``quota_full`` tells members the backup peer stopped taking new data for the
group. Members keep the latest receipt per (backup peer, feed).
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

import msgpack
import nacl.exceptions
import nacl.signing

from networker import ReceiptMessage

from ..errors import CoboxError

CONTEXT = b"cobox custody receipt v1\x00"
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

    def to_message(self, channel: int) -> ReceiptMessage:
        """The receipt on the wire (the group is the channel's, so it is not sent)."""
        return ReceiptMessage(channel, self.feed, self.length, self.root_hash, self.time_ms, self.signer,
                              self.signature, self.quota_full)

    @classmethod
    def from_message(cls, discovery_key: bytes, msg: ReceiptMessage) -> Receipt:
        return cls(discovery_key, msg.feed, msg.length, msg.root_hash, msg.time_ms, msg.signer, msg.signature,
                   msg.quota_full)

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
