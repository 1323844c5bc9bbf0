"""The follow stream ends at shutdown and when its client is gone, and leaves no listener behind
(issue 18.6). Played in process with a fake group and a fake response: no sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cobox.control.streams import follow_log
from tests.helpers import until


@dataclass(frozen=True)
class Entry:
    feed: bytes
    seq: int
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"feed": self.feed.hex(), "seq": self.seq, "text": self.text}


class FakeFeed:
    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], None]] = []

    def listen(self, cb: Callable[[Any], None]) -> Callable[[], None]:
        self.listeners.append(cb)
        return lambda: self.listeners.remove(cb)

    def fire(self) -> None:
        for cb in list(self.listeners):
            cb(None)


class FakeGroup:
    def __init__(self) -> None:
        self.feed = FakeFeed()
        self.entries: list[Entry] = []
        self.added: list[Callable[[Any], None]] = []

    def feeds(self) -> list[FakeFeed]:
        return [self.feed]

    def on_feed_added(self, cb: Callable[[Any], None]) -> Callable[[], None]:
        self.added.append(cb)
        return lambda: self.added.remove(cb)

    async def log(self) -> list[Entry]:
        return list(self.entries)

    def append(self, text: str) -> None:
        self.entries.append(Entry(b"f", len(self.entries), text))
        self.feed.fire()


class FakeResponse:
    """Records what is written; once ``gone`` it raises as aiohttp does for a closed client."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.gone = False

    async def write(self, data: bytes) -> None:
        if self.gone:
            raise ConnectionResetError("Cannot write to closing transport")
        self.lines.append(data)


def texts(resp: FakeResponse) -> list[str]:
    return [json.loads(line)["text"] for line in resp.lines if line.strip()]


async def test_follow_streams_entries_and_ends_at_shutdown():
    group, resp, closing = FakeGroup(), FakeResponse(), asyncio.Event()
    group.append("old")
    task = asyncio.ensure_future(follow_log(resp, group, closing, heartbeat=60))
    await until(lambda: texts(resp) == ["old"], what="the current entries")
    group.append("new")
    await until(lambda: texts(resp) == ["old", "new"], what="the new entry")
    closing.set()
    async with asyncio.timeout(5):
        await task
    assert group.feed.listeners == [] and group.added == []


async def test_follow_notices_a_gone_client_by_its_heartbeat_and_unlistens():
    group, resp, closing = FakeGroup(), FakeResponse(), asyncio.Event()
    task = asyncio.ensure_future(follow_log(resp, group, closing, heartbeat=0.02))
    await until(lambda: b"\n" in resp.lines, what="a heartbeat while idle")
    assert len(group.feed.listeners) == 1 and len(group.added) == 1
    resp.gone = True  # the client was interrupted: nothing is appended, only the heartbeat can tell
    async with asyncio.timeout(5):
        await task
    assert group.feed.listeners == [] and group.added == []
    assert not closing.is_set()


async def test_follow_watches_feeds_added_later():
    group, resp, closing = FakeGroup(), FakeResponse(), asyncio.Event()
    task = asyncio.ensure_future(follow_log(resp, group, closing, heartbeat=60))
    await until(lambda: len(group.added) == 1, what="the stream to register")
    late = FakeFeed()
    group.added[0](late)
    assert len(late.listeners) == 1
    closing.set()
    async with asyncio.timeout(5):
        await task
    assert late.listeners == [] and group.feed.listeners == []
