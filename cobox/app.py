"""What the control plane may ask of a running device: the :class:`App` protocol, and the
daemon-backed :class:`DaemonApp`.

Theory of operation
-------------------
The control server (:mod:`cobox.control.server`) and the dashboard (:mod:`cobox.web.routes`)
know only :class:`App`: every answer is a JSON-ready document (built by the pure
:mod:`cobox.status`) or a small value; names of groups and folders go in, never live objects
come out, except :meth:`App.follow`, which hands a stream the group's feeds to watch.
:mod:`cobox.main` composes them: ``DaemonApp(daemon)`` -> ``ControlServer(app, ...)`` ->
``Dashboard(app, ...)``, so no import runs from the daemon up to the API. The API tests run the
server against a fake App in process (``tests/cobox/test_control.py``).

:class:`DaemonApp` is an adapter: it reads the :class:`~cobox.daemon.Daemon`'s groups, folders and
node, gathers networker's live state only through :mod:`cobox.netview`, and leaves business
logic where it lives (restore and history in :mod:`cobox.folders.history`, joins and leaves in
the daemon). Listeners registered through :meth:`App.subscribe` are removed by the function it
returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from networker import encode_key

from . import devices, netview, pauses
from . import status as docs
from .errors import UsageError
from .folders import conflicts as folder_conflicts
from .folders import gate as folder_gate
from .folders import history as folder_history
from .folders import options as folder_options
from .folders import prune as folder_prune
from .uri import parse_backup_invite, parse_invite

if TYPE_CHECKING:
    from .daemon import Daemon
    from .groups import Group
    from .hosting import Hosting

Doc = dict[str, Any]
REQUEST_WAIT = 20.0  # seconds a rescan, override or revert waits for the round that carries it out
RESTORE_WAIT = 20.0  # seconds a restore in place waits for the file to be written before it answers


@dataclass(frozen=True)
class ApiSettings:
    host: str
    port: int
    socket: str


class Followed(Protocol):
    """What ``log cat --follow`` watches (see :mod:`cobox.control.streams`)."""

    def feeds(self) -> list[Any]: ...

    def on_feed_added(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...

    async def log(self) -> list[Any]: ...


class App(Protocol):
    """A running device, as the control API and the dashboard see it."""

    # -- the device
    def api_settings(self) -> ApiSettings: ...
    def published(self, port: int, token: str) -> None:
        """The API listens on ``port`` with ``token``: make both known to local clients."""
    def status(self) -> Doc: ...
    def metrics(self) -> str: ...
    def stop(self) -> None: ...
    def peers(self) -> list[Doc]: ...
    async def connect(self, address: str) -> str: ...
    def known_peers(self) -> list[Doc]: ...
    async def forget_peer(self, peer: str) -> str: ...
    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback`` on each peer event (connected, left, refused); returns the unsubscribe."""
    def recent_events(self, n: int) -> list[Doc]: ...
    def device(self) -> Doc:
        """This device: ``{"id", "name"}``."""
    async def rename_device(self, name: str) -> Doc: ...
    async def device_list(self, group: str) -> list[Doc]: ...

    # -- groups
    def groups(self) -> list[Doc]: ...
    def group(self, name: str) -> Doc: ...
    async def create_group(self, name: str) -> Doc: ...
    async def join_group(self, uri: str, name: str | None) -> Doc: ...
    async def leave_group(self, name: str, keep_data: bool = False) -> Doc: ...
    async def remove_device(self, name: str, device: str) -> Doc: ...
    def invite(self, name: str, seed: bool) -> str: ...
    async def append(self, name: str, text: str) -> Doc: ...
    async def log(self, name: str) -> list[Doc]: ...
    def follow(self, name: str) -> Followed: ...
    def sync_state(self, name: str) -> Doc: ...
    def backup_status(self, name: str) -> list[Doc]: ...
    async def members(self, name: str) -> list[Doc]: ...
    def throughput_counters(self) -> dict[str, tuple[int, int]]:
        """Per group: (entries held, bytes received from peers), for the dashboard's plot."""
    def traffic(self) -> tuple[int, int]:
        """(bytes sent, bytes received) to and from all peers since start."""

    # -- folders
    def folders(self) -> list[Doc]: ...
    def folder(self, name: str) -> Doc: ...
    async def add_folder(self, group: str, path: str, kind: str | None = None, rescan: Any = None,
                         history_days: float | None = None) -> Doc: ...
    async def set_folder(self, name: str, kind: str | None, rescan: Any) -> Doc: ...
    async def folder_request(self, name: str, what: str) -> Doc:
        """``rescan`` now, ``override`` (send-only) or ``revert`` (receive-only); answers once a round
        carried it out (``done``), or after ``REQUEST_WAIT`` seconds with ``done`` false."""
    async def folder_prune(self, name: str) -> Doc: ...
    async def remove_folder(self, name: str) -> None: ...
    async def folder_history(self, name: str, file: str) -> list[Doc]: ...
    async def folder_restore(self, name: str, file: str, version: str | None, to: str | None,
                             force: bool = False) -> Doc: ...
    async def folder_files(self, name: str, query: str, limit: int) -> Doc: ...
    async def folder_conflicts(self, name: str) -> list[Doc]: ...
    async def resolve_conflict(self, name: str, copy: str, keep: str) -> Doc: ...
    def folder_changes(self) -> dict[str, float]:
        """Per folder (group name): the newest modification time among its files (0 if none)."""

    # -- key backup
    async def backup_keys(self, peer: str, user: str, password: str, trust_first_use: bool) -> str | None: ...
    async def restore_keys(self, peer: str, user: str, password: str, trust_first_use: bool,
                           force: bool = False) -> Doc: ...
    async def keys_backup_state(self) -> Doc | None:
        """The last keyring backup (peer, user, time) and whether it still covers this device."""

    # -- controls (cobox.controls)
    def pauses(self) -> Doc: ...
    async def pause(self, kind: str, name: str, paused: bool) -> Doc:
        """Pause (or resume) a group, folder or device; the pauses document."""
    def limits(self) -> Doc: ...
    def set_limits(self, change: Doc) -> Doc:
        """Change the bandwidth limits (the fields given; ``{"reset": true}``); the limits."""
    # -- backup as a service (cobox.hosting)
    async def service_invite(self, quota_mb: float | None, groups: int | None, expires_days: float | None,
                             label: str) -> Doc: ...
    def service_list(self) -> list[Doc]: ...
    async def service_revoke(self, what: str) -> Doc: ...
    async def backup_add(self, group: str, uri: str) -> Doc: ...
    async def backup_list(self) -> list[Doc]: ...
    async def backup_remove(self, group: str, host: str) -> Doc: ...


