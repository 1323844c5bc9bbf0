"""Every message cobox peers exchange inside a Noise session, and its encoding.

Encoding
--------
A message is one msgpack array ``[type, channel, field...]``: ``type`` is the small integer
below, ``channel`` the *sender's* number for the channel it belongs to (0 for the connection
itself). The protocol version is bound into the Noise prologue (``cobox/1``), so a peer that
speaks another version fails the handshake instead of misreading messages.

Decoding is strict: unknown types, wrong field counts or types, out-of-range integers and
oversized fields raise :class:`DecodeError` (a ``RemoteProtocolError``: the peer is
disconnected). Limits are checked both on decode and, as a guard against our own bugs, on encode.

Memory for one message stays within a small multiple of its size. Before msgpack builds any
object, :func:`check_shape` walks the encoding (headers only: strings and byte strings are
skipped, not copied) and refuses more than ``MAX_DEPTH`` levels of arrays or more than
``MAX_OBJECTS`` objects in all: no message of the protocol nests deeper than
``[message, [list], [pair]]`` or holds more objects than a full ``Data``. Without this, a
message of nested empty arrays (one byte each on the wire, ~60 bytes each as Python lists)
grows about 70-fold when decoded; msgpack's C unpacker has ``max_*_len`` limits per array but
none on depth or on the total. Maps and extension types are not part of the protocol at all.
Before the first channel is live a connection accepts only small messages
(:func:`early_limit`, checked by the peer): an ``Open`` is ~80 bytes; only service calls and
their replies, which run on channel 0 without a group, may be larger.

Channel life: each side sends ``Open(channel, discovery_key, capability)``; the channel is live
once both have. Then ``Feeds`` (which feed keys each holds for the group, in pages), ``Have`` (per feed:
signed length and stored ranges, sent on open and after every change), ``Request`` /
``Data`` / ``NoData`` for ranges of entries with their proof, ``Extension`` for the layers
above (e.g. cobox's custody receipts), and ``Close``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from .errors import RemoteProtocolError

KEY_BYTES = 32
MAX_CHANNELS = 256
MAX_FEEDS = 1024
MAX_ADMISSION = 256  # bytes of the opaque admission proof a group attaches to a feed (cobox: owner + tag)
MAX_RANGES = 1024
MAX_ENTRIES = 4096
MAX_PROOF_NODES = 256
MAX_REASON = 200
MAX_INT = (1 << 63) - 1
MAX_DATA_BYTES = 6 * 1024 * 1024  # below the transport's 8 MiB message cap
MAX_DEPTH = 3  # [message, [feeds | ranges | nodes], [pair]]
MAX_OBJECTS = 3 + 2 + MAX_ENTRIES + 2 * (1 + 3 * MAX_PROOF_NODES) + 8  # a full Data, the largest message
PRE_CHANNEL_BYTES = 4096  # the largest message accepted before a channel is live (except service calls)


class DecodeError(RemoteProtocolError):
    """The peer sent a message that is not valid cobox protocol."""

    code = "bad_message"


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise DecodeError(what)


def _int(v: object, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    _check(type(v) is int and lo <= v <= hi, f"{what}: expected an integer in [{lo}, {hi}]")
    return v  # type: ignore[return-value]


def _key(v: object, what: str) -> bytes:
    _check(type(v) is bytes and len(v) == KEY_BYTES, f"{what}: expected {KEY_BYTES} bytes")
    return v  # type: ignore[return-value]


def _bytes(v: object, what: str, max_len: int) -> bytes:
    _check(type(v) is bytes and len(v) <= max_len, f"{what}: expected at most {max_len} bytes")
    return v  # type: ignore[return-value]


def _str(v: object, what: str, max_len: int) -> str:
    _check(type(v) is str and len(v) <= max_len, f"{what}: expected text of at most {max_len}")
    return v  # type: ignore[return-value]


def _list(v: object, what: str, max_len: int) -> list[Any]:
    _check(type(v) is list and len(v) <= max_len, f"{what}: expected a list of at most {max_len}")
    return v  # type: ignore[return-value]


def _ranges(v: object) -> tuple[tuple[int, int], ...]:
    out = []
    for r in _list(v, "ranges", MAX_RANGES):
        pair = _list(r, "range", 2)
        _check(len(pair) == 2, "range: expected [start, end]")
        s, e = _int(pair[0], "range start"), _int(pair[1], "range end")
        _check(s < e, "range: start must be below end")
        out.append((s, e))
    return tuple(out)


def _nodes(v: object) -> tuple[tuple[int, bytes], ...]:
    out = []
    for n in _list(v, "proof nodes", MAX_PROOF_NODES):
        pair = _list(n, "proof node", 2)
        _check(len(pair) == 2, "proof node: expected [index, hash]")
        out.append((_int(pair[0], "node index"), _key(pair[1], "node hash")))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Open:
    type_id: ClassVar[int] = 1
    channel: int
    discovery_key: bytes
    capability: bytes

    def fields(self) -> list[Any]:
        return [self.discovery_key, self.capability]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Open:
        return cls(channel, _key(f[0], "discovery key"), _key(f[1], "capability"))


@dataclass(frozen=True, slots=True)
class Close:
    type_id: ClassVar[int] = 2
    channel: int
    reason: str = ""

    def fields(self) -> list[Any]:
        return [self.reason]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Close:
        return cls(channel, _str(f[0], "reason", MAX_REASON))


@dataclass(frozen=True, slots=True)
class Feeds:
    """The feeds the sender holds for the channel's group: ``(feed key, admission)``. The
    admission is opaque to the network layer (the group checks it: in cobox, the owning device's
    signature and the membership tag), at most ``MAX_ADMISSION`` bytes, empty where the sender
    has none to offer. A list longer than ``MAX_FEEDS`` goes in pages: every page but the last
    has ``more`` set, so the receiver knows when the sender's list is complete (later single
    offers have it clear)."""

    type_id: ClassVar[int] = 3
    channel: int
    feeds: tuple[tuple[bytes, bytes], ...]
    more: bool = False

    def fields(self) -> list[Any]:
        return [[[k, t] for k, t in self.feeds], self.more]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Feeds:
        _check(type(f[1]) is bool, "more: expected a boolean")
        out = []
        for item in _list(f[0], "feeds", MAX_FEEDS):
            pair = _list(item, "feed", 2)
            _check(len(pair) == 2, "feed: expected [key, tag]")
            out.append((_key(pair[0], "feed key"), _bytes(pair[1], "admission", MAX_ADMISSION)))
        return cls(channel, tuple(out), f[1])


@dataclass(frozen=True, slots=True)
class Have:
    """The sender's signed length of a feed and the ranges of entries it stores. ``ranges``
    lists what is new since the last ``Have`` when ``incremental``, else everything."""

    type_id: ClassVar[int] = 4
    channel: int
    feed: bytes
    length: int
    ranges: tuple[tuple[int, int], ...]
    incremental: bool = False

    def fields(self) -> list[Any]:
        return [self.feed, self.length, [list(r) for r in self.ranges], self.incremental]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Have:
        _check(type(f[3]) is bool, "incremental: expected a boolean")
        return cls(channel, _key(f[0], "feed key"), _int(f[1], "length"), _ranges(f[2]), f[3])


@dataclass(frozen=True, slots=True)
class Request:
    """Entries ``[start, end)`` of a feed; ``known_length`` is the signed length the requester
    holds, so that the proof can show the server's (longer) tree extends it. ``chained``: the
    requester verifies answers in the order they are sent and has taken every earlier answer of
    this channel for this feed, so the proof is to upgrade from the longer of ``known_length``
    and the signed length of the server's previous answer (what the requester will hold when it
    verifies this one, though the requests were made before)."""

    type_id: ClassVar[int] = 5
    channel: int
    id: int
    feed: bytes
    start: int
    end: int
    known_length: int = 0
    chained: bool = False

    def fields(self) -> list[Any]:
        return [self.id, self.feed, self.start, self.end, self.known_length, self.chained]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Request:
        start, end = _int(f[2], "start"), _int(f[3], "end")
        _check(start < end, "request: start must be below end")
        _check(type(f[5]) is bool, "chained: expected a boolean")
        return cls(channel, _int(f[0], "request id"), _key(f[1], "feed key"), start, end,
                   _int(f[4], "known length"), f[5])


@dataclass(frozen=True, slots=True)
class Data:
    """Entries ``[start, start + len(entries))`` of a feed with their proof: the length of the
    signed tree, its signature, the proof nodes ``(index, hash)``, and the upgrade nodes from
    ``upgrade_from`` (0: none)."""

    type_id: ClassVar[int] = 6
    channel: int
    id: int
    feed: bytes
    start: int
    entries: tuple[bytes, ...]
    length: int
    signature: bytes
    nodes: tuple[tuple[int, bytes], ...]
    upgrade_from: int = 0
    upgrade: tuple[tuple[int, bytes], ...] = ()

    def fields(self) -> list[Any]:
        return [self.id, self.feed, self.start, list(self.entries), self.length, self.signature,
                [list(n) for n in self.nodes], self.upgrade_from, [list(n) for n in self.upgrade]]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Data:
        entries = _list(f[3], "entries", MAX_ENTRIES)
        _check(len(entries) > 0, "data: no entries")
        total = 0
        for e in entries:
            _check(type(e) is bytes, "entry: expected bytes")
            total += len(e)
        _check(total <= MAX_DATA_BYTES, "data: too many bytes")
        return cls(channel, _int(f[0], "request id"), _key(f[1], "feed key"), _int(f[2], "start"),
                   tuple(entries), _int(f[4], "length"), _bytes(f[5], "signature", 64),
                   _nodes(f[6]), _int(f[7], "upgrade from"), _nodes(f[8]))


@dataclass(frozen=True, slots=True)
class NoData:
    type_id: ClassVar[int] = 7
    channel: int
    id: int
    reason: str = ""

    def fields(self) -> list[Any]:
        return [self.id, self.reason]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> NoData:
        return cls(channel, _int(f[0], "request id"), _str(f[1], "reason", MAX_REASON))


MAX_EXTENSION_NAME = 64
MAX_EXTENSION_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Extension:
    """A product message on a live channel (as Hypercore's ``wire.extension``): ``name`` says
    which layer above it is for, ``body`` is that layer's own encoding. The network layer only
    carries it; the group decodes it (strictly) or ignores a name it does not know."""

    type_id: ClassVar[int] = 8
    channel: int
    name: str
    body: bytes

    def fields(self) -> list[Any]:
        return [self.name, self.body]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Extension:
        return cls(channel, _str(f[0], "extension name", MAX_EXTENSION_NAME),
                   _bytes(f[1], "extension body", MAX_EXTENSION_BYTES))


MAX_SERVICE = 64
MAX_CALL_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Call:
    """A request to a named service of the peer (on channel 0): e.g. key recovery on a backup
    peer. The network layer only carries it; the service is registered by the layer above."""

    type_id: ClassVar[int] = 9
    channel: int
    id: int
    service: str
    body: bytes

    def fields(self) -> list[Any]:
        return [self.id, self.service, self.body]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Call:
        _check(channel == 0, "call: only on channel 0")
        return cls(channel, _int(f[0], "call id"), _str(f[1], "service", MAX_SERVICE),
                   _bytes(f[2], "call body", MAX_CALL_BYTES))


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a :class:`Call`: ``ok`` with a body, or not ok with a reason in ``body``."""

    type_id: ClassVar[int] = 10
    channel: int
    id: int
    ok: bool
    body: bytes

    def fields(self) -> list[Any]:
        return [self.id, self.ok, self.body]

    @classmethod
    def parse(cls, channel: int, f: list[Any]) -> Reply:
        _check(channel == 0, "reply: only on channel 0")
        _check(type(f[1]) is bool, "ok: expected a boolean")
        return cls(channel, _int(f[0], "call id"), f[1], _bytes(f[2], "reply body", MAX_CALL_BYTES))


Message = Open | Close | Feeds | Have | Request | Data | NoData | Extension | Call | Reply

_TYPES: dict[int, type[Message]] = {t.type_id: t for t in (Open, Close, Feeds, Have, Request, Data, NoData, Extension,
                                                   Call, Reply)}
_FIELD_COUNT = {Open: 2, Close: 1, Feeds: 2, Have: 4, Request: 6, Data: 9, NoData: 2, Extension: 2, Call: 3,
                Reply: 3}


def _header_table() -> tuple[list[int], list[int]]:
    """Per msgpack type byte: ``skip`` (payload bytes after it, for fixed-size objects), or
    ``_SIZED`` (a string or bin: a length field of ``width`` bytes), ``_ARRAY`` (an array with a
    count field of ``width`` bytes; 0 for fixarray), ``_BAD`` (maps, extension types, 0xc1)."""
    skip, width = [_BAD] * 256, [0] * 256
    for b in [*range(0x00, 0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3]:
        skip[b] = 0  # fixint, nil, booleans
    for b in range(0xA0, 0xC0):
        skip[b] = b & 0x1F  # fixstr
    for b, n in ((0xCA, 4), (0xCB, 8), (0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8),
                 (0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
        skip[b] = n  # floats and ints
    for b, n in ((0xC4, 1), (0xC5, 2), (0xC6, 4), (0xD9, 1), (0xDA, 2), (0xDB, 4)):
        skip[b], width[b] = _SIZED, n  # bin8/16/32, str8/16/32
    for b in range(0x90, 0xA0):
        skip[b] = _ARRAY  # fixarray
    for b, n in ((0xDC, 2), (0xDD, 4)):
        skip[b], width[b] = _ARRAY, n  # array16/32
    return skip, width


_SIZED, _ARRAY, _BAD = -1, -2, -3
_SKIP, _WIDTH = _header_table()


def check_shape(data: bytes) -> None:
    """Refuse an encoding that nests arrays deeper than ``MAX_DEPTH``, holds more than
    ``MAX_OBJECTS`` objects, uses maps or extension types, or is truncated; build nothing.
    Costs one step per object header, none per payload byte; an array whose count exceeds what
    is left of the budget is refused before any of its items is looked at."""
    try:
        pos, _ = _walk(data, 0, 1, 0, MAX_OBJECTS)
    except IndexError:
        raise DecodeError("truncated message") from None
    if pos != len(data):
        raise DecodeError("truncated message" if pos > len(data) else "trailing bytes after the message")


def _walk(data: bytes, pos: int, count: int, depth: int, budget: int) -> tuple[int, int]:
    """Skip ``count`` objects from ``pos`` (inside ``depth`` arrays); return the position after
    them and the object budget left."""
    budget -= count
    for _ in range(count):
        b = data[pos]
        pos += 1
        skip = _SKIP[b]
        if skip >= 0:
            pos += skip
        elif skip == _SIZED:
            w = _WIDTH[b]
            if w == 2:  # bin16: entries of 256 B to 64 KiB, the bulk of Data
                pos += 2 + (data[pos] << 8 | data[pos + 1])
            elif w == 1:
                pos += 1 + data[pos]
            else:
                pos += 4 + int.from_bytes(data[pos:pos + 4], "big")
        elif skip == _ARRAY:
            w = _WIDTH[b]
            if w:
                items = int.from_bytes(data[pos:pos + w], "big")
                pos += w
            else:
                items = b & 0x0F
            if depth >= MAX_DEPTH:
                raise DecodeError(f"message: arrays nested deeper than {MAX_DEPTH}")
            if items > budget:
                raise DecodeError(f"message: more than {MAX_OBJECTS} objects")
            pos, budget = _walk(data, pos, items, depth + 1, budget)
        else:
            raise DecodeError(f"message: type byte 0x{b:02x} (map or extension) is not part of the protocol")
    return pos, budget


_SERVICE_PREFIXES = (bytes([0x90 | (2 + 3), 9, 0]), bytes([0x90 | (2 + 3), 10, 0]))  # Call, Reply on channel 0


def early_limit(data: bytes) -> int:
    """The largest size a message like ``data`` may have before any channel is live:
    ``PRE_CHANNEL_BYTES``, or room for a service call or reply (which need no channel)."""
    if data[:3] in _SERVICE_PREFIXES:
        return MAX_CALL_BYTES + 2 * MAX_SERVICE + 64
    return PRE_CHANNEL_BYTES


def encode(msg: Message) -> bytes:
    out: bytes = msgpack.packb([msg.type_id, msg.channel, *msg.fields()], use_bin_type=True)
    return out


def decode(data: bytes) -> Message:
    """Parse one message; raise :class:`DecodeError` on anything malformed."""
    check_shape(data)
    try:
        obj = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True,
            max_bin_len=MAX_DATA_BYTES, max_str_len=MAX_REASON * 4,
            max_array_len=max(MAX_ENTRIES, MAX_RANGES, MAX_FEEDS) + 8, max_map_len=0, max_ext_len=0,
        )
    except Exception as e:  # msgpack raises a zoo of types for bad input
        raise DecodeError(f"undecodable message: {type(e).__name__}") from None
    _check(type(obj) is list and len(obj) >= 2, "message: expected [type, channel, ...]")
    cls = _TYPES.get(obj[0]) if type(obj[0]) is int else None
    if cls is None:
        raise DecodeError(f"unknown message type {obj[0]!r}")
    fields = obj[2:]
    _check(len(fields) == _FIELD_COUNT[cls], f"{cls.__name__}: wrong number of fields")
    channel = _int(obj[1], "channel", 0, MAX_CHANNELS)
    return cls.parse(channel, fields)
