"""Groups: a multi-writer view over the members' feeds, and the group log.

Theory of operation
-------------------
A group is known here by name. A *member* holds the group address and derives every key from
it (``networker.keys``); a *backup peer* (seed) holds only the replication key: it can verify
and store the group's feeds, not read them or add to them.

Each member device writes one feed per group (created when it creates or joins the group) and
admits it with a membership tag ``keyed_blake3(membership_key, feed_key)``. Feeds offered by
peers are accepted only with a valid tag; a backup peer cannot check tags, so it keeps and
relays them, and members check them, so a backup peer cannot inject a feed.

Log entries are msgpack maps ``{"type": "log", "text", "time", "author"}`` encrypted with
XChaCha20-Poly1305 under the group's encryption key, a random 24-byte nonce per entry (stored in
front of the ciphertext), and ``feed key || u64(seq)`` as associated data, so an entry cannot be
moved to another feed or position unnoticed.

``cobox log cat`` order: entries sorted by their ``time``, then author feed key, then sequence
number, which is the same on every device that holds the same entries.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.bindings
import nacl.exceptions

from networker import messages as m
from networker.channel import Channel
from networker.errors import RemoteProtocolError
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys, membership_tag
from storage import Feed, Store
from storage.errors import StorageError

from .backup.audit import INTERVAL as AUDIT_INTERVAL
from .backup.audit import Auditor
from .backup.receipts import BadReceiptError, Receipt
from .errors import NotAMemberError

log = logging.getLogger(__name__)
RECEIPT_DELAY = 0.25  # seconds to gather stored entries into one receipt per feed

GROUPS_SCOPE = "groups"
NONCE_BYTES = 24
MAX_TEXT = 64 * 1024
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class LogEntry:
    feed: bytes
    seq: int
    author: bytes
    time: float
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"feed": self.feed.hex(), "seq": self.seq, "author": self.author.hex(),
                "time": self.time, "text": self.text}


class Group:
    """One group on this device (member or backup peer); what networker replicates."""

    def __init__(self, store: Store, name: str, keys: GroupKeys, identity: DeviceIdentity,
                 created: float, *, quota_bytes: int = 0, audit_interval: float = AUDIT_INTERVAL) -> None:
        self.store = store
        self.name = name
        self.keys = keys
        self.identity = identity
        self.device_id = identity.peer_id
        self.created = created
        self.quota_bytes = quota_bytes  # a backup peer stops taking data past this (0: no limit)
        self.quota_full = False
        self._channels: set[Channel] = set()
        self._dirty: set[bytes] = set()  # feeds whose receipts are due
        self._receipts_due = asyncio.Event()  # set when receipts are due; run_receipts sends them
        self.receipts: dict[tuple[bytes, bytes], Receipt] = {}  # (backup peer, feed) -> latest
        self.discovery_key = keys.discovery_key
        self.replication_key = keys.replication_key
        self.namespace = keys.discovery_key.hex()
        self._tags: dict[bytes, bytes] = {}
        self._callbacks: list[Callable[[Feed], None]] = []
        self.audits = Auditor(self, interval=audit_interval)  # of the backup peers (cobox.backup.audit)

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
        return f"tags:{self.namespace}"

    async def load(self) -> None:
        self._tags = {bytes.fromhex(k): v for k, v in (await self.store.records(self._tag_scope)).items()}
        for value in (await self.store.records(self._receipt_scope)).values():
            r = Receipt.decode(value)
            self.receipts[(r.signer, r.feed)] = r
        await self.audits.load()
        if self.is_member and self.own_feed() is None:
            await self._add_own_feed()
        if not self.is_member:
            for feed in self.feeds():
                feed.listen(lambda ev, k=feed.key: self._stored(k))
            self._check_quota()

    async def _add_own_feed(self) -> Feed:
        feed = await self.store.create_feed(self.namespace)
        assert self.keys.membership_key is not None
        await self._remember_tag(feed.key, membership_tag(self.keys.membership_key, feed.key))
        for cb in list(self._callbacks):
            cb(feed)
        return feed

    async def _remember_tag(self, key: bytes, tag: bytes) -> None:
        self._tags[key] = tag
        await self.store.put_record(self._tag_scope, key.hex(), tag)

    # -- the networker.group.Group protocol ---------------------------------------------------

    def feeds(self) -> list[Feed]:
        return [f for f in self.store.feeds(self.namespace) if f.key in self._tags]

    def tag(self, feed: Feed) -> bytes:
        return self._tags.get(feed.key, b"")

    async def accept_feed(self, key: bytes, tag: bytes) -> Feed | None:
        if key in self._tags:
            return self.store.feed(key)
        if self.keys.membership_key is not None:
            if not hmac.compare_digest(membership_tag(self.keys.membership_key, key), tag):
                return None  # not admitted by a member
        elif len(tag) != 32:
            return None  # a backup peer keeps only feeds that come with a tag to relay
        feed = await self.store.open_feed(key, self.namespace)  # the stored one, or a new replica
        if feed.namespace != self.namespace:
            return None
        await self._remember_tag(key, tag)
        if not self.is_member:
            feed.listen(lambda ev, k=feed.key: self._stored(k))
        for cb in list(self._callbacks):
            cb(feed)
        return feed

    def on_feed_added(self, callback: Callable[[Feed], None]) -> None:
        self._callbacks.append(callback)

    # -- the log ------------------------------------------------------------------------------

    def own_feed(self) -> Feed | None:
        return next((f for f in self.store.feeds(self.namespace) if f.writable), None)

    async def append(self, text: str) -> int:
        """Append a log entry to this device's feed; return its sequence number."""
        if not self.is_member:
            raise NotAMemberError(f"this device backs up {self.name!r} but cannot write to it")
        if len(text.encode()) > MAX_TEXT:
            raise ValueError(f"an entry holds at most {MAX_TEXT} bytes of text")
        plain = msgpack.packb({"type": "log", "text": text, "time": time.time(),
                               "author": self.device_id}, use_bin_type=True)
        return await self.append_records([plain])

    async def append_records(self, plaintexts: list[bytes]) -> int:
        """Append encrypted entries to this device's feed in one signed batch; return the
        sequence number of the first."""
        if not self.is_member:
            raise NotAMemberError(f"this device backs up {self.name!r} but cannot write to it")
        feed = self.own_feed() or await self._add_own_feed()
        first = feed.next_seq  # no await until append() takes them: the numbers are ours
        await feed.append([self.seal(feed.key, first + k, p) for k, p in enumerate(plaintexts)])
        return first

    def seal(self, feed_key: bytes, seq: int, plain: bytes) -> bytes:
        assert self.keys.encryption_key is not None
        nonce = os.urandom(NONCE_BYTES)
        return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plain, feed_key + _U64.pack(seq), nonce, self.keys.encryption_key)

    def open(self, feed_key: bytes, seq: int, data: bytes) -> bytes | None:
        """Decrypt an entry; ``None`` if it does not authenticate."""
        if self.keys.encryption_key is None or len(data) < NONCE_BYTES + 16:
            return None
        try:
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                data[NONCE_BYTES:], feed_key + _U64.pack(seq), data[:NONCE_BYTES],
                self.keys.encryption_key)
        except nacl.exceptions.CryptoError:
            return None

    async def log(self) -> list[LogEntry]:
        """Every readable log entry this device holds, in the documented order."""
        if not self.is_member:
            raise NotAMemberError(f"this device backs up {self.name!r} but cannot read it")
        out = []
        for feed in self.feeds():
            for start, end in list(feed.have):
                for k, data in enumerate(await feed.get_range(start, end)):
                    entry = self._decode(feed.key, start + k, data)
                    if entry is not None:
                        out.append(entry)
        out.sort(key=lambda e: (e.time, e.feed, e.seq))
        return out

    async def author_of(self, feed: Feed) -> bytes | None:
        """The device that writes ``feed``, from its first entry (``None`` until it is held, or
        when this device cannot read the group)."""
        if not self.is_member or not feed.has(0):
            return None
        entry = self._decode(feed.key, 0, await feed.get(0))
        return entry.author if entry is not None else None

    def _decode(self, feed_key: bytes, seq: int, data: bytes) -> LogEntry | None:
        plain = self.open(feed_key, seq, data)
        if plain is None:
            return None
        try:
            obj = msgpack.unpackb(plain, raw=False)
            if obj.get("type") != "log":
                return None
            return LogEntry(feed_key, seq, bytes(obj["author"]), float(obj["time"]), str(obj["text"]))
        except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException):
            return None

    # -- backup peer: quota and receipts ---------------------------------------------------------

    @property
    def _receipt_scope(self) -> str:
        return f"receipts:{self.namespace}"

    def stored_bytes(self) -> int:
        return sum(f.stored_bytes for f in self.feeds())

    def on_channel_live(self, channel: Channel) -> None:
        self._channels.add(channel)
        self._apply_quota(channel)
        self.audits.on_channel_live(channel.peer)
        if not self.is_member:
            self._dirty.update(f.key for f in self.feeds())
            self._schedule_receipts()

    def on_channel_closed(self, channel: Channel) -> None:
        self._channels.discard(channel)
        self.audits.on_channel_closed(channel.peer)

    def _stored(self, feed_key: bytes) -> None:
        self._check_quota()
        self._dirty.add(feed_key)
        self._schedule_receipts()

    def _check_quota(self) -> None:
        full = bool(self.quota_bytes) and self.stored_bytes() >= self.quota_bytes
        if full != self.quota_full:
            self.quota_full = full
            if full:
                log.warning("group %s reached its quota of %d bytes: taking no new data", self.name,
                            self.quota_bytes)
            self._dirty.update(f.key for f in self.feeds())
        for ch in self._channels:
            self._apply_quota(ch)

    def _apply_quota(self, channel: Channel) -> None:
        for pf in channel.feeds.values():
            pf.replicator.paused = self.quota_full
            if not self.quota_full:
                pf.replicator.schedule()

    def _schedule_receipts(self) -> None:
        if self._channels:
            self._receipts_due.set()

    async def run_receipts(self) -> None:
        """The receipt sender, run as a service by the daemon's supervisor: once receipts are
        due, wait ``RECEIPT_DELAY`` to gather more stored entries, then send one receipt per
        changed feed on every live channel. A failure puts the feeds back and raises (the
        supervisor records it and restarts the sender)."""
        while True:
            await self._receipts_due.wait()
            await asyncio.sleep(RECEIPT_DELAY)
            self._receipts_due.clear()
            await self._send_receipts()

    async def _send_receipts(self) -> None:
        dirty, self._dirty = self._dirty, set()
        try:
            for key in dirty:
                try:
                    feed = self.store.feed(key)
                    length = feed.contiguous_length
                    if length == 0:
                        continue
                    root = await feed.tree_hash_at(length)
                except StorageError as e:
                    log.debug("no receipt for %s: %s", key.hex()[:16], e)
                    continue
                r = Receipt.make(self.identity.sign, self.device_id, self.discovery_key, key, length, root,
                                 int(time.time() * 1000), self.quota_full)
                for ch in list(self._channels):
                    ch.post_receipt(r.to_message(ch.local_id))
        except BaseException:
            self._dirty |= dirty
            self._receipts_due.set()
            raise

    async def on_receipt(self, peer_id: bytes, msg: m.Receipt) -> None:
        """A backup peer's receipt: keep it if it verifies and names our data exactly."""
        r = Receipt.from_message(self.discovery_key, msg)
        try:
            if r.signer != peer_id:
                raise BadReceiptError("a receipt signed by another peer than the sender")
            r.verify()
            feed = next((f for f in self.feeds() if f.key == r.feed), None)
            if feed is None:
                return  # not a feed of ours to track
            if r.length > feed.length:
                raise BadReceiptError("a receipt for more entries than the feed has")
            try:
                ours = await feed.tree_hash_at(r.length)
            except StorageError:
                ours = None  # a length whose tree we cannot rebuild here: the signature stands
            if ours is not None and ours != r.root_hash:
                raise BadReceiptError("a receipt for data that differs from ours")
        except BadReceiptError as e:
            raise RemoteProtocolError(str(e)) from None
        previous = self.receipts.get((r.signer, r.feed))
        if previous is not None and previous.time_ms >= r.time_ms:
            return
        self.receipts[(r.signer, r.feed)] = r
        await self.store.put_record(self._receipt_scope, f"{r.signer.hex()}:{r.feed.hex()}", r.encode())
        self.audits.on_receipt(r.signer)

    def backup_status(self) -> list[dict[str, Any]]:
        """For each backup peer that sent receipts: how far it claims to hold each of this
        device's feeds and the audit that backs the claim (``backed_up`` needs a passed one)."""
        own = [f for f in self.feeds() if f.writable]
        peers = sorted({signer for signer, _ in self.receipts})
        out = []
        for signer in peers:
            feeds = []
            for f in own:
                r = self.receipts.get((signer, f.key))
                held = r.length if r else 0
                feeds.append({"feed": f.key.hex(), "length": f.length, "held": held,
                              "confirmed": r.time_ms / 1000 if r else None,
                              **self.audits.feed_status(signer, f, held)})
            quota = any(r.quota_full for (s, _), r in self.receipts.items() if s == signer)
            out.append({"peer": signer.hex(), "feeds": feeds, "quota_full": quota,
                        "audit": self.audits.peer_status(signer),
                        "backed_up": all(x["backed_up"] for x in feeds)})
        return out

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
                       "writable": f.writable, "own": own is not None and f.key == own.key}
                      for f in self.feeds()],
        }


def encode_info(keys: GroupKeys, created: float) -> bytes:
    if keys.address is not None:
        return msgpack.packb({"address": keys.address, "created": created}, use_bin_type=True)
    return msgpack.packb({"replication_key": keys.replication_key, "created": created}, use_bin_type=True)


def decode_info(value: bytes) -> tuple[GroupKeys, float]:
    obj = msgpack.unpackb(value, raw=False)
    if "address" in obj:
        return GroupKeys.from_address(bytes(obj["address"])), float(obj["created"])
    return GroupKeys.from_replication_key(bytes(obj["replication_key"])), float(obj["created"])
