"""Device names: the signed profile each device publishes in a group, and who is who.

Theory of operation
-------------------
Every device has a name (``[device] name`` in the configuration, the host name by default,
changed with ``cobox device rename NAME``, which is kept in the store and wins over the
configuration). In each of its groups it publishes a *profile*::

    Profile(device, name, kind, time_ms, signature)
    signature = Ed25519_sign(device key, PROFILE_CONTEXT || discovery_key || msgpack [device, name, kind, time_ms])

``kind`` is ``member`` or ``backup`` (a backup peer). The discovery key in the signed bytes binds
the profile to one group, so it cannot be replayed into another. The bytes are
``cobox.entries_profile.encode_profile`` (strict decoder ``decode_profile``).

Where profiles travel:

* a member appends its profile to its own feed of the group (sealed like every entry), when it
  activates the group with a name that differs from the last one it published, and on a rename;
  every member then finds it when it scans the feeds (:meth:`Profiles.scan`, from a persisted
  cursor per feed, so each entry is read once; an entry too large to be a profile, a chunk or
  a large folder operation, is not even read: its stored size says so);
* every device (backup peers have no feed) also sends its profile as the channel extension
  ``PROFILE_EXTENSION`` when a channel of the group goes live, and again on a rename.

Accepting one (:meth:`Profiles.offer`): it must decode strictly, its signature must verify
under its own device id, and it must be the profile of the device it comes from: the owner of
the feed it is in (from the feed's admission), or the peer at the other end of the channel. A
profile that fails is refused: from a feed it is skipped and counted against the feed's owner
(``Group.refuse``); on a channel the peer is disconnected (``RemoteProtocolError``), like a bad
receipt. The latest profile by ``time_ms`` per device wins; accepted profiles are kept in the
store (scope ``profiles:<namespace>``), so names survive restarts.

Names are labels, not identities: two devices may pick the same name. Where an exact device
must be named (``device remove``) :func:`resolve` takes a name only if it is unique, else an id
prefix.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import nacl.exceptions
import nacl.signing

from networker import RemoteProtocolError

from . import netview
from .entries import PROFILE_TYPE, record_type, unpack
from .entries_profile import MAX_PROFILE_BYTES, check_name, decode_profile, encode_profile, profile_of
from .entries_seal import NONCE_BYTES, TAG_BYTES
from .errors import DeviceNotFoundError, MalformedProfileError, MalformedRecordError, UsageError

if TYPE_CHECKING:
    from storage import Feed

    from .groups import Group

log = logging.getLogger(__name__)

PROFILE_CONTEXT = b"cobox device profile v1\x00"
PROFILE_EXTENSION = "cobox/profile"  # the networker Extension name profiles travel under
NAME_SCOPE = "device"  # store record "name": the name given with `cobox device rename`
MAX_PROFILES = 4096  # devices whose profiles one group keeps (a new device beyond is not kept)
SCAN_WINDOW = 4096  # entries whose sizes are read at once
_U64 = struct.Struct(">Q")


def default_name(configured: str) -> str:
    """The configured name, or the host name (cut to a valid name), or ``device``."""
    for candidate in (configured, socket.gethostname()):
        text = "".join(c for c in candidate.strip() if c.isprintable())
        while len(text.encode()) > 64:
            text = text[:-1]
        text = text.strip()
        if text:
            return text
    return "device"


async def stored_name(store: Any) -> str:
    """The name given with ``cobox device rename`` ("" if none)."""
    value = (await store.records(NAME_SCOPE)).get("name")
    return value.decode() if value else ""


async def rename(store: Any, groups: Iterable[Group], name: str) -> str:
    """Keep ``name`` as this device's name and publish it in every group; ``UsageError`` for a
    name that cannot be published."""
    try:
        check_name(name)
    except MalformedProfileError as e:
        raise UsageError(f"not a device name: {str(e).removeprefix('name: ')}") from None
    await store.put_record(NAME_SCOPE, "name", name.encode())
    for group in list(groups):
        await group.profiles.publish(name)
    return name


@dataclass(frozen=True)
class Profile:
    device: bytes
    name: str
    kind: str  # "member" | "backup"
    time_ms: int
    signature: bytes

    @staticmethod
    def signable(discovery_key: bytes, device: bytes, name: str, kind: str, time_ms: int) -> bytes:
        return PROFILE_CONTEXT + discovery_key + msgpack.packb([device, name, kind, time_ms], use_bin_type=True)

    @classmethod
    def make(cls, sign: Callable[[bytes], bytes], device: bytes, discovery_key: bytes, name: str, kind: str,
             time_ms: int | None = None) -> Profile:
        check_name(name)
        when = int(time.time() * 1000) if time_ms is None else time_ms
        return cls(device, name, kind, when, sign(cls.signable(discovery_key, device, name, kind, when)))

    def encode(self) -> bytes:
        return encode_profile(self.device, self.name, self.kind, self.time_ms, self.signature)

    @classmethod
    def decode(cls, discovery_key: bytes, data: bytes) -> Profile:
        """Decode strictly and verify the signature; only :class:`MalformedProfileError`."""
        return cls._verified(discovery_key, *decode_profile(data))

    @classmethod
    def from_obj(cls, discovery_key: bytes, obj: Any) -> Profile:
        return cls._verified(discovery_key, *profile_of(obj))

    @classmethod
    def _verified(cls, discovery_key: bytes, device: bytes, name: str, kind: str, time_ms: int,
                  sig: bytes) -> Profile:
        try:
            nacl.signing.VerifyKey(device).verify(cls.signable(discovery_key, device, name, kind, time_ms), sig)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise MalformedProfileError("profile: the signature does not verify for its device id") from None
        return cls(device, name, kind, time_ms, sig)

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device.hex(), "name": self.name, "kind": self.kind, "time": self.time_ms / 1000}


def claimed_by(profile: Profile, source: bytes) -> Profile:
    """``profile`` if it is the profile of ``source`` (the feed's owner or the sending peer);
    a profile claiming another device's id is refused."""
    if profile.device != source:
        raise MalformedProfileError(f"a profile of device {profile.device.hex()[:16]} sent by "
                                    f"{source.hex()[:16]}: a device may publish only its own")
    return profile


class Profiles:
    """The profiles known for one group: accept, keep, publish, and look names up."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.known: dict[bytes, Profile] = {}  # device -> latest profile
        self.refused = 0  # profiles refused (from feeds and channels)
        self.last_refused = ""
        self.seen: dict[bytes, float] = {}  # device -> when its channel last went live or closed
        self._cursor: dict[bytes, int] = {}  # feed key -> entries scanned from the start
        self._due = asyncio.Event()
        self._scanning = asyncio.Lock()
        self._unlisten: list[Callable[[], None]] = []

    @property
    def _scope(self) -> str:
        return f"profiles:{self.group.namespace}"

    @property
    def _cursor_scope(self) -> str:
        return f"profile-scan:{self.group.namespace}"

    async def load(self) -> None:
        dk = self.group.discovery_key
        for value in (await self.group.store.records(self._scope)).values():
            try:
                p = Profile.decode(dk, value)
            except MalformedProfileError:
                continue
            self.known[p.device] = p
        for key, value in (await self.group.store.records(self._cursor_scope)).items():
            if len(value) == 8:
                self._cursor[bytes.fromhex(key)] = _U64.unpack(value)[0]
        if self.group.is_member:
            for feed in self.group.feeds():
                self._watch(feed)
            self._unlisten.append(self.group.on_feed_added(self._watch))
            self._due.set()

    def close(self) -> None:
        for stop in self._unlisten:
            stop()
        self._unlisten.clear()

    def _watch(self, feed: Feed) -> None:
        self._unlisten.append(feed.listen(lambda ev: self._due.set()))
        self._due.set()

    # -- names ------------------------------------------------------------------------------

    def name_of(self, device: bytes) -> str | None:
        p = self.known.get(device)
        return p.name if p is not None else None

    def label(self, device: bytes) -> str:
        """The device's name, or its id's first 16 hex digits if it published none."""
        return self.name_of(device) or device.hex()[:16]

    def names(self) -> dict[str, str]:
        """Hex device id -> name, for every device with a profile."""
        return {d.hex(): p.name for d, p in self.known.items()}

    # -- accepting --------------------------------------------------------------------------

    async def offer(self, profile: Profile) -> bool:
        """Keep ``profile`` if it is newer than what we hold for its device (already verified
        and checked against its source); whether it was kept."""
        old = self.known.get(profile.device)
        if old is not None and old.time_ms >= profile.time_ms:
            return False
        if old is None and len(self.known) >= MAX_PROFILES:
            return False
        self.known[profile.device] = profile
        await self.group.store.put_record(self._scope, profile.device.hex(), profile.encode())
        if old is None or old.name != profile.name:
            log.info("group %s: device %s is named %r", self.group.name, profile.device.hex()[:16], profile.name)
        return True

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self.last_refused = why

    async def on_extension(self, peer_id: bytes, body: bytes) -> None:
        """A profile on the group's channel: it must be the sender's own; else the sender is
        disconnected."""
        try:
            profile = claimed_by(Profile.decode(self.group.discovery_key, body), peer_id)
        except MalformedProfileError as e:
            self._refuse(str(e))
            raise RemoteProtocolError(f"bad profile: {e}") from None
        await self.offer(profile)

    async def on_entry(self, feed_key: bytes, seq: int, obj: Any) -> None:
        """A profile entry (already decrypted and unpacked) at ``seq`` of ``feed_key``: refused
        and reported unless it is valid and its feed's owner's."""
        owner = self.group.owner(feed_key)
        try:
            if owner is None:
                raise MalformedProfileError("a profile in a feed without an owner")
            profile = claimed_by(Profile.from_obj(self.group.discovery_key, obj), owner)
        except MalformedProfileError as e:
            self._refuse(str(e))
            self.group.refuse(feed_key, seq, f"profile: {e}")
            return
        await self.offer(profile)

    async def scan(self) -> None:
        """Read the feeds' entries not scanned yet (their contiguous prefix) for profiles."""
        async with self._scanning:
            await self._scan()

    async def _scan(self) -> None:
        group = self.group
        if not group.is_member:
            return
        small = MAX_PROFILE_BYTES + NONCE_BYTES + TAG_BYTES  # larger: a chunk or an op, never read here
        for feed in group.feeds():
            start, end = self._cursor.get(feed.key, 0), feed.contiguous_length
            for window in range(start, end, SCAN_WINDOW):
                stop = min(window + SCAN_WINDOW, end)
                sizes = await feed.entry_sizes(window, stop)
                seq = window
                while seq < stop:  # each run of small entries in one read
                    if sizes[seq - window] > small:
                        seq += 1
                        continue
                    run = seq
                    while run < stop and sizes[run - window] <= small:
                        run += 1
                    for k, data in enumerate(await feed.get_range(seq, run)):
                        await self._entry(feed.key, seq + k, data)
                    seq = run
            if end > start:
                self._cursor[feed.key] = end
                await group.store.put_record(self._cursor_scope, feed.key.hex(), _U64.pack(end))

    async def _entry(self, feed_key: bytes, seq: int, data: bytes) -> None:
        plain = self.group.open(feed_key, seq, data)
        if plain is None:
            return
        try:
            obj = unpack(plain)
        except MalformedRecordError:
            return  # the log and the folder report these
        if record_type(obj) == PROFILE_TYPE:
            await self.on_entry(feed_key, seq, obj)

    async def run(self) -> None:
        """The scanner, run by the daemon's supervisor: scan whenever a feed changed."""
        while True:
            await self._due.wait()
            self._due.clear()
            await self.scan()

    # -- publishing -------------------------------------------------------------------------

    def own(self, name: str) -> Profile:
        g = self.group
        kind = "member" if g.is_member else "backup"
        return Profile.make(g.identity.sign, g.device_id, g.discovery_key, name, kind)

    async def publish(self, name: str, *, force: bool = False) -> Profile:
        """Publish this device's profile with ``name`` if it differs from the last one (or
        ``force``): in our feed (members) and on every live channel."""
        g = self.group
        mine = self.known.get(g.device_id)
        kind = "member" if g.is_member else "backup"
        if mine is not None and mine.name == name and mine.kind == kind and not force:
            return mine
        profile = self.own(name)
        if mine is not None and profile.time_ms <= mine.time_ms:  # a clock set back: still newer
            profile = Profile.make(g.identity.sign, g.device_id, g.discovery_key, name, kind, mine.time_ms + 1)
        await self.offer(profile)
        if g.is_member:
            await g.append_records([profile.encode()])
        self.send_all()
        return profile

    def send(self, channel: Any) -> None:
        """Send our latest profile on ``channel`` (when it goes live)."""
        mine = self.known.get(self.group.device_id)
        if mine is not None:
            netview.send_extension(channel, PROFILE_EXTENSION, mine.encode())

    def on_channel_live(self, channel: Any) -> None:
        self.seen[bytes(netview.channel_peer(channel).remote_peer_id)] = time.time()
        self.send(channel)

    def on_channel_closed(self, channel: Any) -> None:
        self.seen[bytes(netview.channel_peer(channel).remote_peer_id)] = time.time()

    def send_all(self) -> None:
        for ch in list(self.group._channels):
            self.send(ch)


def group_rows(group: Group, peers: Iterable[netview.PeerInfo], holdings: Mapping[bytes, Mapping[bytes, int]],
               now: float | None = None) -> list[DeviceRow]:
    """:func:`device_rows` of a live group (``peers``: :func:`cobox.netview.peers`;
    ``holdings``: :func:`cobox.netview.remote_holdings`)."""
    owners = {f.key: o for f in group.feeds() if (o := group.owner(f.key)) is not None}
    receipts = [(signer, feed, r.length, r.time_ms / 1000) for (signer, feed), r in group.receipts.items()]
    connected = {p.peer_id: p for p in peers if group.name in p.groups}
    return device_rows(me=group.device_id, owners=owners, profiles=group.profiles.known, receipts=receipts,
                       lengths={f.key: f.length for f in group.feeds()}, connected=connected,
                       now=time.time() if now is None else now, seen=group.profiles.seen,
                       own_role="member" if group.is_member else "backup",
                       holdings={**holdings, group.device_id: {f.key: f.contiguous_length for f in group.feeds()}})


# -- the device list ------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedHold:
    feed: bytes
    length: int  # entries of the feed we know of
    held: int  # entries this device holds (contiguous, as its receipts or our replica say)


@dataclass(frozen=True)
class DeviceRow:
    device: bytes
    name: str  # "" if it published no profile
    role: str  # "member" | "backup peer"
    this_device: bool
    last_seen: float | None  # seconds since the epoch: now if connected, else its latest profile/receipt
    connected: bool
    connection: str  # how (direct LAN, direct internet, hole-punched, relayed via X), "" if not connected
    feeds: tuple[FeedHold, ...]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.device.hex(), "name": self.name, "role": self.role, "this_device": self.this_device,
                "last_seen": self.last_seen, "connected": self.connected, "connection": self.connection,
                "feeds": [{"feed": f.feed.hex(), "length": f.length, "held": f.held} for f in self.feeds]}


