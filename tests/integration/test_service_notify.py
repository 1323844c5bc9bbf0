"""A real daemon under a fake systemd: it sends READY=1 once its API answers, STOPPING=1 at stop."""

from __future__ import annotations

import asyncio
import socket

from tests.integration.daemons import ok


async def _datagram(s: socket.socket, timeout: float = 30) -> str:
    async with asyncio.timeout(timeout):
        return (await asyncio.get_running_loop().sock_recv(s, 4096)).decode()


async def test_daemon_reports_readiness_and_stopping_to_notify_socket(daemons, tmp_path, monkeypatch):
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(address)
        s.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        a = await daemons("a")
        ready = await _datagram(s)
        lines = ready.splitlines()
        assert "READY=1" in lines and any(x.startswith("STATUS=running; listening on tcp:") for x in lines)
        assert f"MAINPID={a.proc.pid}" in lines
        assert '"peer_id"' in await ok(a.home, "status", "--json")  # ready means the API answers
        await a.stop()
        assert a.proc.returncode == 0
        assert await _datagram(s) == "STOPPING=1"
