"""Epoch records: the signed entry that moves a group to a new epoch after a device removal.

Theory of operation
-------------------
A device removal (:mod:`cobox.epochs`) is the one entry that is *not* sealed with the group key:
a backup peer must read it too. It is ``EPOCH_MAGIC || sig(64) || body``, ``body`` the msgpack
map ``{"type": "epoch", "v": 1, "parent", "epoch", "remover", "removed", "members", "seeds",
"time"}``: the discovery key of the epoch it ends (``parent``) and of the one it makes
(``epoch``), the removing device, the removed devices (1 to ``MAX_REMOVED``), and for each
remaining member and backup peer ``[device id, sealed box]`` (at most ``MAX_EPOCH_DEVICES`` in
all; a box is ``SEALED_BYTES``). ``sig`` is the remover's Ed25519 signature over
``EPOCH_SIGN_CONTEXT || body`` (the exact bytes). ``is_epoch_entry`` tells such an entry from a
sealed one (a random nonce starts with the magic with probability 2**-128); every other reader
skips it. ``decode_epoch`` is strict and raises only ``MalformedEpochRecordError``.

``EPOCH_MAGIC`` and ``is_epoch_entry`` belong to the envelope of every entry (:mod:`cobox.entries`):
every reader must tell an epoch record from a sealed entry, and only ``cobox.epochs`` and
``cobox.removal`` read one, with this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
from blake3 import blake3

from .entries import EPOCH_MAGIC, ID_BYTES, MAX_TIME, is_epoch_entry
from .errors import MalformedEpochRecordError

EPOCH_SIGN_CONTEXT = b"cobox/epoch-record/v1"
EPOCH_KEYS = {"type", "v", "parent", "epoch", "remover", "removed", "members", "seeds", "time"}
SIG_BYTES = 64
SEALED_BYTES = 32 + 16 + 32  # a libsodium sealed box of a 32-byte secret
MAX_REMOVED = 64
MAX_EPOCH_DEVICES = 1024
MAX_EPOCH_ENTRY = len(EPOCH_MAGIC) + SIG_BYTES + 256 * 1024


@dataclass(frozen=True)
class EpochRecord:
    """A decoded epoch record; ``body`` is what ``sig`` signs, ``digest`` orders records."""

    parent: bytes
    epoch: bytes
    remover: bytes
    removed: tuple[bytes, ...]
    members: tuple[tuple[bytes, bytes], ...]  # (device id, sealed address)
    seeds: tuple[tuple[bytes, bytes], ...]  # (device id, sealed replication key)
    time: float
    sig: bytes
    body: bytes
    digest: bytes

    def entry(self) -> bytes:
        return EPOCH_MAGIC + self.sig + self.body

    def box_for(self, device: bytes) -> tuple[str, bytes] | None:
        """``("member" | "seed", box)`` sealed to ``device``, if any."""
        for role, boxes in (("member", self.members), ("seed", self.seeds)):
            for dev, box in boxes:
                if dev == device:
                    return role, box
        return None


def epoch_body(parent: bytes, epoch: bytes, remover: bytes, removed: list[bytes],
               members: list[tuple[bytes, bytes]], seeds: list[tuple[bytes, bytes]], when: float) -> bytes:
    return msgpack.packb({"type": "epoch", "v": 1, "parent": parent, "epoch": epoch, "remover": remover,
                          "removed": list(removed), "members": [list(m) for m in members],
                          "seeds": [list(m) for m in seeds], "time": float(when)}, use_bin_type=True)


def _eid(x: Any, what: str) -> bytes:
    if type(x) is not bytes or len(x) != ID_BYTES:
        raise MalformedEpochRecordError(f"epoch record: {what} is not a 32-byte id")
    return x


def _boxes(x: Any, what: str) -> tuple[tuple[bytes, bytes], ...]:
    if type(x) is not list or len(x) > MAX_EPOCH_DEVICES:
        raise MalformedEpochRecordError(f"epoch record: {what} is not a list of at most {MAX_EPOCH_DEVICES}")
    out = []
    for item in x:
        if type(item) is not list or len(item) != 2 or type(item[1]) is not bytes or len(item[1]) != SEALED_BYTES:
            raise MalformedEpochRecordError(f"epoch record: {what} holds something else than [id, sealed box]")
        out.append((_eid(item[0], what), item[1]))
    return tuple(out)


def decode_epoch(data: bytes) -> EpochRecord:
    """The epoch record of an entry (signature not checked here: ``cobox.epochs.verify``);
    ``MalformedEpochRecordError`` unless exactly well-formed."""
    if type(data) is not bytes or not is_epoch_entry(data) or len(data) > MAX_EPOCH_ENTRY:
        raise MalformedEpochRecordError("not an epoch record")
    sig, body = data[len(EPOCH_MAGIC):len(EPOCH_MAGIC) + SIG_BYTES], data[len(EPOCH_MAGIC) + SIG_BYTES:]
    if len(sig) != SIG_BYTES:
        raise MalformedEpochRecordError("epoch record: truncated")
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise MalformedEpochRecordError(f"epoch record: not msgpack ({type(e).__name__})") from None
    if type(obj) is not dict or set(obj) != EPOCH_KEYS or obj["type"] != "epoch":
        raise MalformedEpochRecordError("epoch record: unexpected or missing fields")
    if type(obj["v"]) is not int or obj["v"] != 1:
        raise MalformedEpochRecordError("epoch record: unknown format version")
    when = obj["time"]
    if type(when) is not float or not math.isfinite(when) or not 0 <= when <= MAX_TIME:
        raise MalformedEpochRecordError("epoch record: time out of range")
    removed = obj["removed"]
    if type(removed) is not list or not 1 <= len(removed) <= MAX_REMOVED:
        raise MalformedEpochRecordError(f"epoch record: removes 1 to {MAX_REMOVED} devices")
    removed_ids = tuple(_eid(r, "removed device") for r in removed)
    members, seeds = _boxes(obj["members"], "members"), _boxes(obj["seeds"], "seeds")
    if len(members) + len(seeds) > MAX_EPOCH_DEVICES:
        raise MalformedEpochRecordError("epoch record: too many devices")
    remover = _eid(obj["remover"], "remover")
    named = [d for d, _ in members] + [d for d, _ in seeds]
    if len(set(named)) != len(named) or len(set(removed_ids)) != len(removed_ids):
        raise MalformedEpochRecordError("epoch record: a device named twice")
    if set(removed_ids) & (set(named) | {remover}):
        raise MalformedEpochRecordError("epoch record: a removed device is also kept (or removes itself)")
    if remover not in {d for d, _ in members}:
        raise MalformedEpochRecordError("epoch record: the remover does not keep itself")
    return EpochRecord(_eid(obj["parent"], "parent"), _eid(obj["epoch"], "epoch"), remover, removed_ids, members,
                       seeds, when, sig, body, blake3(data).digest())
