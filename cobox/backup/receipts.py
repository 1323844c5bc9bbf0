"""Custody receipts: a backup peer's signed statement of how much of a feed it holds.

A receipt says "I, ``signer``, hold the first ``length`` entries of ``feed`` in the group with
``discovery_key``, whose Merkle tree hashes to ``root_hash``, as of ``time``", signed with the
backup peer's device key. The root hash pins the exact data: a member compares it with its own
tree at that length, so a receipt for data the backup does not really hold (or holds altered)
does not verify. ``quota_full`` tells members the backup peer stopped taking new data for the
group. ``keep_days`` says what the backup peer keeps ( ``[backup] history_days``): 0 keeps
everything, N clears entries N days after their writer released them (see below). Members keep
the latest receipt per (backup peer, feed). A backup peer that cleared released entries still
counts them in ``length`` ("the first ``length`` entries, but for those released"): members
audit only entries they hold themselves, and a member released only what it cleared itself.

Releases: after a member prunes its history (:mod:`cobox.folders.prune`), it tells the
group's channels which entries of its own feed no kept version references any more: a
:class:`Release` of the feed's cleared ranges, signed with the *feed's* key (only the writer
can release its entries; ``Feed.sign_statement``), with its time. A backup peer with
``history_days`` set keeps each released range that many days after it first saw it released,
then clears it (``Group.expire_released``); with 0 it keeps everything.

On the wire a receipt is the body of a networker ``Extension`` named ``EXTENSION`` on the
group's channel (``to_body`` / ``from_body``, strict): the network layer carries it unread.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import msgpack
import nacl.exceptions
import nacl.signing

from ..errors import CoboxError

CONTEXT = b"cobox custody receipt v2\x00"
EXTENSION = "cobox/receipt"  # the networker Extension name receipts travel under
RELEASE_CONTEXT = b"cobox release v1\x00"
RELEASE_EXTENSION = "cobox/release"
MAX_RELEASE_RANGES = 1024
MAX_KEEP_DAYS = 100 * 365
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


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
    keep_days: int = 0  # the backup peer's retention of released entries (0: keeps everything)

    def signable(self) -> bytes:
        return (CONTEXT + self.discovery_key + self.feed + _U64.pack(self.length) + self.root_hash
                + _U64.pack(self.time_ms) + (b"\x01" if self.quota_full else b"\x00") + _U32.pack(self.keep_days))

    @classmethod
    def make(cls, sign: object, signer: bytes, discovery_key: bytes, feed: bytes, length: int,
             root_hash: bytes, time_ms: int, quota_full: bool = False, keep_days: int = 0) -> Receipt:
        unsigned = cls(discovery_key, feed, length, root_hash, time_ms, signer, b"", quota_full, keep_days)
        return cls(discovery_key, feed, length, root_hash, time_ms, signer,
                   sign(unsigned.signable()), quota_full, keep_days)  # type: ignore[operator]

    def keeps(self) -> str:
        """What the backup peer says it keeps, in words."""
        return "keeps all history" if not self.keep_days else f"keeps released history {self.keep_days} days"

    def to_body(self) -> bytes:
        """The receipt as the body of an ``EXTENSION`` message (the group is the channel's, so
        it is not sent)."""
        return msgpack.packb([self.feed, self.length, self.root_hash, self.time_ms, self.signer,
                              self.signature, self.quota_full, self.keep_days], use_bin_type=True)

    @classmethod
    def from_body(cls, discovery_key: bytes, body: bytes) -> Receipt:
        """Strictly decode an ``EXTENSION`` body; raise :class:`BadReceiptError` on anything
        malformed (it comes from another device)."""
        try:
            f = msgpack.unpackb(body, raw=False, use_list=True, max_bin_len=64, max_str_len=0,
                                max_array_len=8, max_map_len=0, max_ext_len=0)
        except Exception:  # msgpack raises a zoo of types for bad input
            raise BadReceiptError("an undecodable receipt") from None
        ok = (type(f) is list and len(f) == 8
              and all(type(f[i]) is bytes and len(f[i]) == 32 for i in (0, 2, 4))
              and all(type(f[i]) is int and 0 <= f[i] < 1 << 63 for i in (1, 3))
              and type(f[5]) is bytes and len(f[5]) == 64 and type(f[6]) is bool
              and type(f[7]) is int and 0 <= f[7] <= MAX_KEEP_DAYS)
        if not ok:
            raise BadReceiptError("a malformed receipt")
        return cls(discovery_key, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7])

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


class BadReleaseError(CoboxError):
    """A release (entries a member no longer keeps) is malformed or not signed by its feed."""

    code = "bad_release"


@dataclass(frozen=True)
class Release:
    """"The writer of ``feed`` keeps none of ``ranges`` any more, as of ``time_ms``", signed
    with the feed's key. Sent by members after a prune; acted on by backup peers."""

    discovery_key: bytes
    feed: bytes
    ranges: tuple[tuple[int, int], ...]
    time_ms: int
    signature: bytes

    def signable(self) -> bytes:
        return (RELEASE_CONTEXT + self.discovery_key + self.feed + _U64.pack(self.time_ms)
                + b"".join(_U64.pack(a) + _U64.pack(b) for a, b in self.ranges))

    @classmethod
    def make(cls, sign: object, discovery_key: bytes, feed: bytes, ranges: Sequence[tuple[int, int]],
             time_ms: int) -> Release:
        unsigned = cls(discovery_key, feed, tuple(ranges)[:MAX_RELEASE_RANGES], time_ms, b"")
        return cls(discovery_key, feed, unsigned.ranges, time_ms, sign(unsigned.signable()))  # type: ignore[operator]

    def to_body(self) -> bytes:
        return msgpack.packb([self.feed, [list(r) for r in self.ranges], self.time_ms, self.signature],
                             use_bin_type=True)

    @classmethod
    def from_body(cls, discovery_key: bytes, body: bytes) -> Release:
        """Strictly decode an ``RELEASE_EXTENSION`` body; raise :class:`BadReleaseError`."""
        try:
            f = msgpack.unpackb(body, raw=False, use_list=True, max_bin_len=64, max_str_len=0,
                                max_array_len=MAX_RELEASE_RANGES, max_map_len=0, max_ext_len=0)
        except Exception:  # msgpack raises a zoo of types for bad input
            raise BadReleaseError("an undecodable release") from None
        ok = (type(f) is list and len(f) == 4 and type(f[0]) is bytes and len(f[0]) == 32
              and type(f[1]) is list and type(f[2]) is int and 0 <= f[2] < 1 << 63
              and type(f[3]) is bytes and len(f[3]) == 64)
        if not ok:
            raise BadReleaseError("a malformed release")
        ranges = []
        for r in f[1]:
            if not (type(r) is list and len(r) == 2 and all(type(x) is int for x in r) and 0 <= r[0] < r[1] < 1 << 40):
                raise BadReleaseError("a malformed range in a release")
            ranges.append((r[0], r[1]))
        return cls(discovery_key, f[0], tuple(ranges), f[2], f[3])

    def verify(self) -> None:
        """Raise :class:`BadReleaseError` unless the feed's own key signed it."""
        try:
            nacl.signing.VerifyKey(self.feed).verify(self.signable(), self.signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise BadReleaseError("the release is not signed by its feed") from None
