"""Long-lived responses of the control API (``log cat --follow``) and how they end.

A stream is a handler that never returns by itself, so three things end it:

* **shutdown**: the server sets its ``closing`` event (from the app's ``on_shutdown`` signal,
  which aiohttp runs before it waits for handlers), and every stream returns at once, so
  ``cobox stop`` never waits for a connected client;
* **a gone client**: aiohttp does not cancel a handler whose client disconnects, so the stream
  writes a heartbeat (an empty line, which NDJSON readers skip) every ``heartbeat`` seconds while
  idle; writing to a closed connection raises and the stream ends;
* the client's own timeout (none here: ``log cat --follow`` waits as long as asked).

Whatever ends it, every listener the stream registered (one per feed, one for new feeds) is
removed in ``finally``: nothing a finished stream registered stays behind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

FOLLOW_HEARTBEAT = 5.0  # seconds of silence before an empty line checks that the client is there


class Writer(Protocol):
    async def write(self, data: bytes) -> None: ...


class FollowedGroup(Protocol):
    def feeds(self) -> list[Any]: ...

    def on_feed_added(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...

    def log(self) -> Awaitable[list[Any]]: ...


async def follow_log(resp: Writer, group: FollowedGroup, closing: asyncio.Event, *,
                     heartbeat: float = FOLLOW_HEARTBEAT) -> None:
    """Write the group's entries as NDJSON, then new ones as they arrive, until ``closing`` is set
    or the client is gone."""
    seen: set[tuple[bytes, int]] = set()
    changed = asyncio.Event()
    unlisten: list[Callable[[], Any]] = []

    def watch(feed: Any) -> None:
        unlisten.append(feed.listen(lambda _e: changed.set()))
        changed.set()

    try:
        for feed in group.feeds():
            watch(feed)
        unlisten.append(group.on_feed_added(watch))
        while not closing.is_set():
            changed.clear()
            for entry in await group.log():
                if (entry.feed, entry.seq) not in seen:
                    seen.add((entry.feed, entry.seq))
                    await resp.write(json.dumps(entry.as_json()).encode() + b"\n")
            if not await _wait_either(changed, closing, heartbeat):
                await resp.write(b"\n")  # raises once the client is gone
    except ConnectionError:
        pass  # the client went away (aiohttp's ClientConnectionResetError is a ConnectionResetError)
    finally:
        for u in unlisten:
            u()


async def _wait_either(changed: asyncio.Event, closing: asyncio.Event, timeout: float) -> bool:
    """Wait until ``changed`` or ``closing`` is set (True) or ``timeout`` passes (False)."""
    waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(closing.wait())]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return bool(done)
