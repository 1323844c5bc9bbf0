"""The daemon: one process that owns the store, the node, discovery and the control API.

Theory of operation
-------------------
``Daemon.run()`` takes the home's lock (a second daemon on the same home refuses to start),
loads the device identity and the store, listens for peers, starts the DHT node and LAN
discovery (when enabled), the swarm, and the control API; then rejoins every group it knows.
It runs until SIGINT/SIGTERM or an API stop request, then shuts down in reverse order: the API
stops taking requests, the swarm leaves its topics, connections close, the store commits what
is queued and closes.

Groups (name -> group address, or replication key for a backup peer) are records in the store;
their secrets never leave the home directory except through ``group invite``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from networker.address import Address, parse
from networker.errors import NetworkError
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.limits import ConnectionLimits
from networker.node import Node, PeerEvent
from networker.penalty import PenaltyPolicy
from networker.sources import DhtSource, LanSource
from networker.swarm import Discovery, Swarm
from storage import Store

from . import config as configuration
from .backup.audit import SERVICE as AUDIT_SERVICE
from .backup.audit import AuditServer
from .backup.keyring import GroupSecret, Keyring
from .backup.service import SERVICE as RECOVERY_SERVICE
from .backup.service import (
    RecoveryServer,
    backup_keys,
    backup_peer_address,
    pinned_address,
    restore_keys,
)
from .errors import (
    CoboxError,
    ConfigError,
    DaemonRunningError,
    GroupExistsError,
    GroupNotFoundError,
    NotAMemberError,
    UsageError,
)
from .folders.disk import DiskReserve
from .folders.sync import FolderSync
from .groups import GROUPS_SCOPE, Group, decode_info, encode_info
from .paths import Home, write_private
from .relaying import Relaying, expand_wildcard
from .uri import Invite, validate_name

FOLDERS_SCOPE = "folders"

log = logging.getLogger("cobox.daemon")


class Daemon:
    def __init__(self, home: Path, config: dict[str, dict[str, Any]]) -> None:
        self.home = Home(home)
        self.config = config
        self.started = time.time()
        self.groups: dict[str, Group] = {}
        self.events: list[dict[str, Any]] = []  # recent peer events, for status and the dashboard
        self._stop = asyncio.Event()
        self._lock_fd: int | None = None
        self.identity: DeviceIdentity
        self.store: Store
        self.node: Node
        self.swarm: Swarm
        self.dht: Any = None
        self.lan: Any = None
        self.api: Any = None
        self.listen_addresses: list[str] = []
        self.recovery: RecoveryServer | None = None
        self.restart_requested = False
        self.folders: dict[str, FolderSync] = {}
        self.relaying: Relaying | None = None

    # -- life -------------------------------------------------------------------------------

    def lock(self) -> None:
        os.umask(0o077)  # every file and directory the daemon makes is this user's alone
        self.home.ensure()
        changes = self.home.tighten()
        if changes:
            log.warning("the home %s was open to other users: tightened %d mode(s) to this user only: %s",
                        self.home.root, len(changes), "; ".join(changes[:5]) + ("; ..." if len(changes) > 5 else ""))
        fd = os.open(self.home.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonRunningError(f"another cobox daemon is running with home {self.home.root}") from None
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        self.lock()
        try:
            await self._start()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
            if ready is not None:
                ready.set()
            await self._stop.wait()
            log.info("shutting down")
        finally:
            await self._shutdown()
            self.unlock()

    async def _start(self) -> None:
        cfg = self.config
        self.identity = DeviceIdentity.load_or_create(self.home.identity)
        self.store = await Store.open(self.home.root, durability=cfg["storage"]["durability"])
        self.node = Node(self.identity, self.store, **connection_limits(cfg["network"]))
        self.node.on_event.append(self._on_peer_event)
        for address in cfg["network"]["listen"]:
            self.listen_addresses += await self.node.listen(
                address, handshake_timeout=cfg["network"]["handshake_timeout"])
        sources: list[Discovery] = []
        if cfg["dht"]["enabled"]:
            self.dht = await self._start_dht()
            if self.dht is not None:
                sources.append(self.dht)
        if cfg["lan"]["enabled"]:
            self.lan = await self._start_lan()
            if self.lan is not None:
                sources.append(self.lan)
        sw = cfg["swarm"]
        self.swarm = Swarm(self.node, sources, advertised=self.advertised,
                           lookup_interval=sw["lookup_interval"], reconnect_base=sw["reconnect_base"],
                           reconnect_max=sw["reconnect_max"], give_up_after=sw["give_up_after"],
                           dial_rate=sw["dial_rate"], dial_burst=sw["dial_burst"])
        self.relaying = Relaying(cfg["relay"], self.node, self.dht, self.swarm, self.advertised,
                                 lambda a: expand_wildcard(a, _local_ips))
        await self.relaying.start()
        self.node.services[AUDIT_SERVICE] = AuditServer(
            lambda dk: next((g for g in self.groups.values() if g.discovery_key == dk), None)).handle
        for name, value in (await self.store.records(GROUPS_SCOPE)).items():
            keys, created = decode_info(value)
            await self._activate(name, keys, created)
        for name, path in (await self.store.records(FOLDERS_SCOPE)).items():
            if name in self.groups:
                await self._start_folder(self.groups[name], Path(path.decode()))
        if cfg["backup"]["recovery_server"]:
            self.recovery = RecoveryServer(self.store, self.identity.peer_id,
                                           allowed_peers=_peer_ids(cfg["backup"]["recovery_allow"]))
            await self.recovery.load()
            self.node.services[RECOVERY_SERVICE] = self.recovery.handle
        from .control.server import ControlServer

        self.api = ControlServer(self)
        await self.api.start()
        log.info("device %s, listening on %s", self.identity.peer_id.hex()[:16], ", ".join(self.listen_addresses))

    async def _start_dht(self) -> Any:
        from networker.dht import DHT

        d = self.config["dht"]
        bootstrap = [_host_port(b) for b in d["bootstrap"]]
        dht = DHT(self.identity, host=d["host"], port=d["port"], bootstrap=bootstrap,
                  state_path=self.home.dht_state, rpc_timeout=d["rpc_timeout"], record_ttl=d["record_ttl"],
                  allow_loopback=d["allow_loopback"])
        await dht.start()
        return DhtSource(dht)

    async def _start_lan(self) -> Any:
        try:
            from networker.lan import LanDiscovery
        except ImportError:
            log.warning("LAN discovery is not available in this build")
            return None
        port = next((a.port for a in self._tcp_listen() if a.port), 0)
        if not port:
            return None
        lan = LanDiscovery(self.identity.peer_id, port, on_peer=self._on_lan_peer,
                           interfaces=self._lan_interfaces())
        try:
            await lan.start()
        except (OSError, NetworkError) as e:
            log.warning("LAN discovery could not start: %s", e)
            return None
        return LanSource(lan)

    def _lan_interfaces(self) -> list[str] | None:
        hosts = {a.host for a in self._tcp_listen()}
        if hosts and all(ipaddress.ip_address(h).is_loopback for h in hosts if _is_ip(h)):
            return sorted(hosts)
        return None

    def _on_lan_peer(self, topic: bytes, peer_id: bytes, address: str) -> None:
        self.swarm.add_candidate(topic, peer_id, address, "lan")

    async def _shutdown(self) -> None:
        steps = (self._stop_api, self._stop_folders, self._stop_swarm, self._stop_relaying, self._stop_node,
                 self._stop_discovery, self._stop_store)
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("error during shutdown")

    async def _stop_api(self) -> None:
        if self.api is not None:
            await self.api.stop()

    async def _stop_folders(self) -> None:
        for f in list(self.folders.values()):
            await f.stop()

    async def _stop_swarm(self) -> None:
        if hasattr(self, "swarm"):
            await self.swarm.close()

    async def _stop_relaying(self) -> None:
        if self.relaying is not None:
            await self.relaying.close()

    async def _stop_node(self) -> None:
        if hasattr(self, "node"):
            await self.node.close()

    async def _stop_discovery(self) -> None:
        for d in (self.lan, self.dht):
            if d is not None:
                await d.stop()

    async def _stop_store(self) -> None:
        if hasattr(self, "store"):
            await self.store.close()

    # -- addresses ----------------------------------------------------------------------------

    def _tcp_listen(self) -> list[Address]:
        out = []
        for text in self.listen_addresses:
            for alt in parse(text).alternatives:
                if alt.transport == "tcp":
                    out.append(alt)
        return out

    def advertised(self) -> list[str]:
        """The addresses peers can dial: wildcard binds expanded to this machine's addresses."""
        out: list[str] = []
        for text in self.listen_addresses:
            for alt in parse(text).alternatives:
                if alt.transport == "tcp" and alt.host in ("0.0.0.0", "::"):
                    for ip in _local_ips(v6=alt.host == "::"):
                        out.append(Address("tcp", host=ip, port=alt.port, peer_key=alt.peer_key).format())
                else:
                    out.append(alt.format())
        # Dial the most local first: a peer on this machine or network need not go further.
        order = {"device": 0, "local": 1, "public": 2}
        relayed = self.relaying.relayed_addresses() if self.relaying is not None else []
        return sorted(out, key=lambda a: order[parse(a).alternatives[0].scope])[:8 - len(relayed)] + relayed

    # -- groups -------------------------------------------------------------------------------

    def group(self, name: str) -> Group:
        try:
            return self.groups[name]
        except KeyError:
            raise GroupNotFoundError(f"no group named {name!r}") from None

    async def create_group(self, name: str) -> Group:
        return await self.add_group(validate_name(name), GroupKeys.from_address(os.urandom(32)))

    async def join(self, invite: Invite, name: str | None = None) -> Group:
        if invite.kind == "join":
            keys = GroupKeys.from_address(invite.key)
            name = validate_name(name or invite.name or f"group-{keys.discovery_key.hex()[:8]}")
        else:
            keys = GroupKeys.from_replication_key(invite.key)
            name = validate_name(name or f"seed-{keys.discovery_key.hex()[:8]}")
        return await self.add_group(name, keys)

    async def add_group(self, name: str, keys: GroupKeys) -> Group:
        if name in self.groups:
            raise GroupExistsError(f"a group named {name!r} already exists")
        for g in self.groups.values():
            if g.discovery_key == keys.discovery_key:
                raise GroupExistsError(f"this device already has that group, as {g.name!r}")
        created = time.time()
        await self.store.put_record(GROUPS_SCOPE, name, encode_info(keys, created))
        return await self._activate(name, keys, created)

    async def _activate(self, name: str, keys: GroupKeys, created: float) -> Group:
        group = Group(self.store, name, keys, self.identity, created,
                      quota_bytes=int(self.config["backup"]["quota_mb"] * 1024 * 1024),
                      audit_interval=self.config["backup"]["audit_interval"],
                      max_feeds_per_device=self.config["groups"]["max_feeds_per_device"],
                      max_feeds=self.config["backup"]["max_feeds"])
        await group.load()
        self.groups[name] = group
        self.node.join(group)
        self.swarm.join(group.discovery_key)
        return group

    # -- folders ------------------------------------------------------------------------------

    async def _start_folder(self, group: Group, root: Path) -> FolderSync:
        sync = FolderSync(group, root, min_disk_free=DiskReserve.parse(self.config["folders"]["min_disk_free"]))
        try:
            await sync.start()
        except (OSError, CoboxError) as e:
            log.warning("folder %s of group %s not started: %s", root, group.name, e)
            sync.error = sync.last_error = str(e)
        self.folders[group.name] = sync
        return sync

    async def add_folder(self, name: str, path: str) -> FolderSync:
        group = self.group(name)
        if not group.is_member:
            raise NotAMemberError(f"{name!r} is backed up here, not joined: it has no folder to show")
        if name in self.folders:
            raise GroupExistsError(f"group {name!r} already has a folder: {self.folders[name].root}")
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"{root} is not a directory")
        for f in self.folders.values():
            if root == f.root or root in f.root.parents or f.root in root.parents:
                raise UsageError(f"{root} overlaps the folder of group {f.group.name!r}")
        await self.store.put_record(FOLDERS_SCOPE, name, str(root).encode())
        return await self._start_folder(group, root)

    def folder(self, name: str) -> FolderSync:
        try:
            return self.folders[name]
        except KeyError:
            raise GroupNotFoundError(f"group {name!r} has no folder here") from None

    async def remove_folder(self, name: str) -> None:
        sync = self.folder(name)
        await sync.stop()
        del self.folders[name]
        await self.store.delete_record(FOLDERS_SCOPE, name)

    async def leave_group(self, name: str) -> None:
        if name in self.folders:
            await self.remove_folder(name)
        group = self.group(name)
        await self.swarm.leave(group.discovery_key)
        self.node.leave(group.discovery_key)
        del self.groups[name]
        group.audits.close()
        await self.store.delete_record(GROUPS_SCOPE, name)

    def sync_state(self, group: Group) -> dict[str, Any]:
        missing = 0
        peers = 0
        settled = True
        for peer in self.node.peers.values():
            for ch in peer.channels.values():
                if ch.group is group and ch.live:
                    peers += 1
                    m, s = ch.missing()
                    missing += m
                    settled = settled and s
        have = sum(len(f.have) for f in group.feeds())
        folder = self.folders.get(group.name)
        pending = folder.pending_downloads if folder is not None else 0
        doc = {"group": group.name, "peers": peers, "have": have, "missing": missing, "folder_pending": pending,
               "synced": peers > 0 and settled and missing == 0 and pending == 0}
        if folder is not None:
            doc["folder_bytes"] = sum(v.size for v in folder.state.files.values())
            doc["folder_pending_bytes"] = folder.pending_bytes
        return doc

    # -- events -------------------------------------------------------------------------------

    def _on_peer_event(self, event: PeerEvent) -> None:
        log.info("peer %s %s%s", event.peer_id.hex()[:16], event.kind,
                 f": {event.reason}" if event.reason else "")
        self.events.append({"time": time.time(), "kind": event.kind, "peer": event.peer_id.hex(),
                            "reason": event.reason})
        del self.events[:-100]

    # -- key backup and recovery --------------------------------------------------------------

    def keyring(self) -> Keyring:
        groups = {}
        for name, g in self.groups.items():
            if g.keys.address is not None:
                groups[name] = GroupSecret("address", g.keys.address)
            else:
                groups[name] = GroupSecret("replication_key", g.keys.replication_key)
        return Keyring(self.identity.seed, groups)

    async def _backup_peer(self, address: str, trust_first_use: bool) -> tuple[Any, str | None]:
        """Connect to a backup peer; with ``trust_first_use`` and no key in ``address``, also
        the address pinned to the key it presented (to show the user)."""
        addr = backup_peer_address(address, trust_first_use=trust_first_use)
        peer = await self.node.connect(addr)
        unpinned = any(a.peer_key is None for a in addr.alternatives)
        return peer, (pinned_address(addr, peer.remote_peer_id) if unpinned else None)

    async def backup_keys(self, address: str, username: str, password: str,
                          trust_first_use: bool = False) -> str | None:
        from .backup import kdf

        strength = self.config["backup"]["keys_strength"]
        params = {"interactive": kdf.INTERACTIVE, "moderate": kdf.MODERATE, "sensitive": kdf.CEILING}.get(strength)
        if params is None:
            raise ConfigError(f"backup.keys_strength must be interactive, moderate or sensitive, not {strength!r}")
        peer, pinned = await self._backup_peer(address, trust_first_use)
        await backup_keys(peer, username, password, self.keyring(), params)
        return pinned

    async def restore_keys(self, address: str, username: str, password: str,
                           trust_first_use: bool = False) -> dict[str, Any]:
        """Recover the keyring, make its identity this device's and add its groups; the daemon
        then restarts itself under the recovered identity and rejoins every group."""
        peer, pinned = await self._backup_peer(address, trust_first_use)
        keyring = await restore_keys(peer, username, password)
        DeviceIdentity.from_seed(keyring.identity_seed).save(self.home.identity)
        known = await self.store.records(GROUPS_SCOPE)
        added = []
        for name, secret in keyring.groups.items():
            if name in known:
                continue
            keys = (GroupKeys.from_address(secret.key) if secret.kind == "address"
                    else GroupKeys.from_replication_key(secret.key))
            await self.store.put_record(GROUPS_SCOPE, name, encode_info(keys, time.time()))
            added.append(name)
        self.restart_requested = True
        asyncio.get_running_loop().call_later(0.2, self.stop)
        return {"peer_id": bytes(DeviceIdentity.from_seed(keyring.identity_seed).peer_id).hex(),
                "groups": sorted(keyring.groups), "added": added, "restarting": True, "pinned": pinned}

    async def connect(self, address: str) -> bytes:
        peer = await self.node.connect(address)
        return peer.remote_peer_id

    def write_api_files(self, port: int, token: str) -> None:
        write_private(self.home.token, token.encode())
        write_private(self.home.api_port, str(port).encode())


