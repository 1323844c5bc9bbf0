"""Run real cobox daemons (separate processes) and CLI commands (client commands in this process, see
:mod:`tests.integration.inproc`; the rest as processes), for the end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.integration.inproc import in_process, run_cli

ROOT = Path(__file__).resolve().parents[2]
NO_DISCOVERY = ["--no-lan", "--no-dht"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("COBOX_")}
    e["PYTHONPATH"] = str(ROOT)
    # Every test daemon runs on 127.0.0.1 and finds the others through the DHT.
    e["COBOX_DHT_ALLOW_LOOPBACK"] = "true"
    return e


async def cli(home: Path, *args: str, stdin: bytes | None = None, timeout: float = 60) -> tuple[int, str, str]:
    """``cobox --home HOME ARGS``: (exit code, stdout, stderr). A client command runs in this process
    (:mod:`tests.integration.inproc`: same entry point, streams and outcome, no interpreter start);
    the rest, and every command when ``COBOX_TESTS_CLI_PROCESS`` is set, in a new process."""
    if in_process(args, ROOT):
        return await run_cli(["--home", str(home), *args], stdin, timeout)
    return await cli_process(home, *args, stdin=stdin, timeout=timeout)


async def cli_process(home: Path, *args: str, stdin: bytes | None = None,
                      timeout: float = 60) -> tuple[int, str, str]:
    """``cobox --home HOME ARGS`` as a new ``python -m cobox.cli`` process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cobox.cli", "--home", str(home), *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(), cwd=ROOT)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"cobox {' '.join(args)} did not finish in {timeout}s") from None
    return proc.returncode or 0, out.decode(), err.decode()


async def ok(home: Path, *args: str, **kw: object) -> str:
    rc, out, err = await cli(home, *args, **kw)  # type: ignore[arg-type]
    assert rc == 0, f"cobox {' '.join(args)} failed ({rc}): {err.strip()}"
    return out


class Daemon:
    def __init__(self, home: Path, extra: list[str] | None = None, *, host: str = "127.0.0.1",
                 wrap: list[str] | None = None) -> None:
        self.home = home
        self.extra = extra or []
        self.host = host  # the address it listens and runs its DHT node on
        self.wrap = wrap or []  # e.g. ["ip", "netns", "exec", NAME]
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self, timeout: float = 30) -> Daemon:
        self.home.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.wrap, sys.executable, "-m", "cobox.cli", "--home", str(self.home), "daemon",
            "--listen", f"tcp:{self.host}:0", "--dht-host", self.host, *self.extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env(), cwd=ROOT)
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("daemon exited at start:\n" + "".join(self.output))
                self.output.append(line.decode())
                if "daemon" in line.decode() and "running" in line.decode():
                    break
        self._drain = asyncio.ensure_future(self._read_rest())
        return self

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.output.append(line.decode())

    async def status(self) -> dict:
        return json.loads(await ok(self.home, "status", "--json"))

    async def address(self) -> str:
        return (await self.status())["listening"][0]

    async def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._drain

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        await self._drain


async def poll(check: Callable[[], Awaitable[object]], timeout: float = 60.0, every: float = 0.2) -> bool:
    """Call ``check`` (a few CLI commands) until it returns something true, every ``every``
    seconds for at most ``timeout`` seconds; whether it did. Bounded by time, not by a number of
    calls: an in-process command takes milliseconds, a process hundreds of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(every)
    return True
