"""Drive peer processes (tests/integration/peerproc.py) from a test or a benchmark."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class PeerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, hello: dict) -> None:
        self.proc = proc
        self.address: str = hello["listening"]
        self.peer_id: str = hello["peer_id"]

    @classmethod
    async def start(cls, home: Path, group_address: bytes, timeout: float = 20) -> PeerProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.peerproc", str(home), group_address.hex(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
        )
        async with asyncio.timeout(timeout):
            line = await proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("peer process exited before listening")
        return cls(proc, json.loads(line))

    async def call(self, timeout: float = 60, **cmd: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer process died during {cmd}")
        return json.loads(line)

    async def stop(self, timeout: float = 20) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                await self.proc.stdin.drain()
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except (TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
