"""A minimal cobox peer in its own OS process, driven by JSON lines on stdin.

Used by the multi-process tests and by bench/replicate.py until the daemon exists to play
this part. Start: ``python -m tests.integration.peerproc HOME GROUP_ADDRESS_HEX``; it prints
``{"listening": ADDR, "peer_id": HEX}``, then answers one JSON line per command:

    {"cmd": "append", "n": N, "size": B, "batch": K}      -> {"length": L, "feed": HEX}
    {"cmd": "connect", "addr": ADDR}                       -> {"ok": true}
    {"cmd": "wait", "feed": HEX, "length": N, "timeout": S} -> {"ok": bool, "seconds": T}
    {"cmd": "status"}                                      -> {"feeds": {...}, "peers": N, "rss_mb": M}
    {"cmd": "disconnect"}                                  -> {"ok": true}
    {"cmd": "quit"}                                        -> exits
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

from networker.group import OpenGroup
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(home: str, address_hex: str) -> None:
    store = await Store.open(home)
    identity = DeviceIdentity.load_or_create(os.path.join(home, "identity.key"))
    node = Node(identity, store)
    group = OpenGroup(store, GroupKeys.from_address(bytes.fromhex(address_hex)))
    node.join(group)
    addrs = await node.listen("tcp:127.0.0.1:0")
    reply({"listening": addrs[0], "peer_id": identity.peer_id.hex()})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["cmd"]
            if op == "append":
                feed = next((f for f in group.feeds() if f.writable), None) or await group.create_feed()
                payload = os.urandom(cmd.get("size", 1024))
                n, batch = cmd["n"], cmd.get("batch", 100)
                tasks = []
                for k in range(0, n, batch):
                    tasks.append(asyncio.create_task(feed.append([payload] * min(batch, n - k))))
                    if len(tasks) >= 8:
                        await tasks.pop(0)
                await asyncio.gather(*tasks)
                reply({"length": feed.length, "feed": feed.key.hex()})
            elif op == "connect":
                await node.connect(cmd["addr"])
                reply({"ok": True})
            elif op == "wait":
                key = bytes.fromhex(cmd["feed"])
                t0 = time.perf_counter()
                deadline = t0 + cmd.get("timeout", 30)
                ok = False
                while time.perf_counter() < deadline:
                    f = next((f for f in store.feeds() if f.key == key), None)
                    if f is not None and f.contiguous_length >= cmd["length"]:
                        ok = True
                        break
                    await asyncio.sleep(0.002)
                reply({"ok": ok, "seconds": time.perf_counter() - t0})
            elif op == "status":
                reply({
                    "feeds": {f.key.hex(): {"length": f.length, "have": len(f.have),
                                            "contiguous": f.contiguous_length, "writable": f.writable}
                              for f in store.feeds()},
                    "peers": len(node.peers),
                    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                })
            elif op == "disconnect":
                for peer in list(node.peers.values()):
                    peer.close("asked to disconnect")
                reply({"ok": True})
            elif op == "quit":
                break
    finally:
        await node.close()
        await store.close()


if __name__ == "__main__":
    profile_to = os.environ.get("PEERPROC_PROFILE")  # a file to write a pyinstrument profile to
    if profile_to:
        from pyinstrument import Profiler

        with Profiler(async_mode="disabled") as profiler:
            asyncio.run(main(sys.argv[1], sys.argv[2]))
        with open(f"{profile_to}.{os.getpid()}.txt", "w") as out:
            out.write(profiler.output_text(show_all=False))
    else:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
