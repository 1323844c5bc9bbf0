"""Removing a device, the daemon side: each group's chain of epochs on this device.

Theory of operation
-------------------
:class:`Epochs` keeps, for one group, every epoch this device holds keys for (a ``Group`` each:
namespace, channel, own feed), which one is current, and the epoch records (``cobox.epochs``)
it has verified. Records reach it three ways, all checked the same (``_consider``):

1. ``remove``: this device removes one; it appends the record, unencrypted, to its own feed
   of the current epoch (members and backup peers read it there);
2. the scanner (``run``, the ``epochs:NAME`` service): every entry of every admitted feed of
   every epoch held, read once (positions kept under ``epochscan:ORIGIN``), woken by appends
   and downloads; an entry with the epoch magic is a candidate record;
3. an ``EPOCH_NOTICE`` from a peer whose epoch refused our channel: the records that removed
   us, each with the remover's feed key and admission (checked with this epoch's membership
   key), so a removed device is told even if it never got the remover's feed.

A verified record is kept (``epochs:ORIGIN``) and the chain re-resolved (``cobox.epochs.resolve``).
Each epoch now on the chain gets a ``Group`` (started through the :class:`Host`: loaded, its
own feed made if current, joined on the node and swarm, its receipt and audit services); the
last is current: the host makes it ``groups[name]`` and moves the folder to it (its synced
state is kept under the group's ``origin``); the others are retired and stay joined, so what
was written in them is read and served. Each epoch has a :class:`Gate`: devices removed
anywhere on the chain, and in a retired epoch every device that its successor did not keep,
own no feed there and hold no channel: a channel it opens is answered with a notice and closed.
If a step removed this device (or sealed it nothing), it stays in the last epoch it holds,
keeps what it has, and its status says so (``Group.removal``).

A device invited after a removal (``cobox.uri``: the invite's chain of epochs): the daemon keeps
the chain under ``epochgiven:ORIGIN`` before the group starts (:func:`keep_given`), and
:meth:`Epochs.load_given` reads it first, so the genesis epoch starts retired (no own feed, no
profile written there: this device never writes in a past epoch) and :func:`cobox.epochs.resolve`
follows the given steps to the current epoch before any record is read. Every past epoch is then
joined and read like any other device's past epochs, with the group's one chunker key. Records
open with the given secrets (``given_share``). The others admit it in their past epochs because
it holds a feed in a later one (the gate's third rule): what it proves is that it holds the
later epoch's membership key, which the remover sealed only to devices it kept, or an invite
made since gave. As that feed is admitted after the channels of the past epochs were offered on
a connection, a feed of a new owner re-opens the past epochs' channels with it
(``Host.reopen``). An invite made from an epoch left by a step without a record yet (a
newcomer's) carries the given secrets on; :meth:`Epochs.invite_chain` gives the chain.

Limits (README "Removing a device"): a removed device keeps everything it had; until every
remaining device has switched, it can still get what they write in the old epoch; a backup peer
cannot tell members from other holders of the replication key, so it follows any epoch sealed
to it by an admitted feed's owner (at most ``MAX_EPOCHS``). A removed device's own past feeds
are not taken from anyone (it could have written on after its removal): a device invited later
does not get what the removed device wrote (the members that held it keep it). A backup peer
invited after a removal gets the current epoch's replication key only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
from blake3 import blake3

from networker import DeviceIdentity, GroupKeys, RemoteProtocolError
from storage import Feed, RangeSet, Store

from . import admission, netview
from .entries import EPOCH_MAGIC, is_epoch_entry
from .entries_epoch import EpochRecord, decode_epoch
from .epochs import (
    EPOCH_NOTICE,
    MAX_EPOCHS,
    Opened,
    Resolution,
    Step,
    given_share,
    make_record,
    open_record,
    resolve,
    verify,
)
from .errors import AdmissionError, MalformedEpochRecordError, RemovalError, UsageError
from .groups import Group
from .uri import MAX_CHAIN

log = logging.getLogger(__name__)
SCAN_ENTRIES = 4096  # entries whose first bytes the epoch scan reads per query
SCAN_PAUSE = 0.25  # seconds from the start of one scan pass to the next, at least
MAX_NOTICE = 16  # records in one notice
GIVEN_SCOPE = "epochgiven"  # :ORIGIN -> the chain of epoch secrets an invite gave (msgpack list of lists)


def given_scope(origin: str) -> str:
    return f"{GIVEN_SCOPE}:{origin}"


async def keep_given(store: Store, genesis: GroupKeys, chain: tuple[tuple[bytes, ...], ...]) -> None:
    """Keep an invite's chain of epochs for the group of ``genesis`` (before it starts)."""
    if chain:
        await store.put_record(given_scope(genesis.discovery_key.hex()), "chain",
                               msgpack.packb([list(step) for step in chain[:MAX_EPOCHS]]))


