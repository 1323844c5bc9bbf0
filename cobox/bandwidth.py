"""Bandwidth limits as the user sets them (KiB/s), and how they reach the node.

Theory of operation
-------------------
:class:`Bandwidth` is the device's limits in KiB/s, as Syncthing counts them (``max_send_kbps``
= 1024 bytes per second per unit; 0: unlimited): for everything sent and received, whether the
local network obeys them too (``limit_lan``, false by default: LAN traffic is not limited), and
per device (:class:`DeviceKbps`), limits of that device's own which apply on the LAN too, on top
of the device-wide ones. :meth:`Bandwidth.rates` turns it into networker's
:class:`~networker.RateLimits` for ``Node.rates`` (the token buckets at the transport, which
replication, folder sync and relaying all go through).

Where the values come from: ``[network] max_send_kbps``, ``max_recv_kbps``, ``limit_lan`` and
``device_limits`` (entries ``"DEVICE:SEND:RECV"``, DEVICE a peer key or peer id) of the
configuration, unless they were changed at runtime (``PUT /v1/limits``, ``cobox limits``): those
are kept in ``HOME/limits.json`` (0600) and win over the configuration until reset
(``{"reset": true}``, ``cobox limits --reset``).

A change arrives as a JSON object (:meth:`Bandwidth.updated`): only the fields given change;
``devices`` maps a device to ``{"send_kbps": N, "recv_kbps": N}`` or to ``null`` (drop its
limits). Everything is checked strictly; a bad value raises :class:`~cobox.errors.UsageError`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from networker import DeviceLimit, RateLimits, encode_key

from .errors import ConfigError, UsageError
from .paths import write_private
from .pauses import device_id

FILE_NAME = "limits.json"
MAX_KBPS = 10 * 1024 * 1024  # 10 GiB/s: anything above is a typo


@dataclass(frozen=True)
class DeviceKbps:
    peer_id: bytes
    send_kbps: int = 0
    recv_kbps: int = 0


@dataclass(frozen=True)
class Bandwidth:
    send_kbps: int = 0
    recv_kbps: int = 0
    limit_lan: bool = False
    devices: tuple[DeviceKbps, ...] = ()
    runtime: bool = False  # set through the API (kept in limits.json), not from the configuration

    def rates(self) -> RateLimits:
        return RateLimits(send=self.send_kbps * 1024, recv=self.recv_kbps * 1024, limit_lan=self.limit_lan,
                          devices=tuple(DeviceLimit(d.peer_id, d.send_kbps * 1024, d.recv_kbps * 1024)
                                        for d in self.devices if d.send_kbps or d.recv_kbps))

    def as_json(self) -> dict[str, Any]:
        return {"max_send_kbps": self.send_kbps, "max_recv_kbps": self.recv_kbps, "limit_lan": self.limit_lan,
                "devices": {d.peer_id.hex(): {"peer_key": encode_key(d.peer_id), "send_kbps": d.send_kbps,
                                              "recv_kbps": d.recv_kbps} for d in self.devices},
                "source": "runtime" if self.runtime else "config"}

    def updated(self, change: Mapping[str, Any]) -> Bandwidth:
        """A copy with the fields of ``change`` (a JSON object from the API) applied."""
        known = {"max_send_kbps", "max_recv_kbps", "limit_lan", "devices"}
        unknown = set(change) - known
        if unknown:
            raise UsageError(f"unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        out = replace(self, runtime=True)
        if "max_send_kbps" in change:
            out = replace(out, send_kbps=kbps(change["max_send_kbps"], "max_send_kbps"))
        if "max_recv_kbps" in change:
            out = replace(out, recv_kbps=kbps(change["max_recv_kbps"], "max_recv_kbps"))
        if "limit_lan" in change:
            if not isinstance(change["limit_lan"], bool):
                raise UsageError("limit_lan must be true or false")
            out = replace(out, limit_lan=change["limit_lan"])
        if "devices" in change:
            out = replace(out, devices=_devices(out.devices, change["devices"]))
        return out


def kbps(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_KBPS:
        raise UsageError(f"{name} must be a whole number of KiB/s from 0 (unlimited) to {MAX_KBPS}")
    return value


def _devices(current: Iterable[DeviceKbps], change: Any) -> tuple[DeviceKbps, ...]:
    if not isinstance(change, dict):
        raise UsageError("devices must map a device to {send_kbps, recv_kbps} or null")
    out = {d.peer_id: d for d in current}
    for key, limits in change.items():
        pid = device_id(key)
        if limits is None:
            out.pop(pid, None)
            continue
        if not isinstance(limits, dict) or set(limits) - {"send_kbps", "recv_kbps", "peer_key"}:
            raise UsageError("a device's limits are {send_kbps, recv_kbps}")
        old = out.get(pid, DeviceKbps(pid))
        out[pid] = DeviceKbps(pid, kbps(limits.get("send_kbps", old.send_kbps), "send_kbps"),
                              kbps(limits.get("recv_kbps", old.recv_kbps), "recv_kbps"))
    return tuple(sorted(out.values(), key=lambda d: d.peer_id))


def device_limit(text: str) -> DeviceKbps:
    """One ``[network] device_limits`` entry: ``DEVICE:SEND_KBPS:RECV_KBPS``."""
    device, _, rest = text.partition(":")
    send, _, recv = rest.partition(":")
    if not (send.isdigit() and recv.isdigit()):
        raise ConfigError(f"network.device_limits: {text[:80]!r} is not DEVICE:SEND_KBPS:RECV_KBPS "
                          "(e.g. KEY:512:0; 0: no limit of its own)")
    try:
        return DeviceKbps(device_id(device), kbps(int(send), "send"), kbps(int(recv), "recv"))
    except UsageError as e:
        raise ConfigError(f"network.device_limits: {text[:80]!r}: {e}") from None


def from_settings(net: Any) -> Bandwidth:
    """The limits of the ``[network]`` settings."""
    devices = [device_limit(t) for t in net.device_limits]
    if len({d.peer_id for d in devices}) != len(devices):
        raise ConfigError("network.device_limits names a device twice")
    return Bandwidth(net.max_send_kbps, net.max_recv_kbps, net.limit_lan,
                     tuple(sorted(devices, key=lambda d: d.peer_id)))


def load(home: Path, configured: Bandwidth) -> Bandwidth:
    """The runtime limits saved in the home, or ``configured`` if there are none."""
    path = home / FILE_NAME
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            raise UsageError("not a JSON object")
        doc.pop("source", None)
        return Bandwidth().updated(doc)
    except FileNotFoundError:
        return configured
    except (ValueError, UsageError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{path}: not a valid limits file: {e}") from None


def save(home: Path, limits: Bandwidth) -> None:
    write_private(home / FILE_NAME, json.dumps(limits.as_json(), indent=1).encode())


def reset(home: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (home / FILE_NAME).unlink()