def device_rows(*, me: bytes, owners: Mapping[bytes, bytes], profiles: Mapping[bytes, Profile],
                receipts: Iterable[tuple[bytes, bytes, int, float]], lengths: Mapping[bytes, int],
                connected: Mapping[bytes, netview.PeerInfo], now: float, seen: Mapping[bytes, float] = {},
                own_role: str = "member", holdings: Mapping[bytes, Mapping[bytes, int]] = {}) -> list[DeviceRow]:
    """Every device of a group, pure. ``owners``: feed key -> owner device (admissions);
    ``role``: ``member`` for the owner of an admitted feed (its admission proves it holds the
    group address), ``backup peer`` for every other device (receipts, profiles);
    ``receipts``: (backup peer, feed, held, time); ``lengths``: feed key -> length we know;
    ``connected``: device -> live peer view (carrying this group); ``seen``: device -> when it
    was last connected (this daemon's memory); ``holdings``: device -> feed -> entries held
    from the start (ours, and what connected peers say). Members first (this device first),
    then backup peers, each by name then id.

    How far a device holds each feed: what it says now if it is connected (or what we hold,
    for this device); else, for a backup peer, its latest receipts; else, for a member, the
    feeds it wrote (their length as we know it)."""
    devices: dict[bytes, str] = {}
    for owner in owners.values():
        devices[owner] = "member"
    backups: dict[bytes, dict[bytes, tuple[int, float]]] = {}
    for signer, feed, held, when in receipts:
        backups.setdefault(signer, {})[feed] = (held, when)
        devices.setdefault(signer, "backup peer")
    for device in profiles:  # a profile alone proves no membership: a member is who owns an admitted feed
        devices.setdefault(device, "backup peer")
    devices.setdefault(me, "member" if own_role == "member" else "backup peer")
    rows = []
    for device, role in devices.items():
        feeds = []
        if device in holdings:
            for feed, held in sorted(holdings[device].items()):
                if feed in owners:
                    feeds.append(FeedHold(feed, max(lengths.get(feed, 0), held), held))
        elif role == "member":
            for feed, owner in sorted(owners.items()):
                if owner == device:
                    feeds.append(FeedHold(feed, lengths.get(feed, 0), lengths.get(feed, 0)))
        else:
            for feed, (held, _) in sorted(backups.get(device, {}).items()):
                feeds.append(FeedHold(feed, lengths.get(feed, 0), held))
        p = profiles.get(device)
        info = connected.get(device)
        times = [t for t in (seen.get(device), p.time_ms / 1000 if p else None,
                             max((w for _, w in backups.get(device, {}).values()), default=None)) if t]
        last = now if info is not None or device == me else (max(times) if times else None)
        rows.append(DeviceRow(device, p.name if p else "", role, device == me, last, info is not None,
                              info.kind if info is not None else "", tuple(feeds)))
    rows.sort(key=lambda r: (r.role != "member", not r.this_device, r.name or "\uffff", r.device))
    return rows


def resolve(rows: Iterable[DeviceRow], text: str) -> DeviceRow:
    """The one device ``text`` names: an exact name that only one device has, or a prefix of
    one id (at least 4 hex digits); ``UsageError`` if none or several match."""
    rows = list(rows)
    by_name = [r for r in rows if r.name and r.name == text]
    if len(by_name) == 1:
        return by_name[0]
    t = text.lower()
    by_id = [r for r in rows if len(t) >= 4 and r.device.hex().startswith(t)]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_name) > 1 or len(by_id) > 1:
        raise UsageError(f"{text!r} names {max(len(by_name), len(by_id))} devices: give more of the id")
    raise DeviceNotFoundError(f"no device {text!r} in this group (see `cobox device list GROUP`)")
