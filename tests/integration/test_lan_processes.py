"""LAN discovery between two OS processes on this machine, over real mDNS on 127.0.0.1.

Each process runs tests/integration/lanproc.py; a reader task sorts its JSON lines into
discoveries and command replies. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from networker.encoding import encode_key

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0


class LanProcess:
    def __init__(self, proc: asyncio.subprocess.Process, peer_id: str, found: list[dict]) -> None:
        self.proc = proc
        self.peer_id = peer_id
        self.found = found
        self._found_changed = asyncio.Event()
        self._replies: asyncio.Queue[dict] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, port: int, topics: list[bytes]) -> LanProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.lanproc", str(port), *(t.hex() for t in topics),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
        )
        assert proc.stdout is not None
        found: list[dict] = []  # discoveries may come before "ready" (browsing starts first)
        async with asyncio.timeout(WAIT):
            while line := await proc.stdout.readline():
                msg = json.loads(line)
                if "ready" in msg:
                    return cls(proc, msg["peer_id"], found)
                found.append(msg["found"])
        raise RuntimeError("LAN process exited before it was ready")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if "found" in msg:
                self.found.append(msg["found"])
                self._found_changed.set()
            else:
                self._replies.put_nowait(msg)

    async def call(self, **cmd: object) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(WAIT):
            return await self._replies.get()

    async def wait_found(self, topic: bytes, peer_id: str) -> dict:
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    for f in self.found:
                        if f["topic"] == topic.hex() and f["peer_id"] == peer_id:
                            return f
                    self._found_changed.clear()
                    await self._found_changed.wait()
        except TimeoutError:
            who = f"{self.peer_id[:8]} did not find {peer_id[:8]}"
            raise AssertionError(f"{who} on {topic.hex()[:8]} within {WAIT}s") from None

    async def lookup(self, topic: bytes) -> list[list[str]]:
        return (await self.call(cmd="lookup", topic=topic.hex()))["peers"]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                await self.proc.stdin.drain()
                async with asyncio.timeout(WAIT):
                    await self.proc.wait()
            except (TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def procs() -> AsyncIterator[list[LanProcess]]:
    started: list[LanProcess] = []
    yield started
    await asyncio.gather(*(p.stop() for p in started))


async def test_two_processes_discover_each_other(procs: list[LanProcess]) -> None:
    shared, only_2, later = os.urandom(32), os.urandom(32), os.urandom(32)
    p1, p2 = await asyncio.gather(LanProcess.start(5101, [shared]), LanProcess.start(5102, [shared, only_2]))
    procs += [p1, p2]

    f = await p1.wait_found(shared, p2.peer_id)
    assert f["address"] == f"tcp:127.0.0.1:5102~noise:{encode_key(bytes.fromhex(p2.peer_id))}"
    await p1.wait_found(only_2, p2.peer_id)
    f = await p2.wait_found(shared, p1.peer_id)
    assert f["address"] == f"tcp:127.0.0.1:5101~noise:{encode_key(bytes.fromhex(p1.peer_id))}"
    assert await p2.lookup(only_2) == []  # p1 does not serve it
    assert all(f["peer_id"] != p2.peer_id for f in p2.found)  # never itself

    assert await p1.call(cmd="topics", topics=[shared.hex(), later.hex()]) == {"ok": True}
    await p2.wait_found(later, p1.peer_id)

    await p1.stop()  # goodbye packets
    assert p1.proc.returncode == 0
    async with asyncio.timeout(WAIT):
        while await p2.lookup(shared):
            await asyncio.sleep(0.05)  # polling interval; the bound is the timeout
    assert await p2.lookup(later) == []
