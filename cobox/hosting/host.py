"""The backup host's side of backup as a service: invites, the ``hosting`` service, revocation.

Theory of operation
-------------------
:meth:`HostService.make_invite` stores a :class:`~cobox.hosting.invites.HostInvite` (the proof
key, never the secret) and returns the secret for the URI. A member calls the ``hosting``
service (:mod:`cobox.hosting.messages`); :meth:`HostService.handle`:

1. decodes the request strictly; a malformed one disconnects the caller;
2. checks the proof over this connection's handshake hash (the member is the prover: its role
   is the opposite of ours); a wrong proof and an unknown invite get the same answer;
3. ADD: decides with :func:`cobox.hosting.quota.refuse_add` under one lock (concurrent adds
   cannot pass a limit), then keeps the group as a seed through the daemon's seed entry point
   (:class:`Seeds`: only the replication key: the host can verify and serve, never read), records
   a :class:`~cobox.hosting.invites.Hosted` and answers a signed acceptance;
   STATUS: a signed statement of how the group is kept; REMOVE: drops it through the seed
   removal path and answers ``REMOVED``.

Every kept group gets ``Group.limit`` (the group takes no new data while
:func:`cobox.hosting.quota.state` is not ``ACTIVE``): replication pauses exactly as for a seed
over its quota (``netview.pause_feeds``) and receipts carry ``quota_full``.

:meth:`HostService.revoke` takes an invite id or a device id (a prefix of at least 6 hex
digits): the invite (or device) gets no new group, each of its groups stops taking data at
once and is cleared after ``grace`` seconds (``[hosting] revoke_grace_days``) by :meth:`run`,
the supervised sweeper, which sleeps until the next clearing is due (or a revoke wakes it).

Records: scope ``hosting-invites`` (invite id hex -> HostInvite), ``hosting-groups``
(discovery key hex -> Hosted), ``hosting-revoked-devices`` (device id hex -> time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from networker import DeviceIdentity, GroupKeys, ServiceError
from storage import Store

from .. import netview
from ..errors import CoboxError, MalformedHostingError, UsageError
from . import quota
from .invites import Hosted, HostInvite, check_label, check_proof, invite_id, new_secret, proof_key
from .messages import Op, Request, State, Statement

if TYPE_CHECKING:
    from ..groups import Group

log = logging.getLogger(__name__)

INVITES_SCOPE = "hosting-invites"
GROUPS_SCOPE = "hosting-groups"
DEVICES_SCOPE = "hosting-revoked-devices"
DAY = 86400.0
MAX_INVITES = 1024
UNKNOWN_GROUP = "this host keeps no such group for this invite (`cobox backup list` shows where it is kept)"


class Seeds(Protocol):
    """What the host needs of the daemon: its groups, and its seed entry and removal points."""

    def find(self, discovery_key: bytes) -> Group | None: ...
    def names(self) -> set[str]: ...
    async def add_seed(self, name: str, replication_key: bytes) -> Group: ...
    async def remove_seed(self, name: str) -> None: ...


class HostService:
    def __init__(self, store: Store, identity: DeviceIdentity, seeds: Seeds, *, limits: quota.Limits,
                 grace: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.identity = identity
        self.seeds = seeds
        self.limits = limits
        self.grace = grace
        self.clock = clock
        self.invites: dict[bytes, HostInvite] = {}
        self.hosted: dict[bytes, Hosted] = {}  # discovery key -> record
        self.revoked_devices: dict[bytes, float] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def load(self) -> None:
        """Read the records; a damaged one is skipped and reported, never fatal."""
        for key, value in (await self.store.records(INVITES_SCOPE)).items():
            try:
                inv = HostInvite.decode(value)
            except MalformedHostingError as e:
                log.warning("service invite record %s is damaged and skipped: %s", key[:16], e)
                continue
            self.invites[inv.id] = inv
        for key, value in (await self.store.records(GROUPS_SCOPE)).items():
            try:
                h = Hosted.decode(value)
            except MalformedHostingError as e:
                log.warning("hosted group record %s is damaged and skipped: %s", key[:16], e)
                continue
            self.hosted[h.discovery_key] = h
            self._attach(h)
        for key, value in (await self.store.records(DEVICES_SCOPE)).items():
            try:
                self.revoked_devices[bytes.fromhex(key)] = float(value.decode())
            except (ValueError, UnicodeDecodeError):
                log.warning("revoked device record %s is damaged; the device stays revoked from now", key[:16])
                if len(key) == 64 and all(c in "0123456789abcdef" for c in key):
                    self.revoked_devices[bytes.fromhex(key)] = self.clock()

    # -- invites ------------------------------------------------------------------------------

    async def make_invite(self, *, quota_mb: float, groups: int, expires_days: float, label: str = "") -> tuple[
            bytes, HostInvite]:
        """A new invite; returns its secret (for the URI only: it is not kept) and its record."""
        if quota_mb < 0 or groups < 0 or expires_days < 0:
            raise UsageError("--quota-mb, --groups and --expires must be 0 (no limit) or more")
        try:
            label = check_label(label)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if len(self.invites) >= MAX_INVITES:
            raise UsageError(f"this host has {MAX_INVITES} invites: revoke some first (`cobox service revoke`)")
        secret = new_secret()
        now = self.clock()
        inv = HostInvite(invite_id(secret), proof_key(secret), int(quota_mb * 1024 * 1024), groups,
                         now + expires_days * DAY if expires_days else 0.0, label, now)
        await self.store.put_record(INVITES_SCOPE, inv.id.hex(), inv.encode())
        self.invites[inv.id] = inv
        return secret, inv

    def listing(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for inv in sorted(self.invites.values(), key=lambda i: i.created):
            groups = [self._hosted_doc(h) for h in self.hosted.values() if h.invite == inv.id]
            out.append({"id": inv.id.hex(), "label": inv.label, "created": inv.created,
                        "expires": inv.expires or None, "expired": bool(inv.expires and now >= inv.expires),
                        "revoked": inv.revoked or None, "quota_bytes": inv.quota_bytes, "max_groups": inv.max_groups,
                        "used_bytes": sum(g["stored_bytes"] for g in groups),
                        "devices": sorted({g["device"] for g in groups}), "groups": groups})
        return out

    def _hosted_doc(self, h: Hosted) -> dict[str, Any]:
        group = self.seeds.find(h.discovery_key)
        st = self._state(h)
        return {"name": h.name, "discovery_key": h.discovery_key.hex(), "device": h.device.hex(), "added": h.added,
                "stored_bytes": group.stored_bytes() if group is not None else 0, "state": st.text,
                "revoked": h.revoked or None, "clears_at": h.revoked + self.grace if h.revoked else None}

    async def revoke(self, what: str) -> dict[str, Any]:
        """Revoke an invite or a device (by id or a prefix of at least 6 hex digits)."""
        what = what.strip().lower()
        if len(what) < 6 or any(c not in "0123456789abcdef" for c in what):
            raise UsageError("give an invite id or a device id (at least 6 hex digits; `cobox service list`)")
        invites = [i for i in self.invites if i.hex().startswith(what)]
        devices = sorted({h.device for h in self.hosted.values() if h.device.hex().startswith(what)})
        if len(what) == 64 and not devices:
            devices = [bytes.fromhex(what)]  # a device that keeps nothing here yet: it gets nothing new
        if len(invites) + len(devices) != 1:
            raise UsageError(f"{what!r} names {'no' if not invites + devices else 'more than one'} invite or device "
                             "here: give more of its id (`cobox service list`)")
        now = self.clock()
        async with self._lock:
            if invites:
                inv = self.invites[invites[0]]
                if not inv.revoked:
                    inv = HostInvite(inv.id, inv.proof_key, inv.quota_bytes, inv.max_groups, inv.expires, inv.label,
                                     inv.created, now)
                    self.invites[inv.id] = inv
                    await self.store.put_record(INVITES_SCOPE, inv.id.hex(), inv.encode())
                hit = [h for h in self.hosted.values() if h.invite == inv.id]
                kind, ident = "invite", inv.id
            else:
                device = devices[0]
                self.revoked_devices.setdefault(device, now)
                await self.store.put_record(DEVICES_SCOPE, device.hex(), str(self.revoked_devices[device]).encode())
                hit = [h for h in self.hosted.values() if h.device == device]
                kind, ident = "device", device
            for h in hit:
                if not h.revoked:
                    await self._put(Hosted(h.discovery_key, h.invite, h.device, h.name, h.added, now))
        self._recheck()
        self._wake.set()
        log.info("revoked %s %s: %d group(s) take no new data, cleared in %.0f s", kind, ident.hex()[:16], len(hit),
                 self.grace)
        return {"revoked": kind, "id": ident.hex(), "groups": [h.name for h in hit], "clears_in": self.grace}

    # -- the service ----------------------------------------------------------------------------

    async def handle(self, peer: Any, body: bytes) -> bytes:
        try:
            req = Request.decode(body)
        except MalformedHostingError as e:
            netview.disconnect(peer, str(e))
            raise ServiceError(str(e)) from None
        handshake_hash, we_dialed = netview.session(peer)
        inv = self.invites.get(req.invite)
        proof_ok = inv is not None and check_proof(inv.proof_key, handshake_hash, not we_dialed, req.op, req.subject,
                                                   req.proof)
        device = bytes(peer.remote_peer_id)
        if req.op == Op.ADD:
            return (await self._add(inv, proof_ok, device, req.subject)).encode()
        hosted = self.hosted.get(req.subject)
        if inv is None or not proof_ok or hosted is None or hosted.invite != inv.id:
            raise ServiceError(UNKNOWN_GROUP if proof_ok else quota.NO_INVITE)
        if req.op == Op.STATUS:
            return self.statement(hosted).encode()
        await self._remove(hosted)
        log.info("group %s removed at the request of device %s", hosted.name, device.hex()[:16])
        return self.statement(hosted, State.REMOVED).encode()

    async def _add(self, inv: HostInvite | None, proof_ok: bool, device: bytes, replication_key: bytes) -> Statement:
        dk = GroupKeys.from_replication_key(replication_key).discovery_key
        async with self._lock:
            use = self._use(inv.id) if inv is not None else quota.Use(0, 0)
            reason = quota.refuse_add(inv, proof_ok, use, now=self.clock(),
                                      already_kept=self.seeds.find(dk) is not None or dk in self.hosted,
                                      hosted_total=len(self.hosted), limits=self.limits)
            if reason is None and device in self.revoked_devices:
                reason = "this host revoked this device: ask the host's owner"
            if reason is not None:
                raise ServiceError(reason)
            assert inv is not None
            name = self._free_name(dk)
            try:
                await self.seeds.add_seed(name, replication_key)
            except CoboxError as e:
                raise ServiceError(f"this host could not keep the group: {e}") from None
            hosted = Hosted(dk, inv.id, device, name, self.clock())
            await self._put(hosted)
            self._attach(hosted)
        log.info("keeping group %s for invite %s (device %s)", name, inv.id.hex()[:16], device.hex()[:16])
        return self.statement(hosted)

    def statement(self, hosted: Hosted, state: State | None = None) -> Statement:
        group = self.seeds.find(hosted.discovery_key)
        inv = self.invites.get(hosted.invite)
        group_bytes = group.stored_bytes() if group is not None else 0
        invite_bytes = self._use(hosted.invite).bytes
        return Statement(self.identity.peer_id, hosted.discovery_key, hosted.invite, hosted.device,
                         state or self._state(hosted), group_bytes,
                         quota.group_quota(inv, invite_bytes, group_bytes, self.limits),
                         int(self.clock() * 1000)).signed(self.identity.sign)

    # -- quota --------------------------------------------------------------------------------

    def _use(self, invite: bytes) -> quota.Use:
        groups = [h for h in self.hosted.values() if h.invite == invite]
        found = [self.seeds.find(h.discovery_key) for h in groups]
        return quota.Use(len(groups), sum(g.stored_bytes() for g in found if g is not None))

    def _state(self, hosted: Hosted) -> State:
        group = self.seeds.find(hosted.discovery_key)
        if group is None:
            return State.REMOVED  # the host's owner removed the seed (`cobox seed remove`)
        group_bytes = group.stored_bytes() if group is not None else 0
        st = quota.state(self.invites.get(hosted.invite), hosted, self._use(hosted.invite).bytes, group_bytes,
                         self.limits)
        if st is State.ACTIVE and group is not None and group.quota_bytes and group_bytes >= group.quota_bytes:
            return State.FULL  # the host's [backup] quota_mb for every seed
        return st

    def _attach(self, hosted: Hosted) -> None:
        group = self.seeds.find(hosted.discovery_key)
        if group is None:
            return
        dk = hosted.discovery_key
        group.limit = lambda: dk in self.hosted and self._state(self.hosted[dk]) is not State.ACTIVE
        group.check_quota()

    def _recheck(self) -> None:
        for h in self.hosted.values():
            group = self.seeds.find(h.discovery_key)
            if group is not None:
                group.check_quota()

    # -- records and clearing ---------------------------------------------------------------------

    def _free_name(self, dk: bytes) -> str:
        taken = self.seeds.names()
        for n in (8, 16, 64):
            name = f"hosted-{dk.hex()[:n]}"
            if name not in taken:
                return name
        raise ServiceError("this host has a group of that name already")

    async def _put(self, hosted: Hosted) -> None:
        self.hosted[hosted.discovery_key] = hosted
        await self.store.put_record(GROUPS_SCOPE, hosted.discovery_key.hex(), hosted.encode())

    async def _remove(self, hosted: Hosted) -> None:
        async with self._lock:
            if self.hosted.pop(hosted.discovery_key, None) is None:
                return
            await self.store.delete_record(GROUPS_SCOPE, hosted.discovery_key.hex())
            if hosted.name in self.seeds.names():
                await self.seeds.remove_seed(hosted.name)
        self._recheck()  # the invite's other groups may take data again

    def next_clearing(self) -> float | None:
        due = [h.revoked + self.grace for h in self.hosted.values() if h.revoked]
        return min(due) if due else None

    async def clear_due(self) -> list[str]:
        """Clear every revoked group whose grace period is over; return their names."""
        now = self.clock()
        done = []
        for h in [h for h in self.hosted.values() if h.revoked and h.revoked + self.grace <= now]:
            await self._remove(h)
            log.info("cleared group %s: revoked %.0f s ago", h.name, now - h.revoked)
            done.append(h.name)
        return done

    async def run(self) -> None:
        """The sweeper (a supervised service): clear revoked groups when their grace ends."""
        while True:
            due = self.next_clearing()
            try:
                async with asyncio.timeout(None if due is None else max(0.0, due - self.clock())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.clear_due()
