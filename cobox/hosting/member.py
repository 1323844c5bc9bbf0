"""The member's side of backup as a service: ``cobox backup add|list|remove``.

Theory of operation
-------------------
``add GROUP URI``:

1. parse the service invite (:func:`cobox.uri.parse_backup_invite`): the host's key, the
   capability secret, the host's addresses (each names the host's key);
2. reach the host: an open connection to that key, else each address in turn; the Noise
   handshake checks the key, so a device answering there with another key is refused
   (:class:`HostKeyMismatchError`, one line) and gets nothing;
3. call ADD with the group's *replication key* (never the address: the host can store and
   serve the group, not read it) and a proof of the invite bound to this connection;
4. verify the acceptance (signed by the pinned key, naming this group and invite), keep a
   :class:`~cobox.hosting.invites.BackupHost` record and tell the swarm where the host is, now
   and at every start, so the group's channel reaches it.

``list`` shows, per group and host, the latest signed statement (asked again when the host is
connected), the receipts and the audit (``Group.backup_status``). ``remove GROUP HOST`` asks the
host to drop the group (REMOVE), then forgets the record; an unreachable host keeps the record
(nothing is lost; try again).

Records: scope ``backup-hosts``, key ``<discovery key hex>:<host hex>``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from networker import NetworkError, PeerKeyMismatchError, ServiceError
from storage import Store

from .. import netview
from ..errors import HostingError, HostKeyMismatchError, HostRefusedError, HostUnreachableError, MalformedHostingError
from ..uri import BackupInvite
from .invites import BackupHost, invite_id, proof, proof_key
from .messages import SERVICE, Op, Request, State, Statement

if TYPE_CHECKING:
    from ..groups import Group

log = logging.getLogger(__name__)

SCOPE = "backup-hosts"
CALL_TIMEOUT = 30.0
LIST_TIMEOUT = 5.0
DIAL_TIMEOUT = 10.0


class Net(Protocol):
    """What the member needs of the daemon's network: dial, find an open connection, and tell
    the swarm where a group's backup host is."""

    async def connect(self, address: str) -> Any: ...
    def connected(self, peer_id: bytes) -> Any | None: ...
    def add_candidate(self, discovery_key: bytes, peer_id: bytes, address: str) -> None: ...


