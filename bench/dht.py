"""DHT lookups on loopback: networks of 200 and 1,000 nodes, with 0% and then 20% of them dead.

Each network is spread over worker processes of at most 250 nodes (one event loop each),
driven by this process over JSON lines on stdin/stdout. Steps per network: start the nodes
(worker 0 first, its first node alone, the others bootstrapping from nodes already up); let
announcers (5 per topic, 20 topics, spread over the workers) announce; run lookups of random
topics from random non-announcing nodes, one at a time; kill 20% of the non-announcing nodes (stop them, so
they vanish without notice) and run the lookups again. A lookup succeeds when it finds every
announcer of its topic. One JSON line per (network, killed %):

    {"bench": "dht", "nodes": N, "killed_pct": P, "lookups": L, "success_rate": ...,
     "median_ms": ..., "p99_ms": ..., "mean_queries": ...}

    python bench/dht.py [--sizes 200,1000] [--lookups 200] [--kill-pct 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from typing import Any

from _util import report

from networker.dht import DHT
from networker.encoding import encode_key
from networker.identity import DeviceIdentity

NODES_PER_WORKER = 250
TOPICS = 20
ANNOUNCERS_PER_TOPIC = 5


# -- worker (one process, up to 250 nodes) ------------------------------------------------


class Worker:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.nodes: list[DHT] = []
        self.announcers: set[int] = set()
        self.dead: set[int] = set()

    async def start(self, count: int, bootstrap: list[tuple[str, int]]) -> dict[str, Any]:
        gate = asyncio.Semaphore(25)

        async def one() -> None:
            async with gate:
                known = bootstrap + [d.address for d in self.rng.sample(self.nodes, min(2, len(self.nodes)))]
                # Every node is on 127.0.0.1: loopback records allowed, each port its own host.
                d = DHT(DeviceIdentity.generate(), bootstrap=known, allow_loopback=True)
                await d.start()
                self.nodes.append(d)

        if not bootstrap:
            await one()
            bootstrap = [self.nodes[0].address]
        await asyncio.gather(*(one() for _ in range(count - len(self.nodes))))
        return {"addresses": [list(d.address) for d in self.nodes[:8]]}

    @staticmethod
    def _address(d: DHT) -> str:
        return f"tcp:127.0.0.1:{d.port}~noise:{encode_key(d.identity.peer_id)}"

    async def refresh(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(25)

        async def one(d: DHT) -> None:
            async with gate:
                await d.join([])

        await asyncio.gather(*(one(d) for d in self.nodes))
        return {"contacts": statistics.mean(len(d.contacts()) for d in self.nodes)}

    async def announce(self, topics: list[str], per_topic: int) -> dict[str, Any]:
        out: dict[str, list[str]] = {}
        for t in topics:
            free = [i for i in range(len(self.nodes)) if i not in self.announcers]
            picked = self.rng.sample(free, per_topic)
            self.announcers.update(picked)
            topic = bytes.fromhex(t)
            await asyncio.gather(*(self.nodes[i].announce(topic, [self._address(self.nodes[i])])
                                   for i in picked))
            out[t] = [self.nodes[i].identity.peer_id.hex() for i in picked]
        return {"announced": out}

    async def kill(self, pct: float) -> dict[str, Any]:
        candidates = [i for i in range(len(self.nodes)) if i not in self.announcers and i not in self.dead]
        victims = self.rng.sample(candidates, round(len(self.nodes) * pct / 100))
        await asyncio.gather(*(self.nodes[i].stop() for i in victims))
        self.dead.update(victims)
        return {"killed": len(victims)}

    async def lookup(self, n: int, expected: dict[str, list[str]], trace_ms: float = 0) -> dict[str, Any]:
        seekers = [i for i in range(len(self.nodes)) if i not in self.announcers and i not in self.dead]
        results = []
        for _ in range(n):
            topic = self.rng.choice(sorted(expected))
            d = self.nodes[self.rng.choice(seekers)]
            d.trace_lookups = bool(trace_ms)
            t0 = time.perf_counter()
            found = await d.lookup(bytes.fromhex(topic))
            ms = (time.perf_counter() - t0) * 1000
            missing = set(expected[topic]) - {r.peer_id.hex() for r in found}
            ok = not missing
            if trace_ms and (ms > trace_ms or not ok):
                what = f"missed {len(missing)} of {len(expected[topic])} announcers" if missing else "slow"
                print(f"# {what}: lookup {ms:.0f} ms, {d.last_lookup_queries} queries:\n# "
                      + "\n# ".join(d.last_lookup_trace), file=sys.stderr, flush=True)
            results.append([ms, d.last_lookup_queries, ok])
        return {"results": results}

    async def stop(self) -> dict[str, Any]:
        await asyncio.gather(*(d.stop() for i, d in enumerate(self.nodes) if i not in self.dead))
        return {}


async def worker_main(seed: int) -> None:
    worker = Worker(seed)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "start":
            reply = await worker.start(msg["count"], [tuple(a) for a in msg["bootstrap"]])
        else:
            reply = await getattr(worker, cmd)(**msg)
        print(json.dumps(reply), flush=True)
        if cmd == "stop":
            return


# -- coordinator -------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, seed: int) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "--worker", "--seed", str(seed),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24,
        )
        return cls(proc)

    async def call(self, timeout: float = 600, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a bench worker exited")
        return json.loads(line)


async def run_network(n: int, lookups: int, kill_pct: float, seed: int, trace_ms: float = 0) -> None:
    full, rest = divmod(n, NODES_PER_WORKER)
    sizes = [NODES_PER_WORKER] * full + ([rest] if rest else [])
    workers = [await WorkerProcess.spawn(seed + i) for i in range(len(sizes))]
    try:
        t0 = time.perf_counter()
        first = await workers[0].call(cmd="start", count=sizes[0], bootstrap=[])
        boot = first["addresses"]
        await asyncio.gather(*(w.call(cmd="start", count=c, bootstrap=boot)
                               for w, c in zip(workers[1:], sizes[1:])))
        await asyncio.gather(*(w.call(cmd="refresh") for w in workers))
        print(f"# {n} nodes up in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        rng = random.Random(seed)
        topics = [rng.randbytes(32).hex() for _ in range(TOPICS)]
        expected: dict[str, list[str]] = {t: [] for t in topics}
        per_worker = [ANNOUNCERS_PER_TOPIC // len(workers) + (i < ANNOUNCERS_PER_TOPIC % len(workers))
                      for i in range(len(workers))]
        for w, k in zip(workers, per_worker):
            if k:
                got = await w.call(cmd="announce", topics=topics, per_topic=k)
                for t, peers in got["announced"].items():
                    expected[t].extend(peers)
        for pct in (0.0, kill_pct):
            if pct:
                await asyncio.gather(*(w.call(cmd="kill", pct=pct) for w in workers))
            share = [lookups // len(workers) + (i < lookups % len(workers)) for i in range(len(workers))]
            # One lookup at a time network-wide: latency, not throughput of parallel streams
            # competing for few cores.
            replies = [await w.call(cmd="lookup", n=s, expected=expected, trace_ms=trace_ms)
                       for w, s in zip(workers, share)]
            results = [r for reply in replies for r in reply["results"]]
            ms = sorted(r[0] for r in results)
            report(bench="dht", nodes=n, killed_pct=pct, lookups=len(results),
                   success_rate=round(sum(1 for r in results if r[2]) / len(results), 4),
                   median_ms=round(statistics.median(ms), 2),
                   p99_ms=round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
                   mean_queries=round(statistics.mean(r[1] for r in results), 1))
        await asyncio.gather(*(w.call(cmd="stop") for w in workers))
    finally:
        for w in workers:
            if w.proc.returncode is None:
                w.proc.kill()
            await w.proc.wait()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="200,1000")
    p.add_argument("--lookups", type=int, default=200)
    p.add_argument("--kill-pct", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--trace-slow", type=float, default=0, metavar="MS",
                   help="print to stderr what each lookup slower than MS waited for")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        await worker_main(args.seed)
        return
    for n in (int(s) for s in args.sizes.split(",")):
        await run_network(n, args.lookups, args.kill_pct, args.seed, args.trace_slow)


if __name__ == "__main__":
    asyncio.run(main())
