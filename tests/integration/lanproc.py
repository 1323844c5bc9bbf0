"""A LanDiscovery in its own OS process, driven by JSON lines on stdin.

Start: ``python -m tests.integration.lanproc PORT [TOPIC_HEX ...]``. It prints
``{"ready": true, "peer_id": HEX}`` once its service is registered, then one line per
discovery, ``{"found": {"topic": HEX, "peer_id": HEX, "address": ADDR}}``, and answers:

    {"cmd": "topics", "topics": [HEX, ...]}  -> {"ok": true}
    {"cmd": "lookup", "topic": HEX}          -> {"lookup": HEX, "peers": [[HEX, ADDR], ...]}
    {"cmd": "quit"}                          -> stops LAN discovery (goodbyes sent), exits
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from networker.lan import LanDiscovery


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def on_peer(topic: bytes, peer_id: bytes, address: str) -> None:
    emit({"found": {"topic": topic.hex(), "peer_id": peer_id.hex(), "address": address}})


async def main(port: int, topics: list[str]) -> None:
    lan = LanDiscovery(os.urandom(32), port, interfaces=["127.0.0.1"], on_peer=on_peer)
    lan.set_topics({bytes.fromhex(t) for t in topics})
    await lan.start()
    emit({"ready": True, "peer_id": lan.peer_id.hex()})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "topics":
                lan.set_topics({bytes.fromhex(t) for t in cmd["topics"]})
                emit({"ok": True})
            elif cmd["cmd"] == "lookup":
                peers = lan.lookup(bytes.fromhex(cmd["topic"]))
                emit({"lookup": cmd["topic"], "peers": [[p.hex(), a] for p, a in peers]})
            elif cmd["cmd"] == "quit":
                break
    finally:
        await lan.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
