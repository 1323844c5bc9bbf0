"""Replication between separate OS processes over loopback TCP with Noise."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.integration.procs import PeerProcess


@pytest.fixture
async def peers(tmp_path) -> AsyncIterator:
    started: list[PeerProcess] = []
    group = os.urandom(32)

    async def start(name: str) -> PeerProcess:
        p = await PeerProcess.start(tmp_path / name, group)
        started.append(p)
        return p

    yield start
    for p in started:
        await p.stop()


async def test_one_writer_two_readers(peers):
    w, r1, r2 = await peers("w"), await peers("r1"), await peers("r2")
    feed = (await w.call(cmd="append", n=3000, size=512))["feed"]
    await r1.call(cmd="connect", addr=w.address)
    await r2.call(cmd="connect", addr=w.address)
    await r2.call(cmd="connect", addr=r1.address)
    for r in (r1, r2):
        assert (await r.call(cmd="wait", feed=feed, length=3000, timeout=30))["ok"]


async def test_writers_on_both_sides_with_live_appends(peers):
    a, b = await peers("a"), await peers("b")
    fa = (await a.call(cmd="append", n=100))["feed"]
    fb = (await b.call(cmd="append", n=100))["feed"]
    await a.call(cmd="connect", addr=b.address)
    for _ in range(5):  # live appends while replicating
        await a.call(cmd="append", n=200, batch=10)
        await b.call(cmd="append", n=200, batch=10)
    assert (await b.call(cmd="wait", feed=fa, length=1100))["ok"]
    assert (await a.call(cmd="wait", feed=fb, length=1100))["ok"]


async def test_reader_disconnects_mid_transfer_and_resumes(peers):
    w, r = await peers("w"), await peers("r")
    feed = (await w.call(cmd="append", n=20000, size=1024, batch=500))["feed"]
    await r.call(cmd="connect", addr=w.address)
    first = await r.call(cmd="wait", feed=feed, length=2000, timeout=30)
    assert first["ok"]
    await r.call(cmd="disconnect")
    mid = (await r.call(cmd="status"))["feeds"][feed]
    await r.call(cmd="connect", addr=w.address)
    assert (await r.call(cmd="wait", feed=feed, length=20000, timeout=60))["ok"]
    end = (await r.call(cmd="status"))["feeds"][feed]
    assert mid["have"] >= 2000 and end["have"] == end["contiguous"] == 20000
