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
        """Pause (or resume) a group, a folder or a device; the pauses document. A pause whose
        folder is gone (removed while paused) can still be resumed, which only forgets it."""
        if kind == "device":
            pid = pauses.device_id(name)
            if pid == getattr(self.node, "peer_id", None):
                raise UsageError("that is this device")
            if self.pauses.paused(kind, pid) != paused:
                self._changed(kind, pid, paused)
                (self.node.pause_peer if paused else self.node.resume_peer)(pid)
            return self.pauses.as_json()
        if kind not in ("group", "folder"):
            raise UsageError(f"can pause a group, a folder or a device, not a {kind!r}")
        known = self._groups() if kind == "group" else self._folders()
        if name not in known and (paused or not self.pauses.paused(kind, name)):
            raise GroupNotFoundError(f"no group named {name!r}" if kind == "group"
                                     else f"group {name!r} has no folder here")
        if self.pauses.paused(kind, name) == paused:
            return self.pauses.as_json()
        self._changed(kind, name, paused)
        target = known.get(name)
        if kind == "group" and target is not None:
            dk = target.discovery_key
            if paused:
                self.node.pause_group(dk)
                await self._swarm().leave(dk)
            else:
                self.node.resume_group(dk)
                self._swarm().join(dk)
        elif kind == "folder" and target is not None and not paused:
            target.wake()
        return self.pauses.as_json()

    def _changed(self, kind: Kind, key: str | bytes, paused: bool) -> None:
        self.pauses = self.pauses.changed(kind, key, paused)
        pauses.save(self.home, self.pauses)
        shown = encode_key(key)[:16] if isinstance(key, bytes) else key
        log.info("%s %s %s", "paused" if paused else "resumed", kind, shown)

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