def invite_uri(daemon: Daemon, group: Group, seed: bool) -> str:
    """The invite of ``group``, with the hints of where this device can be reached."""
    if seed:
        return daemon.invite("seed", group.keys.replication_key).format()
    if group.keys.address is None:
        raise UsageError(f"{group.name!r} is backed up here, not joined: only a seed invite exists")
    if group.removal is not None:  # (cobox.removal) its keys are of an epoch the others left
        raise UsageError(f"this device was {group.removal['text']}: its invite would get nobody in")
    epochs = daemon.epochs.get(group.name)
    if epochs is None:
        return daemon.invite("join", group.keys.address, group.name).format()
    # After a removal: the genesis address and every epoch secret since (cobox.uri, "chain of epochs")
    assert epochs.genesis.keys.address is not None
    return daemon.invite("join", epochs.genesis.keys.address, group.name, epochs.invite_chain()).format()


class DaemonApp:
    """:class:`App` over a running :class:`~cobox.daemon.Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self._authors: dict[bytes, bytes] = {}  # feed key -> device that writes it (first entry; never changes)

    # -- the device ---------------------------------------------------------------------------

    def api_settings(self) -> ApiSettings:
        cfg = self.d.config.api
        return ApiSettings(cfg.host, cfg.port, str(self.d.home.api_socket))

    def published(self, port: int, token: str) -> None:
        self.d.write_api_files(port, token)

    def status(self) -> Doc:
        d = self.d
        return docs.status_document(
            peer_id=d.identity.peer_id, peer_key=encode_key(d.identity.peer_id), home=str(d.home.root),
            pid=os.getpid(), uptime=time.time() - d.started, listening=d.listen_addresses,
            advertised=d.advertised(), dht=d.dht.status() if d.dht is not None else {"enabled": False},
            lan_enabled=d.lan is not None, groups=[self._group_doc(g) for g in d.groups.values()],
            folders=[f.status() for f in d.folders.values()], peers=netview.peers(d.node), traffic=d.node.traffic(),
            reachability=d.reach.status(), services=[svc.to_json() for svc in d.supervisor.status()],
            relay=d.relaying.status() if d.relaying is not None else None, controls=d.controls.document(),
            name=d.device_name, names=self.names(), twins=d.twins.status(self.names()))

    def names(self) -> dict[bytes, str]:
        """Device id -> the name it published, over every group (ids shown with their names)."""
        out: dict[bytes, str] = {}
        for g in self.d.groups.values():
            out.update((dev, p.name) for dev, p in g.profiles.known.items())
        return out

    def metrics(self) -> str:
        d = self.d
        sent, received = d.node.traffic()
        peers = netview.peers(d.node)
        kinds: dict[str, int] = {}
        for p in peers:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        return docs.metrics_text(docs.Metrics(
            peers=len(peers), groups=len(d.groups), bytes_sent=sent, bytes_received=received,
            entries_replicated=netview.entries_received(d.node), protocol_errors=d.node.protocol_errors,
            group_entries=tuple(self._group_metrics(g) for g in d.groups.values()),
            connection_kinds=tuple(sorted(kinds.items()))))

    def _group_metrics(self, g: Group) -> docs.GroupMetrics:
        feeds = g.feeds()
        folder = self.d.folders.get(g.name)
        refused = g.refusals.as_json().values()
        results = list(g.audits.results.values())
        return docs.GroupMetrics(
            name=g.name, entries=sum(f.length for f in feeds),
            bytes_received=netview.bytes_received(self.d.node, [f.key for f in feeds]),
            folder_bytes=sum(v.size for v in folder.state.files.values()) if folder is not None else 0,
            records_refused=sum(r["records_refused"] for r in refused),
            feeds_refused=sum(r["feeds_refused"] for r in refused),
            audits_passed=sum(r.passed for r in results), audits_failed=sum(not r.passed for r in results))

    def stop(self) -> None:
        self.d.stop()

    def peers(self) -> list[Doc]:
        return docs.peer_documents(netview.peers(self.d.node), self.d.controls.pauses.devices, self.names())

    async def connect(self, address: str) -> str:
        return (await self.d.connect(address)).hex()

    def known_peers(self) -> list[Doc]:
        return self.d.known_peers.documents(set(self.d.node.peers))

    async def forget_peer(self, peer: str) -> str:
        return (await self.d.known_peers.remove(peer)).hex()

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        listeners = self.d.node.on_event
        listeners.append(callback)

        def unsubscribe() -> None:
            if callback in listeners:
                listeners.remove(callback)

        return unsubscribe

    def recent_events(self, n: int) -> list[Doc]:
        return list(self.d.events[-n:])

    def device(self) -> Doc:
        return {"id": self.d.identity.peer_id.hex(), "name": self.d.device_name}

    async def rename_device(self, name: str) -> Doc:
        self.d.device_name = await devices.rename(self.d.store, self.d.groups.values(), name)
        return self.device()

    async def device_list(self, group: str) -> list[Doc]:
        g = self.d.group(group)
        await g.profiles.scan()
        return [r.as_json() for r in devices.group_rows(g, netview.peers(self.d.node),
                                                        netview.remote_holdings(self.d.node, g))]

    # -- groups -------------------------------------------------------------------------------

    def _group_doc(self, group: Group) -> Doc:
        folder = self.d.folders.get(group.name)
        doc = docs.group_document({**group.status(), "paused": self.d.controls.group_paused(group.name)},
                                  self._sync_doc(group),
                                  folder.status() if folder is not None else None,
                                  self.backup_status(group.name) if group.is_member else None)
        doc["names"] = group.profiles.names()
        epochs = self.d.epochs.get(group.name)
        return {**doc, "disk": self._disk(group), **(epochs.status() if epochs is not None else {})}

    def _disk(self, group: Group) -> Doc:
        """Disk use of a group in bytes (:func:`cobox.folders.prune.disk_use`; without a folder,
        what the store holds for it)."""
        folder = self.d.folders.get(group.name)
        if folder is None:
            return {"stored_bytes": group.stored_bytes()}
        return folder_prune.disk_use(folder, self.d.config.folders.history_days)

    def _sync_doc(self, group: Group) -> Doc:
        folder = self.d.folders.get(group.name)
        counts = None
        if folder is not None:
            counts = docs.FolderCounts(folder.pending_downloads, sum(v.size for v in folder.state.files.values()),
                                       folder.pending_bytes,
                                       sum(1 for v in folder.state.files.values() if v.kind != "dir"))
        return docs.sync_document(group.name, netview.group_progress(self.d.node, group),
                                  sum(len(f.have) for f in group.feeds()), counts)

    def groups(self) -> list[Doc]:
        return [self._group_doc(g) for g in self.d.groups.values()]

    def group(self, name: str) -> Doc:
        return self._group_doc(self.d.group(name))

    async def create_group(self, name: str) -> Doc:
        group = await self.d.create_group(name)
        return {**self._group_doc(group), "invite": invite_uri(self.d, group, False)}

    async def join_group(self, uri: str, name: str | None) -> Doc:
        return self._group_doc(await self.d.join(parse_invite(uri), name))

    async def leave_group(self, name: str, keep_data: bool = False) -> Doc:
        before = await self.d.store.disk_use()
        deleted = await self.d.leave_group(name, keep_data)
        after = await self.d.store.disk_use()
        return {"left": name, "kept_data": keep_data, "deleted_bytes": deleted,
                "freed_bytes": max(0, before.total - after.total)}

    async def remove_device(self, name: str, device: str) -> Doc:
        """Remove ``device`` (a name or id prefix) from the group: a new epoch (cobox.removal)."""
        return await self.d.remove_device(name, device)

    def invite(self, name: str, seed: bool) -> str:
        return invite_uri(self.d, self.d.group(name), seed)

    async def append(self, name: str, text: str) -> Doc:
        group = self.d.group(name)
        seq = await group.append(text)
        own = group.own_feed()
        return {"seq": seq, "feed": own.key.hex() if own is not None else ""}

    async def log(self, name: str) -> list[Doc]:
        group = self.d.group(name)
        return [{**e.as_json(), "author_name": group.profiles.name_of(e.author) or ""} for e in await group.log()]

    def follow(self, name: str) -> Followed:
        return self.d.group(name)

    def sync_state(self, name: str) -> Doc:
        return self._sync_doc(self.d.group(name))

    def backup_status(self, name: str) -> list[Doc]:
        group = self.d.group(name)
        return [{**b, "peer_name": group.profiles.name_of(bytes.fromhex(b["peer"])) or ""}
                for b in group.backup_status()]

    async def members(self, name: str) -> list[Doc]:
        """The devices that write the group's feeds, from each feed's first entry (members only)."""
        group = self.d.group(name)
        own = group.own_feed()
        out: dict[str, Doc] = {}
        if group.is_member:
            out[group.device_id.hex()] = {"peer_id": group.device_id.hex(), "this_device": True,
                                          "name": self.d.device_name}
        for feed in group.feeds():
            if own is not None and feed.key == own.key:
                continue
            author = self._authors.get(feed.key)
            if author is None:
                author = await group.author_of(feed)
                if author is not None:
                    self._authors[feed.key] = author
            if author is not None:
                out.setdefault(author.hex(), {"peer_id": author.hex(), "this_device": False,
                                              "name": group.profiles.name_of(author) or ""})
        return list(out.values())

    def traffic(self) -> tuple[int, int]:
        sent, received = self.d.node.traffic()
        return sent, received

    def throughput_counters(self) -> dict[str, tuple[int, int]]:
        out = {}
        for group in self.d.groups.values():
            feeds = group.feeds()
            out[group.name] = (sum(len(f.have) for f in feeds),
                               netview.bytes_received(self.d.node, (f.key for f in feeds)))
        return out

    # -- folders ------------------------------------------------------------------------------

    def folders(self) -> list[Doc]:
        return [f.status() for f in self.d.folders.values()]

    def folder(self, name: str) -> Doc:
        sync = self.d.folder(name)
        return {**sync.status(), "disk": folder_prune.disk_use(sync, self.d.config.folders.history_days)}

    async def add_folder(self, group: str, path: str, kind: str | None = None, rescan: Any = None,
                         history_days: float | None = None) -> Doc:
        options = folder_options.FolderOptions().replace(kind, rescan)
        sync = await self.d.add_folder(group, path, options)
        if history_days is not None:
            await folder_prune.set_history_days(sync.group, history_days)
        await folder_prune.history_days(sync, self.d.config.folders.history_days)
        return sync.status()

    async def set_folder(self, name: str, kind: str | None, rescan: Any) -> Doc:
        sync = self.d.folder(name)
        await folder_options.configure(self.d.store, sync, name, kind, rescan, self.d.config.folders.rescan_interval)
        return sync.status()

    async def folder_request(self, name: str, what: str) -> Doc:
        sync = self.d.folder(name)
        done = await folder_gate.ask(sync.gate, what, REQUEST_WAIT)
        return {"group": name, "request": what, "done": done}

    async def folder_prune(self, name: str) -> Doc:
        sync = self.d.folder(name)
        days = await folder_prune.history_days(sync, self.d.config.folders.history_days)
        return {"group": name, "history_days": days, **(await folder_prune.prune(sync, days)).as_json()}

    async def remove_folder(self, name: str) -> None:
        await self.d.remove_folder(name)

    async def folder_history(self, name: str, file: str) -> list[Doc]:
        sync = self.d.folder(name)
        profiles = sync.group.profiles
        marked = folder_prune.mark_history(sync, file, await folder_history.history(sync, file))
        return [{**v, "author_name": profiles.name_of(bytes.fromhex(v["author"])) or ""} for v in marked]

    async def folder_restore(self, name: str, file: str, version: str | None, to: str | None,
                             force: bool = False) -> Doc:
        return await folder_history.restore(self.d.folder(name), file, version, to, force=force,
                                            wait=RESTORE_WAIT)

    async def folder_files(self, name: str, query: str, limit: int) -> Doc:
        return await folder_conflicts.files(self.d.folder(name), query, limit)

    async def folder_conflicts(self, name: str) -> list[Doc]:
        return await folder_conflicts.listing(self.d.folder(name))

    async def resolve_conflict(self, name: str, copy: str, keep: str) -> Doc:
        return await folder_conflicts.resolve(self.d.folder(name), copy, keep)

    def folder_changes(self) -> dict[str, float]:
        return {name: max((v.mtime for v in f.state.files.values()), default=0) / 1e9
                for name, f in self.d.folders.items()}

    # -- key backup ---------------------------------------------------------------------------

    async def backup_keys(self, peer: str, user: str, password: str, trust_first_use: bool) -> str | None:
        return await self.d.backup_keys(peer, user, password, trust_first_use)

    async def restore_keys(self, peer: str, user: str, password: str, trust_first_use: bool,
                           force: bool = False) -> Doc:
        return await self.d.restore_keys(peer, user, password, trust_first_use, force)

    async def keys_backup_state(self) -> Doc | None:
        from .backup.device_keys import backup_state

        return await backup_state(self.d.store, self.d.keyring())

    # -- controls -----------------------------------------------------------------------------

    def pauses(self) -> Doc:
        return self.d.controls.pauses.as_json()

    async def pause(self, kind: str, name: str, paused: bool) -> Doc:
        if kind not in pauses.KINDS:
            raise UsageError(f"can pause a group, a folder or a device, not a {kind!r}")
        return await self.d.controls.pause(kind, name, paused)  # type: ignore[arg-type]

    def limits(self) -> Doc:
        return self.d.controls.limits.as_json()

    def set_limits(self, change: Doc) -> Doc:
        return self.d.controls.set_limits(change)
    # -- backup as a service --------------------------------------------------------------------

    def _hosting(self) -> Hosting:
        if self.d.hosting is None:
            raise UsageError("backup as a service is not running on this device")
        return self.d.hosting

    async def service_invite(self, quota_mb: float | None, groups: int | None, expires_days: float | None,
                             label: str) -> Doc:
        return await self._hosting().invite(quota_mb, groups, expires_days, label)

    def service_list(self) -> list[Doc]:
        return self._hosting().host.listing()

    async def service_revoke(self, what: str) -> Doc:
        return await self._hosting().host.revoke(what)

    async def backup_add(self, group: str, uri: str) -> Doc:
        return await self._hosting().member.add(self.d.group(group), parse_backup_invite(uri))

    async def backup_list(self) -> list[Doc]:
        return await self._hosting().member.listing(list(self.d.groups.values()))

    async def backup_remove(self, group: str, host: str) -> Doc:
        return await self._hosting().member.remove(self.d.group(group), host)
