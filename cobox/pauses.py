"""What the user paused: groups, folders and devices, kept across restarts.

Theory of operation
-------------------
:class:`Pauses` is a frozen value: the names of paused groups and folders (a folder is named by
its group) and the peer ids of paused devices. It is kept in ``HOME/pauses.json`` (mode 0600,
written atomically by :func:`cobox.paths.write_private`) each time it changes, and read back at
start. What each pause means is carried out elsewhere:

- a paused **group** replicates with nobody: the node closes its channels and opens none
  (``Node.pause_group``); its folder, if any, still records local changes;
- a paused **folder** does no round (no scan, no record, no apply): ``FolderSync.paused`` is
  asked before each round;
- a paused **device** gets no connection: the node closes it and neither dials nor accepts it
  (``Node.pause_peer``).

:class:`cobox.controls.Controls` applies a change to the running daemon and saves it. Forgetting
a group (``cobox group leave``) drops its pauses, so a new group of the same name starts
unpaused.

The file is this device's own, but read strictly all the same: anything but the documented
shape raises :class:`~cobox.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from networker import KeyEncodingError, decode_key, encode_key

from .errors import ConfigError, UsageError
from .paths import write_private

Kind = Literal["group", "folder", "device"]
KINDS: tuple[Kind, ...] = ("group", "folder", "device")
FILE_NAME = "pauses.json"


@dataclass(frozen=True)
class Pauses:
    groups: frozenset[str] = frozenset()
    folders: frozenset[str] = frozenset()
    devices: frozenset[bytes] = frozenset()

    def paused(self, kind: Kind, key: str | bytes) -> bool:
        return key in self._set(kind)

    def changed(self, kind: Kind, key: str | bytes, paused: bool) -> Pauses:
        """A copy with ``key`` of ``kind`` paused (or resumed)."""
        items: frozenset[Any] = self._set(kind)
        items = items | {key} if paused else items - {key}
        return replace(self, **{kind + "s": items})

    def without_group(self, name: str) -> Pauses:
        return replace(self, groups=self.groups - {name}, folders=self.folders - {name})

    def _set(self, kind: Kind) -> frozenset[Any]:
        if kind not in KINDS:
            raise UsageError(f"can pause a group, a folder or a device, not a {kind!r}")
        return getattr(self, kind + "s")  # type: ignore[no-any-return]

    def as_json(self) -> dict[str, Any]:
        return {"groups": sorted(self.groups), "folders": sorted(self.folders),
                "devices": [{"peer_id": d.hex(), "peer_key": encode_key(d)} for d in sorted(self.devices)]}


def device_id(text: str) -> bytes:
    """A device as the user names it: its peer key (base32, as ``cobox status`` shows it) or its
    peer id (64 hex digits)."""
    if isinstance(text, str) and len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        return decode_key(text.strip() if isinstance(text, str) else text)
    except KeyEncodingError:
        raise UsageError(f"{str(text)[:70]!r} is not a device: give its peer key (cobox status) "
                         "or its peer id (64 hex digits)") from None


def decode(data: bytes, origin: str) -> Pauses:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) - {"groups", "folders", "devices"}:
            raise ValueError("not an object of groups, folders and devices")
        groups, folders, devices = (doc.get(k, []) for k in ("groups", "folders", "devices"))
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in (groups, folders)):
            raise ValueError("groups and folders must be lists of names")
        if not isinstance(devices, list) or not all(isinstance(d, dict) and isinstance(d.get("peer_id"), str)
                                                    and len(d["peer_id"]) == 64 for d in devices):
            raise ValueError("devices must be a list of {peer_id: 64 hex digits}")
        return Pauses(frozenset(groups), frozenset(folders), frozenset(bytes.fromhex(d["peer_id"]) for d in devices))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{origin}: not a valid pauses file: {e}") from None


def load(home: Path) -> Pauses:
    path = home / FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Pauses()
    return decode(data, str(path))


def save(home: Path, pauses: Pauses) -> None:
    write_private(home / FILE_NAME, json.dumps(pauses.as_json(), indent=1).encode())
