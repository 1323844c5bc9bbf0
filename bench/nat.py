"""NAT traversal figures in network namespaces (tests/integration/netns.py); one JSON line each.

- ``join_to_first_entry``: daemons, a public relay/bootstrap daemon in no group, A and B behind
  symmetric NATs: seconds from B's ``group join`` (invite only) to B holding A's entry (relayed);
- ``join_to_direct``: the same behind cone-like NATs, to both ends showing ``hole-punched``;
- ``punch``: 20 TCP simultaneous opens per NAT pair from ports the relay observed (both ends
  dial at the same moment), success count and first-try rate;
- ``throughput``: 64 KiB entries from A to B through a relay (A, B behind cone NATs), direct
  (both public) and through a plain TCP forwarder on the relay host (the baseline splice), MB/s,
  and the relay host's CPU seconds per forwarded MB.

Needs root (network namespaces, iptables). ``--quick`` runs fewer tries and fewer bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import report
from tests.integration.daemons import Daemon, ok
from tests.integration.netns import Topology, unavailable

WORKER = Path(__file__).with_name("natproc.py")
DHT_PORT = 4900
FAST = ["[swarm]", "lookup_interval = 2.0", "reconnect_base = 0.5", "reconnect_max = 2.0",
        "[relay]", "reservations = 1", "lookup_interval = 1.0"]


class Worker:
    def __init__(self, ns: str) -> None:
        self.ns = ns

    async def start(self) -> Worker:
        self.proc = await asyncio.create_subprocess_exec(
            *Topology.wrap(self.ns), sys.executable, str(WORKER), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        return self

    async def ask(self, deadline: float = 320, **cmd: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        async with asyncio.timeout(deadline):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker in {self.ns} exited")
        return json.loads(line)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with_stdin = self.proc.stdin
            if with_stdin is not None:
                with_stdin.write(b'{"cmd": "quit"}\n')
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def make(pair: str) -> tuple[Topology, str, str, str, str]:
    """A topology for ``pair`` ("cone-cone", ...): (topology, relay ns, relay ip, A ns, B ns)."""
    t = Topology().up()
    rns, rip = t.public_host("relay")
    kinds = pair.split("-")
    if kinds[0] == "double":
        t.nat("outer", 1)
        t.nat("ra", 3, behind="outer")
    elif kinds[0] == "public":
        pass
    else:
        t.nat("ra", 1, symmetric=kinds[0] == "symmetric")
    if kinds[1] == "public":
        pass
    else:
        t.nat("rb", 2, symmetric=kinds[1] == "symmetric")
    a = t.public_host("a")[0] if kinds[0] == "public" else t.host("a", "ra")[0]
    b = t.public_host("b")[0] if kinds[1] == "public" else t.host("b", "rb")[0]
    return t, rns, rip, a, b


def ip_of(t: Topology, ns: str) -> str:
    from tests.integration.netns import run

    out = run("ip", "-4", "-o", "addr", "show", "dev", "eth0", ns=ns)
    return out.split()[3].split("/")[0]


async def daemons_join(pair: str, until_kind: str | None) -> dict:
    t, rns, rip, ans, bns = make(pair)
    tmp = Path(tempfile.mkdtemp(prefix="cobox-nat-"))
    started: list[Daemon] = []

    async def daemon(name: str, ns: str, extra: list[str], config: list[str]) -> Daemon:
        home = tmp / name
        home.mkdir()
        (home / "config.toml").write_text("".join(f"{line}\n" for line in config))
        d = await Daemon(home, extra, host=ip_of(t, ns), wrap=t.wrap(ns)).start()
        started.append(d)
        return d

    try:
        await daemon("relay", rns, ["--no-lan", "--dht-port", str(DHT_PORT)],
                     ["[relay]", f"listen = 'tcp:{rip}:0'", "lookup_interval = 1.0"])
        via = ["--no-lan", "--bootstrap", f"{rip}:{DHT_PORT}"]
        a = await daemon("a", ans, via, FAST)
        b = await daemon("b", bns, via, FAST)
        uri = (await ok(a.home, "group", "create", "g")).strip()
        await ok(a.home, "log", "append", "g", "first")
        t0 = time.perf_counter()
        await ok(b.home, "group", "join", uri)
        await ok(b.home, "sync", "wait", "g", "--timeout", "60")
        first = time.perf_counter() - t0
        kind = ""
        async with asyncio.timeout(60):
            while True:
                peers = json.loads(await ok(b.home, "peers", "--json"))
                kind = peers[0]["kind"] if peers else ""
                if until_kind is None or kind == until_kind:
                    break
                await asyncio.sleep(0.1)
        return {"pair": pair, "first_entry_s": round(first, 2), "kind": kind,
                "to_kind_s": round(time.perf_counter() - t0, 2)}
    finally:
        for d in started:
            await d.stop()
        t.down()


async def punch(pair: str, tries: int) -> dict:
    t, rns, rip, ans, bns = make(pair)
    workers: list[Worker] = []
    try:
        relay, a, b = [await Worker(ns).start() for ns in (rns, ans, bns)]
        workers += [relay, a, b]
        address = (await relay.ask(cmd="relay", host=rip))["address"]
        results = []
        for _ in range(tries):
            oa, ob = await asyncio.gather(a.ask(cmd="observe", relay=address), b.ask(cmd="observe", relay=address))
            ra, rb = await asyncio.gather(
                a.ask(cmd="punch", port=oa["port"], host=ob["host"], remote_port=ob["obs_port"]),
                b.ask(cmd="punch", port=ob["port"], host=oa["host"], remote_port=oa["obs_port"]))
            results.append((ra["ok"] and rb["ok"], max(ra["seconds"], rb["seconds"])))
        wins = [s for good, s in results if good]
        return {"pair": pair, "tries": tries, "succeeded": len(wins),
                "first_syn_rate": round(sum(1 for s in wins if s < 0.9) / tries, 2),  # no SYN retransmit (1 s)
                "median_s": round(sorted(wins)[len(wins) // 2], 3) if wins else None}
    finally:
        for w in workers:
            await w.stop()
        t.down()


async def throughput(mb: int) -> list[dict]:
    out = []
    for path in ("relayed", "direct", "plain-splice"):
        t, rns, rip, ans, bns = make("cone-cone" if path == "relayed" else "public-public")
        workers: list[Worker] = []
        tmp = tempfile.mkdtemp(prefix="cobox-natbench-")
        try:
            relay, a, b = [await Worker(ns).start() for ns in (rns, ans, bns)]
            workers += [relay, a, b]
            address = (await relay.ask(cmd="relay", host=rip))["address"]
            group = os.urandom(32).hex()
            na = await a.ask(cmd="node", home=f"{tmp}/a", host=ip_of(t, ans), group=group,
                             relay=address if path == "relayed" else None)
            await b.ask(cmd="node", home=f"{tmp}/b", host=ip_of(t, bns), group=group, relay=None)
            n = mb * 16  # 64 KiB entries
            feed = (await a.ask(cmd="append", n=n, size=65536))["feed"]
            cpu0 = (await relay.ask(cmd="cpu"))["cpu"]
            t0 = time.perf_counter()
            target = na["relayed"] if path == "relayed" else na["address"]
            if path == "plain-splice":  # B -> a plain TCP forwarder on the relay host -> A
                host_port = target.split("~")[0].removeprefix("tcp:")
                port = (await relay.ask(cmd="splice", host=rip, to=host_port))["port"]
                target = target.replace(host_port, f"{rip}:{port}")
            r = await b.ask(cmd="connect", addr=target)
            if not r["ok"]:
                raise RuntimeError(r["error"])
            w = await b.ask(cmd="wait", feed=feed, length=n, timeout=300)
            seconds = time.perf_counter() - t0
            c = await relay.ask(cmd="cpu")
            row = {"path": path, "mb": mb, "ok": w["ok"], "seconds": round(seconds, 2),
                   "mb_per_s": round(mb * 1.048576 / seconds, 1)}
            if path != "direct":
                row["relay_cpu_s_per_mb"] = round((c["cpu"] - cpu0) / max(c["forwarded"] / 1e6, 1e-9), 4)
            out.append(row)
        finally:
            for wk in workers:
                await wk.stop()
            t.down()
    return out


async def main(args: argparse.Namespace) -> None:
    reason = unavailable()
    if reason:
        sys.exit(f"bench/nat.py: {reason}")
    if args.only == "throughput":
        for row in await throughput(16 if args.quick else 64):
            report(bench="nat", what="throughput", **row)
        return
    tries = 5 if args.quick else 20
    report(bench="nat", what="join_to_first_entry", **await daemons_join("symmetric-symmetric", None))
    report(bench="nat", what="join_to_direct", **await daemons_join("cone-cone", "hole-punched"))
    for pair in ("cone-cone", "double-cone", "cone-symmetric", "symmetric-symmetric"):
        report(bench="nat", what="punch", **await punch(pair, tries))
    for row in await throughput(16 if args.quick else 64):
        report(bench="nat", what="throughput", **row)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["throughput"], help="run only these rows")
    asyncio.run(main(p.parse_args()))
