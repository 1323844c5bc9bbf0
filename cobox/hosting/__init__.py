"""Backup as a service: a member asks an always-on host to keep a group, by a service invite.

Modules: :mod:`~cobox.hosting.invites` (the capability and the records), :mod:`~cobox.hosting.messages`
(the ``hosting`` service's wire and the host's signed statements), :mod:`~cobox.hosting.quota`
(pure quota decisions), :mod:`~cobox.hosting.host` (the host's service), :mod:`~cobox.hosting.member`
(the member's ``backup add|list|remove``). :class:`Hosting` wires both sides to the daemon: the
host keeps groups through the daemon's seed entry point (``add_group`` with a replication key)
and drops them through its removal path (``leave_group``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from networker import GroupKeys

from .. import netview
from ..uri import BackupInvite
from .host import DAY, HostService
from .member import DIAL_TIMEOUT, MemberBackups
from .messages import SERVICE
from .quota import Limits

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..groups import Group

MIB = 1024 * 1024


class DaemonSeeds:
    """:class:`~cobox.hosting.host.Seeds` over the daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def find(self, discovery_key: bytes) -> Group | None:
        return next((g for g in self.d.groups.values() if g.discovery_key == discovery_key), None)

    def names(self) -> set[str]:
        return set(self.d.groups)

    async def add_seed(self, name: str, replication_key: bytes) -> Group:
        return await self.d.add_group(name, GroupKeys.from_replication_key(replication_key))

    async def remove_seed(self, name: str) -> None:
        await self.d.leave_group(name)


class DaemonNet:
    """:class:`~cobox.hosting.member.Net` over the daemon's node and swarm."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    async def connect(self, address: str) -> Any:
        return await self.d.node.connect(address, timeout=DIAL_TIMEOUT)

    def connected(self, peer_id: bytes) -> Any | None:
        return netview.find_peer(self.d.node, peer_id)

    def add_candidate(self, discovery_key: bytes, peer_id: bytes, address: str) -> None:
        self.d.swarm.add_candidate(discovery_key, peer_id, address, "backup host")


class Hosting:
    """Both sides of backup as a service on one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        cfg = daemon.config.hosting
        self.d = daemon
        self.config = cfg
        self.host = HostService(daemon.store, daemon.identity, DaemonSeeds(daemon),
                                limits=Limits(int(cfg.group_quota_mb * MIB), cfg.max_groups),
                                grace=cfg.revoke_grace_days * DAY)
        self.member = MemberBackups(daemon.store, daemon.identity.peer_id, DaemonNet(daemon))

    async def start(self) -> None:
        await self.host.load()
        await self.member.load()
        if self.config.enabled:
            self.d.node.services[SERVICE] = self.host.handle

    async def invite(self, quota_mb: float | None, groups: int | None, expires_days: float | None,
                     label: str) -> dict[str, Any]:
        cfg = self.config
        secret, inv = await self.host.make_invite(
            quota_mb=cfg.invite_quota_mb if quota_mb is None else quota_mb,
            groups=cfg.invite_groups if groups is None else groups,
            expires_days=cfg.invite_expires_days if expires_days is None else expires_days, label=label)
        hints = self.d.invite("seed", bytes(32))  # where this device can be reached, as group invites say
        uri = BackupInvite(self.d.identity.peer_id, secret).with_hints(list(hints.peers), list(hints.dht))
        return {"uri": uri.format(), "id": inv.id.hex(), "label": inv.label, "quota_bytes": inv.quota_bytes,
                "max_groups": inv.max_groups, "expires": inv.expires or None, "enabled": self.config.enabled}
