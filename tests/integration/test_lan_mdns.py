"""LAN discovery over real mDNS on 127.0.0.1, two LanDiscovery instances in one process.

Registration probes for ~1.2 s before announcing, so every wait is bounded by a generous
WAIT; nothing synchronises with fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from networker.address import parse
from networker.encoding import encode_key
from networker.lan import SERVICE_TYPE, LanDiscovery, LanRecord, encode_txt, service_name
from tests.helpers import until

WAIT = 15.0
LOOPBACK = ["127.0.0.1"]


class Recorder:
    """An on_peer callback that keeps every call and lets a test wait for one."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, topic: bytes, peer_id: bytes, address: str) -> None:
        self.calls.append((topic, peer_id, address))
        self._changed.set()

    async def wait_for(self, pred: Callable[[tuple[bytes, bytes, str]], bool],
                       what: str) -> tuple[bytes, bytes, str]:
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    for call in self.calls:
                        if pred(call):
                            return call
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}") from None


def topic() -> bytes:
    return os.urandom(32)


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., object]]:
    """Make LanDiscovery instances on loopback; stop them all at the end."""
    made: list[LanDiscovery] = []

    def make(port: int, topics: set[bytes], on_peer: Callable[[bytes, bytes, str], None]) -> LanDiscovery:
        lan = LanDiscovery(os.urandom(32), port, interfaces=LOOPBACK, on_peer=on_peer)
        lan.set_topics(topics)
        made.append(lan)
        return lan

    yield make
    await asyncio.gather(*(lan.stop() for lan in made))


async def test_two_instances_find_each_others_topics(started) -> None:
    shared, only_b, later = topic(), topic(), topic()
    seen_a, seen_b = Recorder(), Recorder()
    a = started(4001, {shared}, seen_a)
    b = started(4002, {shared, only_b}, seen_b)
    async with asyncio.timeout(WAIT):
        await asyncio.gather(a.start(), b.start())

    _, peer, address = await seen_a.wait_for(lambda c: c[0] == shared, "a to find b")
    assert peer == b.peer_id
    assert address == f"tcp:127.0.0.1:4002~noise:{encode_key(b.peer_id)}"
    (alt,) = parse(address).alternatives
    assert (alt.host, alt.port, alt.peer_key) == ("127.0.0.1", 4002, b.peer_id)
    await seen_a.wait_for(lambda c: c[0] == only_b, "a to see b's second topic")
    address_a = f"tcp:127.0.0.1:4001~noise:{encode_key(a.peer_id)}"
    await seen_b.wait_for(lambda c: c == (shared, a.peer_id, address_a), "b to find a")
    assert a.lookup(shared) == [(b.peer_id, address)]
    assert b.lookup(only_b) == []  # a does not serve it; b never reports itself
    assert all(c[1] != b.peer_id for c in seen_b.calls)

    # a topic added later is re-published and found
    a.set_topics({shared, later})
    await seen_b.wait_for(lambda c: c[0] == later, "b to find a's new topic")
    assert b.lookup(later) == [(a.peer_id, address_a)]
    assert len([c for c in seen_b.calls if c[0] == shared]) == 1  # no repeat for what was known

    # stop() withdraws: a sends goodbyes and b forgets it
    await a.stop()
    await until(lambda: b.lookup(shared) == [] and b.lookup(later) == [], WAIT, "b to forget a")
    await a.stop()  # stopping twice is harmless


async def test_a_raising_callback_does_not_break_discovery(started, caplog) -> None:
    t1, t2 = topic(), topic()
    calls: list[bytes] = []

    def bad(topic: bytes, peer_id: bytes, address: str) -> None:
        calls.append(topic)
        raise RuntimeError("callback bug")

    a = started(4011, {t1}, bad)
    b = started(4012, {t1}, Recorder())
    with caplog.at_level(logging.ERROR, logger="networker.lan"):
        async with asyncio.timeout(WAIT):
            await asyncio.gather(a.start(), b.start())
        await until(lambda: t1 in calls, WAIT, "the callback to run")
        b.set_topics({t1, t2})
        await until(lambda: t2 in calls, WAIT, "discovery to go on after the callback raised")
    assert a.lookup(t2) == [(b.peer_id, f"tcp:127.0.0.1:4012~noise:{encode_key(b.peer_id)}")]
    assert "on_peer callback failed" in caplog.text


async def test_malformed_records_are_ignored(started, caplog) -> None:
    t1 = topic()
    seen = Recorder()
    a = started(4021, {t1}, seen)
    good_peer = os.urandom(32)
    bad_topic_peer = os.urandom(32)
    run = os.urandom(4).hex()  # names unique to this run: another test run on this machine may register its own
    services = [
        # a peer id of 31 bytes
        AsyncServiceInfo(SERVICE_TYPE, f"badid-{run}.{SERVICE_TYPE}", port=4022,
                         properties={"v": "1", "id": encode_key(good_peer[:31]), "t0": encode_key(t1)},
                         server=f"badid-{run}.local.", parsed_addresses=LOOPBACK),
        # a discovery key of 16 bytes
        AsyncServiceInfo(SERVICE_TYPE, service_name(bad_topic_peer), port=4023,
                         properties={"v": "1", "id": encode_key(bad_topic_peer), "t0": encode_key(b"k" * 16)},
                         server=f"badtopic-{run}.local.", parsed_addresses=LOOPBACK),
        # a well-formed TXT record under a name that is not the peer id's
        AsyncServiceInfo(SERVICE_TYPE, f"impostor-{run}.{SERVICE_TYPE}", port=4024,
                         properties=encode_txt(LanRecord(good_peer, frozenset([t1]))),
                         server=f"impostor-{run}.local.", parsed_addresses=LOOPBACK),
    ]
    names = [s.name for s in services]
    with caplog.at_level(logging.DEBUG, logger="networker.lan"):
        async with asyncio.timeout(WAIT):
            await a.start()
        raw = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        try:
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*(raw.async_register_service(s) for s in services))
            await until(lambda: all(f"ignoring {n}" in caplog.text for n in names), WAIT,
                        "the malformed records to be seen and ignored")
        finally:
            await raw.async_close()
    # (other processes on this machine may run mDNS on loopback too: look only at our records)
    assert [c for c in seen.calls if c[0] == t1 or c[1] in (good_peer, bad_topic_peer)] == []
    assert a.lookup(t1) == []
