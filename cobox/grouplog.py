"""The group log, read: every log entry a member holds, in one order on every device.

Theory of operation
-------------------
Log entries, like every entry of a group, are encoded, decoded, sealed and opened by
:mod:`cobox.entries` (msgpack ``{"type": "log", "text", "time"}``, XChaCha20-Poly1305 bound to
``feed key || u64(seq)``); ``Group.append`` writes them. :func:`read_log` reads every admitted
feed of every epoch of the group (``Group.all_feeds``) in bounded slices (``READ_BYTES``: chunk
entries are large) and keeps the log entries: epoch records (``cobox.removal``), the folder's
records, chunks, fillers and profiles are skipped (their own readers report them).

Order (``cobox log cat``): entries sorted by their ``time``, then author feed key, then sequence
number, which is the same on every device that holds the same entries. The author of an entry is
its feed's owner (``Group.owner``, from the feed's admission), never a field of the entry.

``decode_log`` is strict: exact keys, ``text`` a string of at most ``MAX_TEXT`` bytes, ``time``
a finite number between 0 and ``MAX_TIME``; an entry that fails (or does not decrypt with the
group key) is listed as refused (``LogEntry.refused``, time 0) and counted against the feed's
owner (``Group.refuse``), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .entries import decode_log, is_epoch_entry, record_type, unpack
from .errors import MalformedLogEntryError, MalformedRecordError

if TYPE_CHECKING:
    from .groups import Group

READ_BYTES = 4 * 1024 * 1024  # entries read per slice


@dataclass(frozen=True)
class LogEntry:
    feed: bytes
    seq: int
    author: bytes  # the feed's owner
    time: float
    text: str
    refused: str | None = None  # why the entry could not be read as a log entry

    def as_json(self) -> dict[str, Any]:
        out = {"feed": self.feed.hex(), "seq": self.seq, "author": self.author.hex(),
               "time": self.time, "text": self.text}
        if self.refused is not None:
            out["refused"] = self.refused
        return out


async def read_log(group: Group) -> list[LogEntry]:
    """Every log entry ``group`` holds (refused ones as placeholders), in the documented order."""
    out = []
    for feed in group.all_feeds():
        for start, end in list(feed.have):
            seq = start
            while seq < end:  # bounded slices: chunk entries are large
                for data in await feed.get_range(seq, end, max_bytes=READ_BYTES):
                    entry = decode_entry(group, feed.key, seq, data)
                    if entry is not None:
                        out.append(entry)
                    seq += 1
    out.sort(key=lambda e: (e.time, e.feed, e.seq))
    return out


def decode_entry(group: Group, feed_key: bytes, seq: int, data: bytes) -> LogEntry | None:
    """The log entry at ``seq``; a placeholder if it is refused; ``None`` for other records."""
    author = group.owner(feed_key) or bytes(32)
    if is_epoch_entry(data):
        return None  # a device removal (cobox.removal reads it)
    try:
        plain = group.open(feed_key, seq, data)
        if plain is None:
            raise MalformedLogEntryError("does not decrypt with the group key")
        obj = unpack(plain)
        kind = record_type(obj)
        if kind in ("chunk", "filler", "device/profile") or (kind is not None and kind.startswith("folder/")):
            return None  # the folder's records and profiles (their decoders report them)
        when, text = decode_log(obj)
    except MalformedRecordError as e:  # MalformedLogEntryError or a refused msgpack entry
        group.refuse(feed_key, seq, f"log entry: {e}")
        return LogEntry(feed_key, seq, author, 0.0, "", refused=str(e))
    return LogEntry(feed_key, seq, author, when, text)
