"""The daemon: one process that owns the store, the node, discovery and the control API.

Theory of operation
-------------------
``Daemon.start()`` takes the home's lock (a second daemon on the same home refuses to start),
loads the device identity and the store, listens for peers, starts the DHT node and LAN
discovery (when enabled), the swarm, every group it knows (with its folder) and the control
API. Each of these is a service of one :class:`~cobox.supervisor.Supervisor`, spawned as soon
as the object exists, so whatever has started is also what gets stopped:

==================  =========  =====  ==============================================
service             restart    fatal  what it holds
==================  =========  =====  ==============================================
``store``           never      yes    watches the writer task; closes the store
``node``            never      no     the listeners and connections
``dht``, ``lan``    never      no     discovery
``swarm``           never      no     the swarm's dials (closes it)
``swarm:TOPIC``     backoff    no     a joined topic's announce/lookup loop
``receipts:NAME``   backoff    no     a group's receipt sender (``@EPOCH`` after a removal)
``audits:NAME``     never      no     stops a group's audit task at the end (same)
``epochs:NAME``     backoff    no     a group's epoch records scanner (cobox.removal)
``hosting``         backoff    no     clears revoked service groups (cobox.hosting)
``folder:NAME``     backoff    no     a folder (start retried; rounds have their own loop)
``api``             never      no     the control API and dashboard
==================  =========  =====  ==============================================

``Daemon.serve()`` runs until SIGINT/SIGTERM, an API stop request or a fatal failure (the store
writer died: nothing can be stored any more), then stops the services in reverse order (the API
first, the store last, after it committed what is queued) and releases the lock; after a fatal
failure it raises :class:`~cobox.errors.FatalServiceError`, whose one-line message the CLI
prints before it exits non-zero. ``status`` shows every service (state, restarts, last error).

Groups (name -> group address, or replication key for a backup peer) are records in the store;
their secrets never leave the home directory except through ``group invite``.

Parts with a module of their own: the home's lock (``cobox.homelock``), starting the DHT and LAN
discovery (``cobox.discovery``), the folders' services (``cobox.syncing``), a group's epochs
(``cobox.removal``, for which this class is the ``Host``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from networker import (
    DeviceIdentity,
    Discovery,
    GroupKeys,
    Node,
    PeerEvent,
    Reach,
    Swarm,
    listen_fixed,
)
from networker import parse_address as parse
from storage import Store

from . import addresses, bandwidth, devices, netview
from . import config as configuration
from .backup import device_keys
from .backup.audit import SERVICE as AUDIT_SERVICE
from .backup.audit import AuditServer
from .backup.keyring import Keyring
from .backup.service import SERVICE as RECOVERY_SERVICE
from .backup.service import RecoveryServer
from .controls import Controls
from .discovery import start_dht, start_lan
from .errors import FatalServiceError, GroupExistsError, GroupNotFoundError
from .folders import options as folder_options
from .folders.sync import FolderSync
from .groups import GROUPS_SCOPE, Group, decode_info, encode_info
from .homelock import HomeLock
from .hosting import Hosting
from .knownpeers import KnownPeers
from .paths import Home, write_private
from .relaying import Relaying, expand_wildcard
from .removal import Epochs, keep_given
from .settings import Config
from .supervisor import Backoff, Supervisor, hold
from .syncing import Syncing
from .twins import TwinGuard
from .uri import Invite, validate_name

log = logging.getLogger("cobox.daemon")


class Daemon:
    def __init__(self, home: Path, config: Config, *,
                 backoff: Backoff | None = None, api_factory: Callable[[Daemon], Any] | None = None) -> None:
        self.api_factory = api_factory
        self.home = Home(home)
        self.config = config
        self.started = time.time()
        self.groups: dict[str, Group] = {}  # the current epoch of each group
        self.epochs: dict[str, Epochs] = {}  # every epoch of each group (cobox.removal)
        self.events: list[dict[str, Any]] = []  # recent peer events, for status and the dashboard
        self._stop = asyncio.Event()
        self.home_lock = HomeLock(self.home)
        self.identity: DeviceIdentity
        self.store: Store
        self.node: Node
        self.swarm: Swarm
        self.controls: Controls
        self.dht: Any = None
        self.lan: Any = None
        self.api: Any = None
        self.listen_addresses: list[str] = []
        self.recovery: RecoveryServer | None = None
        self.restart_requested = False
        self.folders: dict[str, FolderSync] = {}  # kept by self.syncing (cobox.syncing)
        self.syncing: Syncing
        self.supervisor = Supervisor(on_fatal=self._on_fatal, backoff=backoff or Backoff())
        self._signals: list[int] = []
        self.relaying: Relaying | None = None
        self.hosting: Hosting | None = None
        self.device_name = ""  # this device's name in its groups (cobox.devices)
        self.twins = TwinGuard()  # two devices with one identity (cobox.twins)

    # -- life -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the daemon to stop (``serve()`` then shuts everything down and returns)."""
        self._stop.set()

    def _on_fatal(self, error: FatalServiceError) -> None:
        log.critical("%s", error)
        self.stop()

    async def run(self) -> None:
        """The whole life: ``start()`` then ``serve()``."""
        await self.start()
        await self.serve()

    async def start(self) -> None:
        """Take the lock and start every service; raise why it could not start (then whatever
        had started is stopped again and the lock released)."""
        self.home_lock.acquire()
        try:
            await self.supervisor.start()
            await self._start()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
                    self._signals.append(sig)
        except BaseException:
            await self._shutdown()
            raise

    async def serve(self) -> None:
        """Run until ``stop()`` or a fatal service failure, then shut down in reverse order;
        raise :class:`FatalServiceError` after a fatal failure."""
        try:
            await self._stop.wait()
            log.info("shutting down")
        finally:
            await self._shutdown()
        if self.supervisor.fatal is not None:
            raise self.supervisor.fatal

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        try:
            await self.supervisor.stop()
        finally:
            self.home_lock.release()

    async def _start(self) -> None:
        cfg = self.config
        sup = self.supervisor
        self.identity = DeviceIdentity.load_or_create(self.home.identity)
        self.store = store = await Store.open(self.home.root, durability=cfg.storage.durability)
        sup.spawn("store", lambda: hold(store.close, store.writer.watch), fatal=True)
        self.device_name = await devices.stored_name(store) or devices.default_name(cfg.device.name)
        self.node = node = Node(self.identity, self.store, **configuration.connection_limits(cfg.network))
        sup.spawn("node", lambda: hold(node.close))
        self.node.on_event.append(self._on_peer_event)
        self.controls = Controls(self.home.root, node, bandwidth.from_settings(cfg.network), lambda: self.groups,
                                 lambda: self.folders, lambda: self.swarm)
        self.controls.load()  # pauses and limits, before any group joins the node
        self.syncing = Syncing(self.folders, store, sup, self.controls, cfg.folders)
        self.syncing.served = lambda group: netview.bytes_served(node, [f.key for f in group.all_feeds()])
        self.twins.node = node
        self.node.on_event.append(self.twins.on_peer_event)
        for address in cfg.network.listen:
            self.listen_addresses += await listen_fixed(self.node, address, cfg.network.handshake_timeout)
        self.reach = reach = Reach(self.node, self.listen_addresses, allow_loopback=cfg.dht.allow_loopback,
                                   dht_contacts=lambda: len(self.dht.dht.contacts()) if self.dht is not None else 0,
                                   dht_port=lambda: self.dht.port if self.dht is not None else 0)
        self.reach.on_dht_contact = lambda ip, port: self._bootstrap([(ip, port)], "DHT join through a peer")
        self.reach.start()
        sup.spawn("reach", lambda: hold(reach.close))
        sources: list[Discovery] = []
        if cfg.dht.enabled:
            self.reach.bootstrap = tuple(cfg.dht.bootstrap)
            self.dht = await start_dht(self.identity, cfg.dht, self.home.dht_state)
            if self.dht is not None:
                sup.spawn("dht", lambda: hold(self.dht.stop))
                sources.append(self.dht)
        if cfg.lan.enabled:
            self.lan = await start_lan(self.identity, self.listen_addresses, self._on_lan_peer)
            if self.lan is not None:
                sup.spawn("lan", lambda: hold(self.lan.stop))
                sources.append(self.lan)
        if cfg.portmap.enabled:
            self.reach.start_portmap(gateway=cfg.portmap.gateway, udp_port=self.dht.port if self.dht else 0)
        sw = cfg.swarm
        self.swarm = swarm = Swarm(self.node, sources, advertised=self.advertised,
                                   lookup_interval=sw.lookup_interval, reconnect_base=sw.reconnect_base,
                                   reconnect_max=sw.reconnect_max, give_up_after=sw.give_up_after,
                                   dial_rate=sw.dial_rate, dial_burst=sw.dial_burst, spawner=sup)
        sup.spawn("swarm", lambda: hold(swarm.close))
        self.known_peers = known = KnownPeers(self.store, self.node)
        await known.load()
        sup.spawn("known-peers", known.run, restart="backoff")
        self.relaying = relaying = Relaying(cfg.relay, self.node, self.dht, self.swarm, self.advertised,
                                            lambda a: expand_wildcard(a, addresses.local_ips),
                                            dialed_back=self.reach.dialed_back,
                                            host_candidates=self.reach.host_candidates)
        await relaying.start()
        sup.spawn("relaying", lambda: hold(relaying.close))
        self.reach.extra_addresses.append(relaying.relayed_addresses)
        self.node.services[AUDIT_SERVICE] = AuditServer(self._by_discovery_key).handle
        for name, value in (await self.store.records(GROUPS_SCOPE)).items():
            keys, created = decode_info(value)
            await self._activate(name, keys, created)
        await self.syncing.resume(self.groups)
        self.hosting = hosting = Hosting(self)  # backup as a service: after the groups it keeps
        await hosting.start()
        sup.spawn("hosting", hosting.host.run, restart="backoff")
        if cfg.backup.recovery_server:
            self.recovery = RecoveryServer(self.store, self.identity.peer_id,
                                           allowed_peers=configuration.peer_ids(cfg.backup.recovery_allow))
            await self.recovery.load()
            self.node.services[RECOVERY_SERVICE] = self.recovery.handle
        if self.api_factory is not None:  # the control plane, composed by cobox.main
            self.api = api = self.api_factory(self)
            await api.start()
            sup.spawn("api", lambda: hold(api.stop))
        log.debug("device %s, listening on %s", self.identity.peer_id.hex()[:16], ", ".join(self.listen_addresses))

    def _on_lan_peer(self, topic: bytes, peer_id: bytes, address: str) -> None:
        self.swarm.add_candidate(topic, peer_id, address, "lan")

    def advertised(self) -> list[str]:
        """The addresses announced to the DHT (networker.reach.announce decides which)."""
        return self.reach.dht_addresses()

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
        group = await self.add_group(name, keys, invite.epochs)
        # The inviter, at addresses it could be reached at: a discovery source like the others, so a
        # daemon with discovery off (no DHT, no LAN) connects only where it is told to.
        for address in invite.peers if self.swarm.sources else ():
            self.swarm.add_candidate(group.discovery_key, parse(address).alternatives[0].peer_key or b"", address,
                                     "invite")
        if self.relaying is not None:
            self.relaying.learn(invite.peers)  # the inviter's relays serve this device too
        self._bootstrap(list(invite.dht), "DHT join through the invite's contacts")
        return group

    def _bootstrap(self, contacts: list[tuple[str, int]], what: str) -> None:
        if contacts and self.dht is not None:
            self.reach.run_soon(self.dht.dht.join(contacts), what)

    def invite(self, kind: str, key: bytes, name: str | None = None,
               epochs: tuple[tuple[bytes, ...], ...] = ()) -> Invite:
        """An invite carrying hints: where this device can be reached, DHT nodes to start from."""
        contacts = [(n.ip, n.port) for n in self.dht.dht.contacts()] if self.dht is not None else []
        return Invite(kind, key, name, epochs=epochs).with_hints(
            self.reach.dht_addresses(), self.reach.bootstrap_hints(contacts))

    async def add_group(self, name: str, keys: GroupKeys, given: tuple[tuple[bytes, ...], ...] = ()) -> Group:
        if name in self.groups:
            raise GroupExistsError(f"a group named {name!r} already exists")
        g = self._by_discovery_key(keys.discovery_key)
        if g is not None:
            raise GroupExistsError(f"this device already has that group, as {g.name!r}")
        created = time.time()
        await self.store.put_record(GROUPS_SCOPE, name, encode_info(keys, created))
        await keep_given(self.store, keys, given)  # an invite's chain of epochs (cobox.removal)
        return await self._activate(name, keys, created)

    async def _activate(self, name: str, keys: GroupKeys, created: float) -> Group:
        group = self.new_group(name, keys, created)
        epochs = self.epochs[name] = Epochs(self, group, names=lambda d: self._device_name_in(name, d))
        await epochs.load_given()  # joined by an invite made after a removal: genesis is a past epoch
        await self.start_epoch(group)
        self.groups[name] = group
        await epochs.load()  # a later epoch after a device removal: it becomes groups[name]
        self.supervisor.spawn(f"epochs:{name}", epochs.run, restart="backoff")
        return self.groups[name]

    # -- epochs (cobox.removal.Host) ----------------------------------------------------------

    def _device_name_in(self, name: str, device: bytes) -> str | None:
        """The name ``device`` published in any epoch of group ``name`` (cobox.devices)."""
        epochs = self.epochs.get(name)
        return next((n for g in (epochs.groups() if epochs else []) if (n := g.profiles.name_of(device))), None)

    def _by_discovery_key(self, dk: bytes) -> Group | None:
        """The group of ``dk`` in any epoch."""
        return next((g for e in self.epochs.values() for g in e.groups() if g.discovery_key == dk), None)

    def new_group(self, name: str, keys: GroupKeys, created: float) -> Group:
        return Group(self.store, name, keys, self.identity, created,
                     quota_bytes=self.config.backup.quota_bytes,
                     audit_interval=self.config.backup.audit_interval,
                     max_feeds_per_device=self.config.groups.max_feeds_per_device,
                     max_feeds=self.config.backup.max_feeds,
                     keep_days=self.config.backup.history_days)

    @staticmethod
    def _service(group: Group) -> str:
        return group.name if group.namespace == group.origin else f"{group.name}@{group.namespace[:8]}"

    async def start_epoch(self, group: Group) -> None:
        await group.load()
        group.twins = self.twins
        tag = self._service(group)
        self.controls.on_group(group)
        if not group.retired:  # nothing is written in a past epoch
            await group.profiles.publish(self.device_name)
        if group.is_member:
            self.supervisor.spawn(f"profiles:{tag}", group.profiles.run, restart="backoff")
        self.supervisor.spawn(f"receipts:{tag}", group.run_receipts, restart="backoff")
        self.supervisor.spawn(f"audits:{tag}", lambda: hold(group.audits.stop))
        self.node.join(group)
        if not self.controls.group_paused(group.name):
            self.swarm.join(group.discovery_key)

    async def switch(self, name: str, group: Group) -> None:
        self.groups[name] = group
        await self.syncing.move(name, group)  # the folder moves to the new epoch

    def reopen(self, group: Group, device: bytes) -> None:
        netview.open_channel(self.node, device, group)

    async def remove_device(self, name: str, device: str) -> dict[str, Any]:
        self.group(name)
        return await self.epochs[name].remove(device)

    # -- folders ------------------------------------------------------------------------------

    async def add_folder(self, name: str, path: str,
                         options: folder_options.FolderOptions | None = None) -> FolderSync:
        return await self.syncing.add(self.group(name), path, options)

    def folder(self, name: str) -> FolderSync:
        return self.syncing.get(name)

    async def remove_folder(self, name: str) -> None:
        await self.syncing.remove(name)

    async def leave_group(self, name: str, keep_data: bool = False) -> int:
        """Leave group ``name``; unless ``keep_data``, delete what this device stored for it
        (``Group.delete_data``). Returns the bytes of entry data deleted."""
        if name in self.folders:  # its released entries are stored again only if the data stays
            await self.syncing.remove(name, restore=keep_data)
        self.group(name)
        await self.supervisor.cancel(f"epochs:{name}")
        epochs = self.epochs.pop(name).groups()
        for group in epochs:
            await self.swarm.leave(group.discovery_key)
            self.node.leave(group.discovery_key)
            await self.supervisor.cancel(f"receipts:{self._service(group)}")
            await self.supervisor.cancel(f"audits:{self._service(group)}")
            await self.supervisor.cancel(f"profiles:{self._service(group)}")
            group.profiles.close()
        del self.groups[name]
        self.controls.forget_group(name)
        await self.store.delete_record(GROUPS_SCOPE, name)
        if keep_data:
            return 0
        return sum([await group.delete_data() for group in epochs])  # every epoch's feeds and records

    # -- events -------------------------------------------------------------------------------

    def _on_peer_event(self, event: PeerEvent) -> None:
        log.info("peer %s %s%s", event.peer_id.hex()[:16], event.kind,
                 f": {event.reason}" if event.reason else "")
        self.events.append({"time": time.time(), "kind": event.kind, "peer": event.peer_id.hex(),
                            "reason": event.reason})
        del self.events[:-100]

    # -- key backup and recovery --------------------------------------------------------------

    def keyring(self) -> Keyring:
        return device_keys.keyring(self.identity, self.groups, {n: str(f.root) for n, f in self.folders.items()})

    async def backup_keys(self, address: str, username: str, password: str,
                          trust_first_use: bool = False) -> str | None:
        ring = self.keyring()
        pinned = await device_keys.backup(self.node, self.config.backup.keys_strength, ring,
                                          address, username, password, trust_first_use)
        await device_keys.remember_backup(self.store, pinned or address, username, ring)
        return pinned

    async def restore_keys(self, address: str, username: str, password: str,
                           trust_first_use: bool = False, force: bool = False) -> dict[str, Any]:
        """Recover the keyring, make its identity this device's (refused over one in use unless
        ``force``) and add its groups; the daemon then restarts itself under the recovered
        identity and rejoins every group (its folders are bound by the client, once asked)."""
        result = await device_keys.restore(self.node, self.store, self.home.identity, address, username, password,
                                           trust_first_use, force)
        self.restart_requested = True
        # The API answers this request before it stops: shutdown stops the API server first,
        # and it finishes the requests in flight.
        self.stop()
        return result

    async def connect(self, address: str) -> bytes:
        """Connect to ``address`` and keep it as a known peer, redialled from now on."""
        peer = await self.node.connect(address)
        await self.known_peers.add(address, peer.remote_peer_id)
        return peer.remote_peer_id

    def write_api_files(self, port: int, token: str) -> None:
        write_private(self.home.token, token.encode())
        write_private(self.home.api_port, str(port).encode())


def load_config(home: Path, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    return configuration.load(home, overrides=overrides)
