"""A worker of bench/nat.py, run inside a network namespace, driven by JSON lines on stdin.

    {"cmd": "relay", "host": IP}                              -> {"address": RELAYADDR}
    {"cmd": "node", "home": DIR, "host": IP, "group": HEX, "relay": RELAYADDR|null}
                                                              -> {"address": ADDR, "relayed": ADDR|null}
    {"cmd": "observe", "relay": RELAYADDR}                    -> {"port": P, "host": H, "obs_port": Q}
    {"cmd": "punch", "port": P, "host": H, "remote_port": Q}  -> {"ok": bool, "seconds": T}
    {"cmd": "append", "n": N, "size": B}                      -> {"feed": HEX}
    {"cmd": "connect", "addr": ADDR}                          -> {"ok": bool, "error": TEXT}
    {"cmd": "wait", "feed": HEX, "length": N, "timeout": S}   -> {"ok": bool, "seconds": T}
    {"cmd": "splice", "host": IP, "to": "HOST:PORT"}          -> {"port": P}  (a plain TCP forwarder, the baseline)
    {"cmd": "cpu"}                                            -> {"cpu": SECONDS, "forwarded": BYTES}
    {"cmd": "quit"}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from networker.address import parse
from networker.group import OpenGroup
from networker.holepunch import connect_from, observe
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from networker.relay import RelayClient, RelayLimits, RelayServer
from storage import Store


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int,
                 forwarded: list[int]) -> None:
    r2, w2 = await asyncio.open_connection(host, port)

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            forwarded[0] += len(data)
            await dst.drain()
        dst.close()

    with contextlib.suppress(asyncio.CancelledError):  # at the worker's exit
        await asyncio.gather(pump(reader, w2), pump(r2, writer), return_exceptions=True)


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    identity = DeviceIdentity.generate()
    relay = node = client = store = group = None
    forwarded = [0]
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["cmd"]
            if op == "relay":
                relay = RelayServer(identity, RelayLimits(circuit_bytes_per_second=0, total_bytes_per_second=0))
                reply({"address": (await relay.listen(f"tcp:{cmd['host']}:0"))[0]})
            elif op == "node":
                store = await Store.open(cmd["home"])
                node = Node(identity, store)
                group = OpenGroup(store, GroupKeys.from_address(bytes.fromhex(cmd["group"])))
                node.join(group)
                address = (await node.listen(f"tcp:{cmd['host']}:0"))[0]
                relayed = None
                if cmd.get("relay"):
                    client = RelayClient(identity, node.take_connection, candidates=lambda c=cmd: [c["relay"]], want=1)
                    client.start()
                    async with asyncio.timeout(20):
                        while not client.relayed_addresses():
                            await asyncio.sleep(0.01)
                    relayed = client.relayed_addresses()[0]
                reply({"address": address, "relayed": relayed})
            elif op == "observe":
                port, host, obs_port = await observe(parse(cmd["relay"]).alternatives[0], identity)
                reply({"port": port, "host": host, "obs_port": obs_port})
            elif op == "punch":
                t0 = time.perf_counter()
                try:
                    sock = await connect_from(cmd["port"], cmd["host"], cmd["remote_port"], 5.0)
                    sock.close()
                    reply({"ok": True, "seconds": time.perf_counter() - t0})
                except (OSError, TimeoutError) as e:
                    reply({"ok": False, "seconds": time.perf_counter() - t0, "error": str(e)})
            elif op == "append":
                assert group is not None
                feed = await group.create_feed()
                payload = os.urandom(cmd["size"])
                for k in range(0, cmd["n"], 16):
                    await feed.append([payload] * min(16, cmd["n"] - k))
                reply({"feed": feed.key.hex()})
            elif op == "connect":
                assert node is not None
                try:
                    await node.connect(cmd["addr"], timeout=10)
                    reply({"ok": True, "error": ""})
                except Exception as e:  # reported to the bench, which prints it
                    reply({"ok": False, "error": str(e)})
            elif op == "wait":
                assert store is not None
                key, t0 = bytes.fromhex(cmd["feed"]), time.perf_counter()
                ok = False
                while time.perf_counter() - t0 < cmd["timeout"]:
                    if any(f.key == key and f.contiguous_length >= cmd["length"] for f in store.feeds()):
                        ok = True
                        break
                    await asyncio.sleep(0.005)
                reply({"ok": ok, "seconds": time.perf_counter() - t0})
            elif op == "splice":
                host, _, port = cmd["to"].rpartition(":")
                server = await asyncio.start_server(
                    lambda r, w, h=host, p=int(port): splice(r, w, h, p, forwarded), cmd["host"], 0)
                reply({"port": server.sockets[0].getsockname()[1]})
            elif op == "cpu":
                total = (relay.bytes_forwarded if relay is not None else 0) + forwarded[0]
                reply({"cpu": cpu(), "forwarded": total})
            elif op == "quit":
                break
    finally:
        if client is not None:
            await client.close()
        if node is not None:
            await node.close()
        if relay is not None:
            await relay.close()
        if store is not None:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
