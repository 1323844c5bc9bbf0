"""``cobox demo``: three daemons on this machine replicating a group, live.

Starts three daemons with temporary homes on loopback (the first also serves as the DHT
bootstrap node of the other two, and LAN discovery is off, so they find each other through the
DHT alone), creates a group on the first, joins the others by its invite URI, appends entries on
each in turn and shows them arrive everywhere, then stops the daemons and removes the homes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import time
from pathlib import Path

from .control.client import Client
from .errors import CoboxError
from .paths import Home


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start(home: Path, extra: list[str]) -> asyncio.subprocess.Process:
    home.mkdir(parents=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cobox.cli", "--home", str(home), "daemon", "--no-lan",
        "--listen", "tcp:127.0.0.1:0", "--dht-host", "127.0.0.1", *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise CoboxError(f"a demo daemon failed to start (home {home})")
        try:
            async with Client(Home(home), timeout=2) as api:
                await api.get("/v1/status")
            return proc
        except CoboxError:
            await asyncio.sleep(0.1)
    raise CoboxError("a demo daemon did not start in time")


async def _count(api: Client) -> int:
    return len(await api.get("/v1/groups/demo/log"))


async def demo() -> int:
    names = ["alice", "bob", "carol"]
    procs: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="cobox-demo-") as tmp:
        homes = [Path(tmp) / n for n in names]
        try:
            dht_port = _free_udp_port()
            print(f"starting 3 daemons in {tmp} (alice is the DHT bootstrap node, udp {dht_port})")
            procs.append(await _start(homes[0], ["--dht-port", str(dht_port)]))
            for home in homes[1:]:
                procs.append(await _start(home, ["--bootstrap", f"127.0.0.1:{dht_port}"]))
            apis = [await Client(Home(h)).__aenter__() for h in homes]
            try:
                group = await apis[0].post("/v1/groups", {"name": "demo"})
                print(f"alice created group 'demo'; invite: {group['invite'][:40]}...")
                for name, api in zip(names[1:], apis[1:], strict=True):
                    await api.post("/v1/groups/join", {"uri": group["invite"]})
                    print(f"{name} joined by URI")
                print("waiting for the peers to find each other through the DHT ...")
                t0 = time.monotonic()
                while time.monotonic() - t0 < 60:
                    peers = [len((await api.get("/v1/status"))["peers"]) for api in apis]
                    if all(p >= 2 for p in peers):
                        break
                    await asyncio.sleep(0.2)
                print(f"connected in {time.monotonic() - t0:.1f}s")
                for round_ in range(2):
                    for name, api in zip(names, apis, strict=True):
                        t = time.monotonic()
                        await api.post("/v1/groups/demo/log", {"text": f"hello #{round_} from {name}"})
                        want = round_ * 3 + names.index(name) + 1
                        while min([await _count(a) for a in apis]) < want and time.monotonic() - t < 30:
                            await asyncio.sleep(0.01)
                        ms = (time.monotonic() - t) * 1000
                        print(f"{name:>5} appended 'hello #{round_} from {name}': on all 3 devices in {ms:.0f} ms")
                print("\nthe log, as carol sees it:")
                for e in await apis[2].get("/v1/groups/demo/log"):
                    print(f"  {e['author'][:8]}  {e['text']}")
            finally:
                for api in apis:
                    await api.__aexit__(None, None, None)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
            for proc in procs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 20)
                if proc.returncode is None:
                    proc.kill()
            print("stopped the daemons and removed their homes")
    return 0