def chunker_id(keys: GroupKeys) -> str:
    """A fingerprint of the group's chunker key (equal on every member; says nothing of the key)."""
    return blake3(b"cobox chunker id v1" + (keys.chunker_key or b"")).hexdigest()[:16] if keys.chunker_key else ""


class Host(Protocol):
    """What the daemon does for the epochs of a group."""

    store: Store
    identity: DeviceIdentity

    def new_group(self, name: str, keys: GroupKeys, created: float) -> Group: ...

    async def start_epoch(self, group: Group) -> None:
        """Load ``group`` and replicate it (node, swarm, its services)."""
        ...

    async def switch(self, name: str, group: Group) -> None:
        """``group`` is now the group ``name`` (writes, the folder)."""
        ...

    def reopen(self, group: Group, device: bytes) -> None:
        """Open ``group``'s channel again with ``device``, if connected (its gate admits it now)."""
        ...


class Gate:
    """Who takes part in one epoch (``cobox.epochs.EpochGate``)."""

    def __init__(self, epochs: Epochs) -> None:
        self.epochs = epochs
        self.index = 0  # this epoch's place on the chain
        self.successor: Step | None = None  # the step that ended this epoch

    def admits(self, device: bytes) -> bool:
        """Not a device removed when this epoch ended or later (one removed before may hold
        its keys only by a new invite), and in a retired epoch one its successor kept or one
        that holds a feed in a later epoch (invited since: it reads the past, module docstring)."""
        if self.epochs.removed_at.get(device, -1) >= self.index:
            return False
        s = self.successor
        return s is None or device in s.members or device in s.seeds or self.epochs.holds_later(device, self.index)

    def refuse_channel(self, group: Group, channel: Any) -> None:
        peer = netview.channel_peer_id(channel)
        body = self.epochs.notice(group)
        if body:
            netview.send_extension(channel, EPOCH_NOTICE, body)
        log.info("group %s: refused %s in epoch %s (removed)", group.name, peer.hex()[:16],
                 group.discovery_key.hex()[:8])
        netview.close_channel(channel, "removed from the group")

    async def on_notice(self, group: Group, peer_id: bytes, body: bytes) -> None:
        await self.epochs.on_notice(group, peer_id, body)


def decode_notice(body: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """``[(record entry, feed key, admission)]``; ``RemoteProtocolError`` for anything else."""
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException):
        raise RemoteProtocolError("an epoch notice that is not msgpack") from None
    if type(items) is not list or not 1 <= len(items) <= MAX_NOTICE:
        raise RemoteProtocolError("an epoch notice is a list of 1 to 16 records")
    out = []
    for item in items:
        if (type(item) is not list or len(item) != 3 or not all(type(x) is bytes for x in item)
                or len(item[1]) != 32 or len(item[2]) != admission.ADMISSION_BYTES):
            raise RemoteProtocolError("an epoch notice item is not [record, feed key, admission]")
        out.append((item[0], item[1], item[2]))
    return out


