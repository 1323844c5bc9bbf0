"""Groups: a multi-writer view over the members' feeds, and the group log.

Theory of operation
-------------------
A group is known here by name. A *member* holds the group address and derives every key from
it (``networker.keys``); a *backup peer* (seed) holds only the replication key: it can verify
and store the group's feeds, not read them or add to them.

Each member device writes one feed per group (created when it creates or joins the group) and
admits it with an *admission* (``cobox.admission``): its device id, its signature over the
group's discovery key and the feed key, and a membership tag over feed key and device id.
Feeds offered by peers are accepted only with a valid admission; a backup peer cannot check
tags, so it checks the signature, keeps and relays the admission, and members check both, so
a backup peer cannot inject a feed. The admission's device is the feed's *owner*, persisted
with it: the author of every record in the feed (``owner``).

Limits: at most ``max_feeds_per_device`` feeds per owner device (default 64), and on a backup
peer at most ``max_feeds`` feeds per group; feeds beyond are refused (``accept_feed`` returns
``None``: the connection stays up) and counted in ``refusals`` against their owner.

Log entries, like every entry of a group, are encoded, decoded, sealed and opened by
:mod:`cobox.entries`; ``append`` writes them and ``log`` reads them (:mod:`cobox.grouplog`: the
order, and what a refused entry becomes). On a backup peer the quota and the receipts it sends
are :mod:`cobox.backup.seeding` (``seeding``); a member keeps the receipts it receives with
:mod:`cobox.backup.claims` (``receipts``, ``backup_status``).

Epochs (``cobox.epochs``, ``cobox.removal``): after a device removal a group is a chain of
``Group`` objects, one per epoch, each its own namespace, channel and own feed. The last one is
*current* (it writes; the daemon's ``groups[name]``); the others are *retired* (``retired``: no
own feed is made, nothing appended) and kept so what was written before stays readable and
served: ``past`` lists them, and ``all_feeds``, ``open``, ``owner``, ``log`` span the chain.
A ``gate`` (set by ``cobox.removal``) decides which devices may own feeds and hold channels in
an epoch: a device it refuses is told why (``EPOCH_NOTICE`` extension) and its channel closed.
``origin`` is the first epoch's namespace: state that must outlive an epoch is kept under it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack

from networker import Channel, DeviceIdentity, GroupKeys, RemoteProtocolError
from storage import Feed, Store

from . import admission, netview
from .backup import claims, retention
from .backup.audit import INTERVAL as AUDIT_INTERVAL
from .backup.audit import Auditor
from .backup.receipts import EXTENSION as RECEIPT_EXTENSION
from .backup.receipts import RELEASE_EXTENSION, BadReceiptError, BadReleaseError, Receipt, Release
from .backup.seeding import Seeding
from .devices import PROFILE_EXTENSION, Profiles
from .entries import encode_log
from .entries_seal import open_entry, seal
from .epochs import EPOCH_NOTICE, EpochGate
from .errors import AdmissionError, NotAMemberError
from .grouplog import LogEntry, read_log
from .refusals import Refusals
from .twins import TWIN_EXTENSION, TwinGuard

log = logging.getLogger(__name__)

GROUPS_SCOPE = "groups"
MAX_FEEDS_PER_DEVICE = 64

MAX_FEEDS = 4096  # per group on a backup peer


class Group:
    """One group on this device (member or backup peer); what networker replicates."""

    def __init__(self, store: Store, name: str, keys: GroupKeys, identity: DeviceIdentity,
                 created: float, *, quota_bytes: int = 0, audit_interval: float = AUDIT_INTERVAL,
                 max_feeds_per_device: int = MAX_FEEDS_PER_DEVICE, max_feeds: int = MAX_FEEDS,
                 keep_days: float = 0.0) -> None:
        self.store = store
        self.name = name
        self.keys = keys
        self.identity = identity
        self.device_id = identity.peer_id
        self.created = created
        self.quota_bytes = quota_bytes  # a backup peer stops taking data past this (0: no limit)
        self.quota_full = False
        self.limit: Callable[[], bool] | None = None  # an outside limit (cobox.hosting): True = take no new data
        self._channels: set[Channel] = set()
        self.seeding = Seeding(self)  # as a backup peer: the quota and the receipts sent (cobox.backup.seeding)
        self.receipts: dict[tuple[bytes, bytes], Receipt] = {}  # (backup peer, feed) -> latest (cobox.backup.claims)
        self.discovery_key = keys.discovery_key
        self.replication_key = keys.replication_key
        self.namespace = keys.discovery_key.hex()
        self.max_feeds_per_device = max_feeds_per_device
        self.max_feeds = max_feeds  # as a backup peer
        self.keep_days = keep_days  # as a backup peer: days released entries are kept (0: all)
        self._admissions: dict[bytes, bytes] = {}  # feed key -> admission (its owner first)
        self._per_device: dict[bytes, int] = {}  # owner -> feeds admitted
        self._opening: dict[bytes, asyncio.Future[Feed | None]] = {}  # feeds being admitted (awaiting)
        self.refusals = Refusals()
        self._callbacks: list[Callable[[Feed], None]] = []
        self.audits = Auditor(self, interval=audit_interval)  # of the backup peers (cobox.backup.audit)
        self.profiles = Profiles(self)  # the devices' names (cobox.devices)
        self.twins = TwinGuard()  # reports that our identity is live elsewhere (the daemon's, shared)
        self.origin = self.namespace  # the first epoch's namespace (cobox.removal sets it)
        self.past: list[Group] = []  # earlier epochs, still read (cobox.removal)
        self.retired = False  # a later epoch writes now
        self.gate: EpochGate | None = None
        self.removal: dict[str, Any] | None = None  # this device was removed: by whom, when

    def __repr__(self) -> str:
        return f"<Group {self.name!r} {'member' if self.is_member else 'seed'}>"

    @property
    def is_member(self) -> bool:
        return self.keys.encryption_key is not None

    @property
    def role(self) -> str:
        return "member" if self.is_member else "seed"

    @property
    def _tag_scope(self) -> str:
        return f"admissions:{self.namespace}"

    async def load(self) -> None:
        for k, v in (await self.store.records(self._tag_scope)).items():
            self._admit(bytes.fromhex(k), v)
        self.receipts.update(await claims.load(self.store, self.namespace))
        await self.audits.load()
        if self.is_member and self.own_feed() is None and not self.retired:
            await self._add_own_feed()
        await self.profiles.load()
        if not self.is_member:
            for feed in self.feeds():
                feed.listen(lambda ev, k=feed.key: self.seeding.stored(k))
            self.seeding.update_quota()

    async def _add_own_feed(self) -> Feed:
        feed = await self.store.create_feed(self.namespace)
        assert self.keys.membership_key is not None
        await self._remember(feed.key, admission.make(self.identity, self.discovery_key, self.keys.membership_key,
                                                      feed.key, feed.sign_statement))
        for cb in list(self._callbacks):
            cb(feed)
        return feed

    def _admit(self, key: bytes, adm: bytes) -> None:
        if key not in self._admissions:
            owner = admission.owner(adm)
            self._per_device[owner] = self._per_device.get(owner, 0) + 1
        self._admissions[key] = adm

    def _unadmit(self, key: bytes) -> None:
        adm = self._admissions.pop(key, None)
        if adm is not None:
            self._per_device[admission.owner(adm)] -= 1

    async def _remember(self, key: bytes, adm: bytes) -> None:
        self._admit(key, adm)
        await self.store.put_record(self._tag_scope, key.hex(), adm)

    def owner(self, feed_key: bytes) -> bytes | None:
        """The device that owns (writes) ``feed_key``, from its admission (in any epoch)."""
        adm = self._epoch_of(feed_key)._admissions.get(feed_key)
        return admission.owner(adm) if adm is not None else None

    def owners(self) -> set[bytes]:
        """The devices with a feed admitted in this epoch."""
        return {d for d, n in self._per_device.items() if n > 0}

    # -- epochs (cobox.removal) ---------------------------------------------------------------

    def chain(self) -> list[Group]:
        """Every epoch held, oldest first, this one last."""
        return [*self.past, self]

    def all_feeds(self) -> list[Feed]:
        """The admitted feeds of every epoch: what the folder and the log read."""
        return [f for g in self.chain() for f in g.feeds()]

    def _epoch_of(self, feed_key: bytes) -> Group:
        if feed_key in self._admissions:
            return self
        return next((g for g in self.past if feed_key in g._admissions), self)

    def _admits(self, device: bytes) -> bool:
        return self.gate is None or self.gate.admits(device)

    def enforce_gate(self) -> None:
        """Close the live channels of peers the gate no longer admits."""
        for ch in list(self._channels):
            if not self._admits(netview.channel_peer_id(ch)):
                self._channels.discard(ch)
                assert self.gate is not None
                self.gate.refuse_channel(self, ch)

    # -- the networker.group.Group protocol ---------------------------------------------------

    def feeds(self) -> list[Feed]:
        return [f for f in self.store.feeds(self.namespace) if f.key in self._admissions]

    def tag(self, feed: Feed) -> bytes:
        return self._admissions.get(feed.key, b"")

    async def accept_feed(self, key: bytes, tag: bytes) -> Feed | None:
        pending = self._opening.get(key)
        if pending is not None:  # being admitted by another call right now: its answer
            return await asyncio.shield(pending)
        if key in self._admissions:
            return self.store.feed(key) if self._admits(admission.owner(self._admissions[key])) else None
        try:
            owner = admission.check(tag, self.discovery_key, key, self.keys.membership_key)
            if not self._admits(owner):
                self.refusals.feed(owner, key, "removed from the group (or not carried into this epoch)")
                return None
            if self._per_device.get(owner, 0) >= self.max_feeds_per_device:
                self.refusals.feed(owner, key, f"more than {self.max_feeds_per_device} feeds of one device")
                return None
            if not self.is_member and len(self._admissions) >= self.max_feeds:
                self.refusals.feed(owner, key, f"more than {self.max_feeds} feeds in this group")
                return None
        except AdmissionError as e:
            log.debug("group %s: feed %s refused: %s", self.name, key.hex()[:16], e)
            return None
        done: asyncio.Future[Feed | None] = asyncio.get_running_loop().create_future()
        self._opening[key] = done
        self._admit(key, tag)  # counted before any await, so concurrent offers cannot pass a limit
        try:
            feed: Feed | None = await self.store.open_feed(key, self.namespace)  # stored, or a new replica
            if feed is not None and feed.namespace != self.namespace:
                feed = None
                self._unadmit(key)
            else:
                await self._remember(key, tag)
        except BaseException:
            self._unadmit(key)
            done.set_result(None)
            raise
        finally:
            del self._opening[key]
        done.set_result(feed)
        if feed is None:
            return None
        if not self.is_member:
            feed.listen(lambda ev, k=feed.key: self.seeding.stored(k))
        for cb in list(self._callbacks):
            cb(feed)
        return feed

    def on_feed_added(self, callback: Callable[[Feed], None]) -> Callable[[], None]:
        """Call ``callback`` for every feed added from now on; returns an unsubscribe."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    # -- the log ------------------------------------------------------------------------------

    def own_feed(self) -> Feed | None:
        return next((f for f in self.store.feeds(self.namespace) if f.writable), None)

    async def append(self, text: str) -> int:
        """Append a log entry to this device's feed; return its sequence number."""
        if not self.is_member:
            raise NotAMemberError(f"this device backs up {self.name!r} but cannot write to it")
        return await self.append_records([encode_log(text, time.time())])

    async def append_records(self, plaintexts: list[bytes]) -> int:
        """Append encrypted entries to this device's feed in one signed batch; return the
        sequence number of the first."""
        if not self.is_member:
            raise NotAMemberError(f"this device backs up {self.name!r} but cannot write to it")
        if self.retired:
            raise NotAMemberError(f"this epoch of {self.name!r} has ended: a later one writes")
        feed = self.own_feed() or await self._add_own_feed()
        first = feed.next_seq  # no await until append() takes them: the numbers are ours
        await feed.append([self.seal(feed.key, first + k, p) for k, p in enumerate(plaintexts)])
        return first

    def seal(self, feed_key: bytes, seq: int, plain: bytes) -> bytes:
        assert self.keys.encryption_key is not None
        return seal(self.keys.encryption_key, feed_key, seq, plain)

    def open(self, feed_key: bytes, seq: int, data: bytes) -> bytes | None:
        """Decrypt an entry (with the keys of the feed's epoch); ``None`` if it does not authenticate."""
        return open_entry(self._epoch_of(feed_key).keys.encryption_key, feed_key, seq, data)

    async def log(self) -> list[LogEntry]:
        """Every log entry this device holds (refused ones as placeholders), in the documented order
        (:func:`cobox.grouplog.read_log`)."""
        if not self.is_member:
            raise NotAMemberError(f"this device backs up {self.name!r} but cannot read it")
        return await read_log(self)

    async def author_of(self, feed: Feed) -> bytes | None:
        """The device that writes ``feed`` (its admission's owner)."""
        return self.owner(feed.key)

    def refuse(self, feed_key: bytes, seq: int, reason: str) -> None:
        """Count a refused record of ``feed_key`` against its owner."""
        self.refusals.record(self.owner(feed_key) or bytes(32), feed_key, seq, reason)

    # -- backup: quota and receipts ------------------------------------------------------------

    def stored_bytes(self) -> int:
        return sum(f.stored_bytes for f in self.feeds())

    async def delete_data(self) -> int:
        """Delete everything this device keeps for the group (:func:`cobox.leaving.delete_data`)."""
        from .leaving import delete_data

        return await delete_data(self)

    def on_channel_live(self, channel: Channel) -> None:
        if not self._admits(netview.channel_peer_id(channel)):
            assert self.gate is not None
            self.gate.refuse_channel(self, channel)
            return
        self._channels.add(channel)
        self.seeding.apply_quota(channel)
        self.audits.on_channel_live(netview.channel_peer(channel))
        self.profiles.on_channel_live(channel)
        if not self.is_member:
            self.seeding.all_due()
        elif (body := retention.release_body(self)) is not None:
            netview.send_extension(channel, RELEASE_EXTENSION, body)

    @property
    def channels(self) -> list[Channel]:
        """The live channels of this group (for the services that send on them)."""
        return list(self._channels)

    def on_channel_closed(self, channel: Channel) -> None:
        self._channels.discard(channel)
        self.audits.on_channel_closed(netview.channel_peer(channel))
        self.profiles.on_channel_closed(channel)

    def check_quota(self) -> None:
        """Decide again whether to take new data (after ``limit`` changed its mind, say); a
        change goes out in receipts."""
        self.seeding.update_quota()
        self.seeding.schedule()

    async def run_receipts(self) -> None:
        """The receipt sender, run as a service by the daemon's supervisor (:meth:`Seeding.run
        <cobox.backup.seeding.Seeding.run>`)."""
        await self.seeding.run()

    async def on_extension(self, peer_id: bytes, name: str, body: bytes) -> None:
        """A product message on this group's channel: receipts, releases and profiles are ours,
        epoch notices the gate's, other names are ignored."""
        if name == RELEASE_EXTENSION:
            try:
                release = Release.from_body(self.discovery_key, body)
                release.verify()
            except BadReleaseError as e:
                raise RemoteProtocolError(str(e)) from None
            await retention.on_release(self, release)
            return
        if name == EPOCH_NOTICE and self.gate is not None:
            await self.gate.on_notice(self, peer_id, body)
            return
        if name == PROFILE_EXTENSION:
            await self.profiles.on_extension(peer_id, body)
            return
        if name == TWIN_EXTENSION:
            self.twins.on_report(peer_id, body)
            return
        if name != RECEIPT_EXTENSION:
            return
        try:
            r = Receipt.from_body(self.discovery_key, body)
        except BadReceiptError as e:
            raise RemoteProtocolError(str(e)) from None
        await self.on_receipt(peer_id, r)

    async def on_receipt(self, peer_id: bytes, r: Receipt) -> None:
        """A backup peer's receipt: keep it if it verifies and names our data exactly
        (:func:`cobox.backup.claims.keep`)."""
        if await claims.keep(self, peer_id, r):
            self.audits.on_receipt(r.signer)

    def backup_status(self) -> list[dict[str, Any]]:
        """Per backup peer, what it claims to hold and the audit behind it (:func:`cobox.backup.claims.status`)."""
        return claims.status(self)

    def status(self) -> dict[str, Any]:
        own = self.own_feed()
        return {
            "name": self.name,
            "role": self.role,
            "discovery_key": self.discovery_key.hex(),
            "stored_bytes": self.stored_bytes(),
            "quota_bytes": self.quota_bytes,
            "quota_full": self.quota_full,
            "feeds": [{"key": f.key.hex(), "length": f.length, "have": len(f.have),
                       "writable": f.writable, "own": own is not None and f.key == own.key,
                       "owner": (self.owner(f.key) or b"").hex()}
                      for f in self.feeds()],
            "devices": self.devices_status(),
            "epoch": len(self.past),
            **({"removed": self.removal} if self.removal is not None else {}),
        }

    def devices_status(self) -> dict[str, dict[str, Any]]:
        """Per device of the group (hex id): feeds admitted, records and feeds refused."""
        out: dict[str, dict[str, Any]] = {
            dev.hex(): {"feeds": n, "records_refused": 0, "last_refused_reason": "", "feeds_refused": 0}
            for dev, n in sorted(self._per_device.items())}
        for dev, r in self.refusals.as_json().items():
            out.setdefault(dev, {"feeds": 0}).update(r)
        return out


def encode_info(keys: GroupKeys, created: float) -> bytes:
    if keys.address is not None:
        return msgpack.packb({"address": keys.address, "created": created}, use_bin_type=True)
    return msgpack.packb({"replication_key": keys.replication_key, "created": created}, use_bin_type=True)


def decode_info(value: bytes) -> tuple[GroupKeys, float]:
    obj = msgpack.unpackb(value, raw=False)
    if "address" in obj:
        return GroupKeys.from_address(bytes(obj["address"])), float(obj["created"])
    return GroupKeys.from_replication_key(bytes(obj["replication_key"])), float(obj["created"])