def _peer_ids(texts: list[str]) -> set[bytes]:
    """``[backup] recovery_allow``: peer ids (64 hex digits) that may register key backups."""
    try:
        ids = {bytes.fromhex(t) for t in texts}
    except ValueError:
        ids = set()
    if any(len(i) != 32 for i in ids) or len(ids) != len(set(texts)):
        raise ConfigError("backup.recovery_allow must list peer ids of 64 hex digits")
    return ids


def connection_limits(net: dict[str, Any]) -> dict[str, Any]:
    """``Node``'s ``limits`` and ``penalties`` from the ``[network]`` settings."""
    try:
        return {
            "limits": ConnectionLimits(
                max_connections=net["max_connections"], group_reserve=net["group_reserve"],
                max_per_ip=net["max_per_ip"], idle_timeout=net["idle_timeout"],
                max_pending=net["max_pending"], max_pending_per_ip=net["max_pending_per_ip"]),
            "penalties": PenaltyPolicy(base=net["refuse_seconds"], cap=net["refuse_max_seconds"]),
        }
    except ValueError as e:
        raise ConfigError(f"[network]: {e}") from None


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"bad bootstrap address {text!r} (expected HOST:PORT)")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _local_ips(v6: bool) -> list[str]:
    ips = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == ("AF_INET6" if v6 else "AF_INET"):
                ip = a.address.split("%")[0]
                if v6 and ipaddress.ip_address(ip).is_link_local:
                    continue
                ips.append(ip)
    return ips or (["::1"] if v6 else ["127.0.0.1"])


def load_config(home: Path, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    return configuration.load(home, overrides=overrides)