class MemberBackups:
    def __init__(self, store: Store, device_id: bytes, net: Net) -> None:
        self.store = store
        self.device_id = device_id
        self.net = net
        self.hosts: dict[tuple[bytes, bytes], BackupHost] = {}  # (discovery key, host) -> record

    async def load(self) -> None:
        for value in (await self.store.records(SCOPE)).values():
            try:
                rec = BackupHost.decode(value)
                if rec.statement:
                    Statement.decode(rec.statement)
            except MalformedHostingError as e:
                log.warning("a backup host record is damaged and skipped: %s", e)
                continue
            self.hosts[(rec.discovery_key, rec.host)] = rec
            self._tell_swarm(rec)

    def _tell_swarm(self, rec: BackupHost) -> None:
        for address in rec.peers:
            self.net.add_candidate(rec.discovery_key, rec.host, address)

    async def _put(self, rec: BackupHost) -> None:
        self.hosts[(rec.discovery_key, rec.host)] = rec
        await self.store.put_record(SCOPE, f"{rec.discovery_key.hex()}:{rec.host.hex()}", rec.encode())

    # -- talking to a host --------------------------------------------------------------------------

    async def _reach(self, host: bytes, peers: tuple[str, ...]) -> Any:
        peer = self.net.connected(host)
        if peer is not None:
            return peer
        reasons = []
        for address in peers:
            try:
                peer = await self.net.connect(address)
            except PeerKeyMismatchError:
                raise HostKeyMismatchError(f"the device at {address.split('~')[0]} answered with another key than "
                                           "the invite's host: nothing was sent; ask the host for a new invite "
                                           "(`cobox service invite`)") from None
            except (NetworkError, OSError, TimeoutError) as e:
                reasons.append(f"{address.split('~')[0]}: {e}")
                continue
            if bytes(peer.remote_peer_id) != host:  # the handshake pins it; never trust that alone
                raise HostKeyMismatchError("the backup host answered with another key than the invite's")
            return peer
        raise HostUnreachableError("could not reach the backup host" + (f" ({'; '.join(reasons)[:300]})" if reasons
                                   else " (the invite has no address of it and it is not connected)")
                                   + ": is it running? try again when it is online")

    async def _call(self, peer: Any, host: bytes, invite: bytes, key: bytes, op: Op, subject: bytes,
                    discovery_key: bytes, timeout: float = CALL_TIMEOUT) -> Statement:
        handshake_hash, we_dialed = netview.session(peer)
        body = Request(op, invite, proof(key, handshake_hash, we_dialed, op, subject), subject).encode()
        try:
            answer = await peer.call(SERVICE, body, timeout=timeout)
        except ServiceError as e:
            raise HostRefusedError(f"the backup host refused: {e}") from None
        except (NetworkError, TimeoutError) as e:
            raise HostUnreachableError(f"the backup host did not answer ({e or 'timed out'}): try again") from None
        try:
            return Statement.decode(answer).verify(host, discovery_key, invite)
        except MalformedHostingError as e:
            netview.disconnect(peer, str(e))
            raise

    # -- the commands ---------------------------------------------------------------------------

    async def add(self, group: Group, invite: BackupInvite) -> dict[str, Any]:
        dk = group.discovery_key
        if invite.host == self.device_id:
            raise HostingError("that service invite is this device's own: give it to another device")
        known = self.hosts.get((dk, invite.host))
        if known is not None and _state(known) is not State.REVOKED:  # a revoked one may be asked again
            raise HostingError(f"{group.name!r} is backed up on that host already (`cobox backup list`)")
        peer = await self._reach(invite.host, invite.peers)
        iid, key = invite_id(invite.secret), proof_key(invite.secret)
        st = await self._call(peer, invite.host, iid, key, Op.ADD, group.replication_key, dk)
        rec = BackupHost(dk, invite.host, iid, key, invite.peers, time.time(), st.encode())
        await self._put(rec)
        self._tell_swarm(rec)
        log.info("group %s: backed up on host %s", group.name, invite.host.hex()[:16])
        return self._doc(group, rec)

    async def listing(self, groups: list[Group]) -> list[dict[str, Any]]:
        by_key = {g.discovery_key: g for g in groups}
        out = []
        for (dk, host), rec in sorted(self.hosts.items()):
            group = by_key.get(dk)
            if group is None:
                continue
            peer = self.net.connected(host)
            if peer is not None:
                try:
                    st = await self._call(peer, host, rec.invite, rec.proof_key, Op.STATUS, dk, dk, LIST_TIMEOUT)
                    rec = BackupHost(dk, host, rec.invite, rec.proof_key, rec.peers, rec.added, st.encode())
                    await self._put(rec)
                except HostingError as e:
                    log.info("group %s: no status from host %s: %s", group.name, host.hex()[:16], e)
            out.append(self._doc(group, rec, connected=peer is not None))
        return out

    async def remove(self, group: Group, host: str) -> dict[str, Any]:
        host = host.strip().lower()
        found = [r for (dk, h), r in self.hosts.items() if dk == group.discovery_key and h.hex().startswith(host)]
        if not host or len(found) != 1:
            raise HostingError(f"{group.name!r} has {'no' if not found else 'more than one'} backup host matching "
                               f"{host!r}: give more of its id (`cobox backup list`)")
        rec = found[0]
        peer = await self._reach(rec.host, rec.peers)
        st = await self._call(peer, rec.host, rec.invite, rec.proof_key, Op.REMOVE, group.discovery_key,
                              group.discovery_key)
        if st.state is not State.REMOVED:
            raise MalformedHostingError("the backup host did not confirm the removal")
        del self.hosts[(rec.discovery_key, rec.host)]
        await self.store.delete_record(SCOPE, f"{rec.discovery_key.hex()}:{rec.host.hex()}")
        return {"group": group.name, "host": rec.host.hex(), "removed": True}

    def _doc(self, group: Group, rec: BackupHost, connected: bool | None = None) -> dict[str, Any]:
        st = Statement.decode(rec.statement).as_json() if rec.statement else {}
        receipts = next((p for p in group.backup_status() if p["peer"] == rec.host.hex()), None)
        doc: dict[str, Any] = {"group": group.name, "host": rec.host.hex(), "invite": rec.invite.hex(),
                               "added": rec.added, "addresses": list(rec.peers), **st,
                               "receipts": receipts}
        if connected is not None:
            doc["connected"] = connected
        return doc


def _state(rec: BackupHost) -> State | None:
    return Statement.decode(rec.statement).state if rec.statement else None
