"""The everyday controls of a running daemon: pause/resume and bandwidth limits.

Theory of operation
-------------------
:class:`Controls` holds the daemon's current :class:`~cobox.pauses.Pauses` and
:class:`~cobox.bandwidth.Bandwidth`, loaded from the home at start (before any group is
activated), and carries out each change on the live objects, then saves it:

- ``pause("group", NAME)``: ``Node.pause_group`` (its channels close, none open) and the swarm
  leaves its topic (no announcing, no looking for its peers: a connection kept for it alone
  goes idle and closes); resuming opens its channels on every connected peer again and rejoins
  the topic, so discovery finds its peers again;
- ``pause("folder", NAME)``: the folder does no more rounds (``FolderSync.paused`` asks
  :meth:`folder_paused`); resuming wakes it for a round at once;
- ``pause("device", KEY)``: ``Node.pause_peer`` (its connection closes; it is neither dialed
  nor accepted); resuming lets the swarm and the remote connect again;
- ``set_limits(change)``: ``Node.rates.configure``, which open connections obey at once.

The daemon calls :meth:`on_group` before it joins a group to the node (so a group paused before
a restart never opens a channel) and joins the swarm only for groups not paused; it calls
:meth:`on_folder` when it starts a folder, and :meth:`forget_group` when a group is left.
Names that do not exist are refused (:class:`~cobox.errors.GroupNotFoundError`); pausing what
is paused is no error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from networker import encode_key

from . import bandwidth, pauses
from .bandwidth import Bandwidth
from .errors import GroupNotFoundError, UsageError
from .pauses import Kind, Pauses

log = logging.getLogger("cobox.controls")


class Controls:
    def __init__(self, home: Path, node: Any, configured: Bandwidth,
                 groups: Callable[[], Mapping[str, Any]], folders: Callable[[], Mapping[str, Any]],
                 swarm: Callable[[], Any]) -> None:
        """``groups()``/``folders()``: the daemon's groups and folders by name, as they are now;
        ``swarm()``: its swarm (made after this)."""
        self.home = home
        self.node = node
        self.configured = configured
        self._groups = groups
        self._folders = folders
        self._swarm = swarm
        self.pauses = Pauses()
        self.limits = configured

    def load(self) -> None:
        """Read the saved pauses and limits and apply those the node holds (devices, rates)."""
        self.pauses = pauses.load(self.home)
        self.limits = bandwidth.load(self.home, self.configured)
        for pid in self.pauses.devices:
            self.node.pause_peer(pid)
        self._apply_limits()
        if self.pauses.groups or self.pauses.folders or self.pauses.devices:
            log.info("paused: %s", _summary(self.pauses))

    # -- hooks of the daemon ------------------------------------------------------------------

    def on_group(self, group: Any) -> None:
        if self.pauses.paused("group", group.name):
            self.node.pause_group(group.discovery_key)

    def on_folder(self, sync: Any, name: str) -> None:
        sync.paused = lambda: self.folder_paused(name)

    def forget_group(self, name: str) -> None:
        if name in self.pauses.groups or name in self.pauses.folders:
            self.pauses = self.pauses.without_group(name)
            pauses.save(self.home, self.pauses)

    def folder_paused(self, name: str) -> bool:
        return self.pauses.paused("folder", name)

    def group_paused(self, name: str) -> bool:
        return self.pauses.paused("group", name)

    # -- pause and resume ---------------------------------------------------------------------

    async def pause(self, kind: Kind, name: str, paused: bool = True) -> dict[str, Any]:
        """Pause (or resume) a group, a folder or a device; the pauses document."""
        key: str | bytes
        if kind == "device":
            key = pauses.device_id(name)
            if key == getattr(self.node, "peer_id", None):
                raise UsageError("that is this device")
        elif kind == "group":
            if name not in self._groups():
                raise GroupNotFoundError(f"no group named {name!r}")
            key = name
        elif kind == "folder":
            if name not in self._folders():
                raise GroupNotFoundError(f"group {name!r} has no folder here")
            key = name
        else:
            raise UsageError(f"can pause a group, a folder or a device, not a {kind!r}")
        if self.pauses.paused(kind, key) != paused:
            self.pauses = self.pauses.changed(kind, key, paused)
            pauses.save(self.home, self.pauses)
            await self._apply(kind, key, paused)
            shown = encode_key(key)[:16] if isinstance(key, bytes) else key
            log.info("%s %s %s", "paused" if paused else "resumed", kind, shown)
        return self.pauses.as_json()

    async def _apply(self, kind: Kind, key: str | bytes, paused: bool) -> None:
        if kind == "device":
            assert isinstance(key, bytes)
            (self.node.pause_peer if paused else self.node.resume_peer)(key)
        elif kind == "group":
            dk = self._groups()[key].discovery_key
            if paused:
                self.node.pause_group(dk)
                await self._swarm().leave(dk)
            else:
                self.node.resume_group(dk)
                self._swarm().join(dk)
        elif not paused:
            folder = self._folders().get(key)
            if folder is not None:
                folder.wake()

    # -- bandwidth ----------------------------------------------------------------------------

    def set_limits(self, change: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a change of limits (``{"reset": true}``: back to the configuration); the limits."""
        if change.get("reset") is True:
            if set(change) != {"reset"}:
                raise UsageError("reset goes alone")
            bandwidth.reset(self.home)
            self.limits = self.configured
        else:
            self.limits = self.limits.updated(change)
            bandwidth.save(self.home, self.limits)
        self._apply_limits()
        log.info("bandwidth limits: send %s, receive %s KiB/s (0: unlimited)%s, %d device limit(s)",
                 self.limits.send_kbps, self.limits.recv_kbps, ", LAN too" if self.limits.limit_lan else "",
                 len(self.limits.devices))
        return self.limits.as_json()

    def _apply_limits(self) -> None:
        self.node.rates.configure(self.limits.rates(), asyncio.get_running_loop().time())

    def document(self) -> dict[str, Any]:
        """What ``status`` shows: the pauses and the limits."""
        return {"paused": self.pauses.as_json(), "limits": self.limits.as_json()}


def _summary(p: Pauses) -> str:
    parts = [f"group {g}" for g in sorted(p.groups)] + [f"folder {f}" for f in sorted(p.folders)]
    parts += [f"device {encode_key(d)[:16]}" for d in sorted(p.devices)]
    return ", ".join(parts)