class Epochs:
    """The chain of epochs of one group on this device."""

    def __init__(self, host: Host, genesis: Group, names: Callable[[bytes], str | None] | None = None) -> None:
        self.host = host
        self.genesis = genesis
        self.name = genesis.name
        self.me = host.identity.peer_id
        self._x25519 = host.identity.noise_private_key()
        self.names = names or (lambda _device: None)
        self.held: dict[bytes, Group] = {genesis.discovery_key: genesis}
        self.chain: list[Group] = [genesis]  # the epochs on the chain, oldest first
        self.given: tuple[tuple[bytes, ...], ...] = ()  # an invite's chain of epoch secrets
        self.current = genesis
        self.records: dict[bytes, EpochRecord] = {}
        self.found: dict[bytes, tuple[bytes, bytes]] = {}  # digest -> (feed key, admission) of its remover
        self.opened: dict[bytes, Opened] = {}
        self.resolution = Resolution(())
        self.removed: frozenset[bytes] = frozenset()
        self.removed_at: dict[bytes, int] = {}  # device -> the last step (chain index) that removed it
        self._done: dict[bytes, RangeSet] = {}  # feed -> entries scanned
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._prepare(genesis)

    @property
    def _scope(self) -> str:
        return f"epochs:{self.genesis.namespace}"

    @property
    def _scan_scope(self) -> str:
        return f"epochscan:{self.genesis.namespace}"

    def groups(self) -> list[Group]:
        return list(self.held.values())

    def _prepare(self, group: Group) -> None:
        group.origin = self.genesis.namespace
        group.gate = Gate(self)
        group.on_feed_added(lambda feed, g=group: self._feed_added(g, feed))

    def _feed_added(self, group: Group, feed: Feed) -> None:
        feed.listen(lambda _e: self._wake.set())
        self._wake.set()
        owner = group.owner(feed.key)
        if owner is None or owner == self.me:
            return
        for g in self.held.values():  # a newcomer's feed: its channels in the past epochs may open now
            if g is not group and g.retired and isinstance(g.gate, Gate) and g.gate.admits(owner):
                self.host.reopen(g, owner)

    def holds_later(self, device: bytes, index: int) -> bool:
        """``device`` holds an admitted feed in an epoch after the ``index``-th of the chain."""
        return any(device in g.owners() for g in self.chain[index + 1:])

    async def load_given(self) -> None:
        """The chain an invite gave (before the genesis group starts: it is then a past epoch)."""
        value = (await self.host.store.records(given_scope(self.genesis.namespace))).get("chain")
        if value is None:
            return
        self.given = tuple(tuple(bytes(s) for s in step) for step in msgpack.unpackb(value))
        self.genesis.retired = bool(self.given)

    def invite_chain(self) -> tuple[tuple[bytes, ...], ...]:
        """The chain of epoch secrets a member invite carries (``()`` in the genesis epoch);
        ``UsageError`` if it cannot be given."""
        steps = self.resolution.steps
        if not steps:
            return ()
        chain = tuple(s.secrets for s in steps)
        if not all(chain) or self.current.keys.address is None:
            raise UsageError(f"this device does not hold the secrets of every epoch of {self.name!r}")
        if sum(len(s) for s in chain) > MAX_CHAIN:
            raise UsageError(f"{self.name!r} went through more than {MAX_CHAIN} removals: an invite cannot carry "
                             "all its epochs (make a new group and share the folder there)")
        return chain

    def status(self) -> dict[str, Any]:
        """What the group's document shows of its epochs."""
        return {"chunker_id": chunker_id(self.current.keys), "epochs_held": len(self.chain),
                "joined_in_epoch": len(self.given)}

    def _listen(self, group: Group) -> None:
        """Wake the scanner when a feed of ``group`` (loaded) grows."""
        for feed in group.feeds():
            feed.listen(lambda _e: self._wake.set())

    async def load(self) -> None:
        """The records kept, then the chain they make (before the folder starts); the genesis
        group is loaded."""
        self._listen(self.genesis)
        for value in (await self.host.store.records(self._scope)).values():
            feed_key, adm, entry = msgpack.unpackb(value)
            try:
                r = verify(entry, parent=decode_epoch(entry).parent, owner=admission.owner(adm))
                share = open_record(r, self.me, self._x25519) or given_share(r, self.given)
            except MalformedEpochRecordError as e:
                log.warning("group %s: a kept epoch record no longer checks: %s", self.name, e)
                continue
            self._keep(r, feed_key, adm, share)
        for key, value in (await self.host.store.records(self._scan_scope)).items():
            done = RangeSet()
            done.add(0, int(value))
            self._done[bytes.fromhex(key)] = done
        await self._apply()
        self._wake.set()

    def _keep(self, r: EpochRecord, feed_key: bytes, adm: bytes, share: Opened | None) -> None:
        self.records[r.digest] = r
        self.found[r.digest] = (feed_key, adm)
        if share is not None:
            self.opened[r.digest] = share

    # -- records ------------------------------------------------------------------------------

    async def _consider(self, group: Group, feed_key: bytes, adm: bytes, entry: bytes) -> bool:
        """Check a candidate record found in ``group``; keep it and re-resolve. ``False``: refused
        (``MalformedEpochRecordError``, reported against the feed's owner)."""
        r = verify(entry, parent=group.discovery_key, owner=admission.owner(adm))
        share = open_record(r, self.me, self._x25519) or given_share(r, self.given)
        if r.digest in self.records:
            return True
        self._keep(r, feed_key, adm, share)
        await self.host.store.put_record(self._scope, r.digest.hex(), msgpack.packb([feed_key, adm, entry]))
        log.info("group %s: epoch record of %s removing %s", self.name, r.remover.hex()[:16],
                 ", ".join(d.hex()[:16] for d in r.removed))
        await self._apply()
        return True

    async def _found(self, group: Group, feed_key: bytes, seq: int, entry: bytes) -> None:
        adm = group.tag(group.store.feed(feed_key))
        try:
            if not adm:
                raise MalformedEpochRecordError("epoch record: in a feed without admission")
            await self._consider(group, feed_key, adm, entry)
        except MalformedEpochRecordError as e:
            log.warning("group %s: epoch record refused (feed %s entry %d): %s", self.name, feed_key.hex()[:16], seq, e)
            group.refuse(feed_key, seq, str(e))

    def notice(self, group: Group) -> bytes:
        """The records that ended ``group``'s epoch, as a notice to a refused peer."""
        items = [[self.found[d][0], self.found[d][1], r.entry()] for d, r in sorted(self.records.items())
                 if r.parent == group.discovery_key][:MAX_NOTICE]
        return msgpack.packb([[e, fk, adm] for fk, adm, e in items]) if items else b""

    async def on_notice(self, group: Group, peer_id: bytes, body: bytes) -> None:
        for entry, feed_key, adm in decode_notice(body):
            try:
                admission.check(adm, group.discovery_key, feed_key, group.keys.membership_key)
                await self._consider(group, feed_key, adm, entry)
            except (AdmissionError, MalformedEpochRecordError) as e:
                log.warning("group %s: epoch notice from %s refused: %s", self.name, peer_id.hex()[:16], e)
                group.refusals.feed(admission.owner(adm), feed_key, f"epoch notice: {e}")

    # -- the chain ----------------------------------------------------------------------------

    async def _apply(self) -> None:
        async with self._lock:
            res = resolve(self.genesis.keys, self.records.values(), self.me, self.opened, self.given)
            self.resolution = res
            chain, new = [self.genesis], []
            for step in res.steps:
                assert step.keys is not None
                g = self.held.get(step.keys.discovery_key)
                if g is None:
                    g = self.host.new_group(self.name, step.keys, step.time)
                    self._prepare(g)
                    self.held[step.keys.discovery_key] = g
                    new.append(g)
                chain.append(g)
            current = chain[-1]
            self.chain = chain
            ended = res.removed or res.not_carried
            steps = [*res.steps, *([ended] if ended is not None else [])]
            self.removed_at = {d: k for k, s in enumerate(steps) for d in s.removed - {self.me}}
            self.removed = frozenset(self.removed_at)
            for k, g in enumerate(chain):
                assert isinstance(g.gate, Gate)
                g.gate.index = k
                g.gate.successor = res.steps[k] if k < len(res.steps) else None
            for g in self.held.values():
                g.retired = g is not current
                if g not in chain:  # an epoch left for a later union: only the current members
                    assert isinstance(g.gate, Gate)
                    g.gate.index = max(len(res.steps) - 1, 0)
                    g.gate.successor = res.steps[-1] if res.steps else None
            current.past = [g for g in chain if g is not current] + [g for g in self.held.values() if g not in chain]
            current.removal = self._removal(ended, res.removed is not None) if ended is not None else None
            for g in new:
                await self.host.start_epoch(g)
                self._listen(g)
            if current is not self.current:
                log.info("group %s: now in epoch %d (%s)", self.name, len(chain) - 1, current.discovery_key.hex()[:8])
                self.current = current
                await self.host.switch(self.name, current)
            for g in self.held.values():
                g.enforce_gate()
            self._wake.set()

    def _removal(self, step: Step, removed: bool) -> dict[str, Any]:
        by = step.removers[0]
        name = self.names(by) or by.hex()[:16]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(step.time))
        what = "removed from" if removed else "not carried into the new epoch of"
        return {"by": by.hex(), "by_name": name, "time": step.time, "removed": removed,
                "text": f"{what} {self.name} by {name} at {when}"}

    # -- removing -----------------------------------------------------------------------------

    def members(self) -> set[bytes]:
        last = self.resolution.steps[-1] if self.resolution.steps else None
        return self.current.owners() | (set(last.members) if last else set()) | {self.me}

    def seeds(self) -> set[bytes]:
        last = self.resolution.steps[-1] if self.resolution.steps else None
        signers = {signer for g in self.held.values() for signer, _ in g.receipts}
        return (signers | (set(last.seeds) if last else set())) - self.members() - self.removed

    def match(self, device: str) -> bytes:
        """The device named ``device``: a name (``names``), or a hex id or id prefix."""
        known = self.members() | self.seeds()
        named = [d for d in known if self.names(d) == device]
        if len(named) == 1:
            return named[0]
        text = device.strip().lower()
        hits = [d for d in known if len(text) >= 4 and d.hex().startswith(text)]
        if len(hits) != 1:
            what = "matches several devices" if hits or len(named) > 1 else "is no device of this group"
            raise RemovalError(f"{device!r} {what} (give more of its id; `cobox device list {self.name}`)")
        return hits[0]

    async def remove(self, device: str) -> dict[str, Any]:
        """Remove ``device`` from the group: a new epoch without it."""
        cur = self.current
        if not cur.is_member:
            raise RemovalError(f"this device backs up {self.name!r}: only members remove devices")
        if cur.removal is not None:
            raise RemovalError(f"this device was {cur.removal['text']}")
        target = self.match(device)
        if target == self.me:
            raise RemovalError(f"that is this device: to stop syncing {self.name!r} here, `cobox group leave`")
        members, seeds = self.members(), self.seeds()
        record = make_record(self.host.identity.sign, self.me, cur.discovery_key, [target], members, seeds,
                             os.urandom(32))
        feed = cur.own_feed()
        if feed is None:
            raise RemovalError(f"this device has no feed in {self.name!r} to publish the removal in")
        await feed.append([record.entry()])
        await self._consider(cur, feed.key, cur.tag(feed), record.entry())
        return {"group": self.name, "removed": target.hex(), "removed_name": self.names(target) or "",
                "epoch": self.current.discovery_key.hex(), "members": sorted(d.hex() for d in members - {target}),
                "seeds": sorted(d.hex() for d in seeds - {target}), "time": record.time}

    # -- the scanner --------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan every feed of every epoch for records, whenever one grows (a service), at most
        one pass per ``SCAN_PAUSE`` seconds: a feed that grows by thousands of entries a second
        while a folder syncs is scanned a few times a second, not once per stored range (a
        query each, measured: 400 while 300 MiB arrived)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            began = loop.time()
            for group in list(self.held.values()):
                await self._scan(group)
            await asyncio.sleep(max(0.0, began + SCAN_PAUSE - loop.time()))

    async def _scan(self, group: Group) -> None:
        for feed in group.feeds():
            done = self._done.setdefault(feed.key, RangeSet())
            before = _prefix(done)
            # Entries cleared or held outside the store were folder chunks (only those are
            # pruned or released): never epoch records. Counting them as scanned keeps the saved
            # prefix moving past them, so a restart does not rescan (rebuild) the rest.
            for lo, hi in [*feed.cleared, *feed.outside]:
                done.add(lo, hi)
            for start, end in list(feed.have):
                for gap_start, gap_end in done.missing(start, end):
                    # Only each entry's first bytes are read: a record starts with its magic,
                    # and the chunks a scan passes over are most of a group's bytes.
                    for seq in range(gap_start, gap_end, SCAN_ENTRIES):
                        hi = min(seq + SCAN_ENTRIES, gap_end)
                        for k, head in await feed.prefixes(seq, hi, len(EPOCH_MAGIC)):
                            if is_epoch_entry(head):
                                await self._found(group, feed.key, k, await feed.get(k))
                        done.add(gap_start, hi)
            after = _prefix(done)
            if after != before:
                await self.host.store.put_record(self._scan_scope, feed.key.hex(), str(after).encode())


def _prefix(done: RangeSet) -> int:
    """How many entries from 0 on are scanned."""
    return done.contiguous_from(0)
