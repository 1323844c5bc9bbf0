"""A folder's own settings: its type and rescan interval, kept in the store across restarts.

One record per folder (scope ``folder-options``, key: the group's name), a msgpack map
``{"type": "send-receive" | "send-only" | "receive-only", "rescan": seconds or nil}``; nil
means the configured default (``folders.rescan_interval``). The record is this device's own
data, but it is still decoded strictly: a record that does not decode is logged and the
defaults are used. ``apply`` sets them on a running ``FolderSync`` (the next wait for a round
uses the new interval; the folder is woken so it takes effect now).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from ..errors import UsageError
from .kinds import FolderKind

if TYPE_CHECKING:
    from storage import Store

    from .sync import FolderSync

log = logging.getLogger(__name__)
SCOPE = "folder-options"
MIN_RESCAN = 1.0  # seconds
MAX_RESCAN = 7 * 86400.0


@dataclass(frozen=True)
class FolderOptions:
    kind: FolderKind = FolderKind.SEND_RECEIVE
    rescan: float | None = None  # seconds between two rescans; None: the configured default

    def encode(self) -> bytes:
        data: bytes = msgpack.packb({"type": self.kind.value, "rescan": self.rescan}, use_bin_type=True)
        return data

    @classmethod
    def decode(cls, data: bytes) -> FolderOptions:
        """``UsageError`` for anything but a record ``encode`` wrote."""
        try:
            obj = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise UsageError(f"a folder options record that is not msgpack ({type(e).__name__})") from None
        if type(obj) is not dict or set(obj) != {"type", "rescan"} or type(obj["type"]) is not str:
            raise UsageError("a malformed folder options record")
        return cls(FolderKind.parse(obj["type"]), None if obj["rescan"] is None else rescan_seconds(obj["rescan"]))

    def replace(self, kind: str | None = None, rescan: Any = None) -> FolderOptions:
        """These options with a new type and/or rescan interval (validated)."""
        return FolderOptions(self.kind if kind is None else FolderKind.parse(kind),
                             self.rescan if rescan is None else rescan_seconds(rescan))


def rescan_seconds(value: Any) -> float:
    if type(value) not in (int, float) or not MIN_RESCAN <= value <= MAX_RESCAN:
        raise UsageError(f"a rescan interval must be a number of seconds from {MIN_RESCAN:g} to {MAX_RESCAN:g}, "
                         f"not {value!r}")
    return float(value)


async def load(store: Store, name: str) -> FolderOptions:
    data = await store.record(SCOPE, name)
    if data is None:
        return FolderOptions()
    try:
        return FolderOptions.decode(data)
    except UsageError as e:
        log.warning("folder of group %s: %s; using the defaults", name, e)
        return FolderOptions()


async def save(store: Store, name: str, options: FolderOptions) -> None:
    await store.put_record(SCOPE, name, options.encode())


async def forget(store: Store, name: str) -> None:
    await store.delete_record(SCOPE, name)


def apply(sync: FolderSync, options: FolderOptions, default_rescan: float) -> None:
    sync.gate.kind = options.kind
    sync.rescan = options.rescan if options.rescan is not None else default_rescan
    sync.wake()


async def configure(store: Store, sync: FolderSync, name: str, kind: str | None, rescan: Any,
                    default_rescan: float) -> FolderOptions:
    """Change the type and/or rescan interval of a running folder, kept across restarts."""
    options = (await load(store, name)).replace(kind, rescan)
    await save(store, name, options)
    apply(sync, options, default_rescan)
    return options
