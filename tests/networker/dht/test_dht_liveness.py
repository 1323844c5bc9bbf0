"""Dead contacts and slow queries: the RTT-based stall threshold, the recently-dead set (skipped
by lookups, never handed out) and the cap on queries in flight when stalled queries widen a
lookup. The crawl tests run against a synthetic network (no sockets): every live node knows
everyone and answers after ``RTT``; dead nodes never answer (their calls never end: a lookup
that waited for one would hit the test's timeout). The walk's rules themselves are tested with a
fake clock in test_dht_walk.py."""

from __future__ import annotations

import asyncio
import os
import random

from kademlia.node import Node

from networker.dht.crawl import TopicCrawl
from networker.dht.limits import Diversity
from networker.dht.protocol import DEAD_MEMORY, RTT_MEMORY, STALE_STALL, STALL_FLOOR, DHTProtocol
from networker.dht.storage import RecordStorage

RTT = 0.002
STALL = 0.01
REPLY_NODES = 60  # enough that the k closest live nodes are handed out with half the nodes dead


class FakeNetwork:
    """Stands in for DHTProtocol in TopicCrawl; ``calls`` records whom the crawl asked."""

    def __init__(self, n: int, dead_fraction: float, seed: int, known_dead: int = 0) -> None:
        rng = random.Random(seed)
        self.source_node = Node(rng.randbytes(20))
        self.nodes = [Node(rng.randbytes(20), "127.0.0.1", 10000 + i) for i in range(n)]
        self.dead = {n.id for n in rng.sample(self.nodes, round(n * dead_fraction))}
        self.known_dead = set(list(self.dead)[:known_dead])
        self.calls: list[bytes] = []
        self.inflight = 0
        self.peak = 0
        self.background: set[asyncio.Task[object]] = set()
        self.diversity = Diversity(loopback_ports_distinct=True)  # every fake node is on 127.0.0.1

    def is_dead(self, node_id: bytes) -> bool:
        return node_id in self.known_dead

    def stall_estimate(self, ceiling: float) -> float:
        return min(ceiling, STALL)

    def adopt(self, task: asyncio.Task[object]) -> None:
        self.background.add(task)

    async def call_lookup(self, node: Node, key: bytes):
        self.calls.append(node.id)
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            if node.id in self.dead:
                await asyncio.get_running_loop().create_future()  # never answers, never times out
            await asyncio.sleep(RTT)
            target = Node(key)
            # Live nodes keep handing out dead contacts (they have not timed out on them).
            closest = sorted((n for n in self.nodes if n.id != node.id), key=target.distance_to)
            return True, ([], closest[:REPLY_NODES], b"t" * 20)
        finally:
            self.inflight -= 1

    def closest_live(self, key: bytes, k: int) -> list[bytes]:
        live = [n for n in self.nodes if n.id not in self.dead]
        return [n.id for n in sorted(live, key=Node(key).distance_to)[:k]]

    async def close(self) -> None:
        for t in self.background:
            t.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)


async def crawl(net: FakeNetwork, key: bytes, **kwargs) -> TopicCrawl:
    peers = random.Random(1).sample(net.nodes, 8)
    c = TopicCrawl(net, key, peers, ksize=20, alpha=3, stall_after=0.25, **kwargs)  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        found = await c.find()
    assert [n.id for n, _ in found] == net.closest_live(key, 20)
    return c


async def test_finds_the_k_closest_live_nodes_with_a_fifth_dead():
    net = FakeNetwork(300, 0.2, seed=1)
    try:
        c = await crawl(net, os.urandom(20))
        assert c.queries == len(net.calls)
    finally:
        await net.close()


async def test_known_dead_contacts_are_never_queried():
    net = FakeNetwork(300, 0.2, seed=2, known_dead=60)
    try:
        await crawl(net, os.urandom(20))
        assert net.known_dead  # everyone hands them out, yet nobody asks them
        assert not set(net.calls) & net.known_dead
    finally:
        await net.close()


async def test_stall_widening_keeps_at_most_max_inflight():
    # Half the nodes dead: every stalled query widens the lookup, up to the cap; past it the
    # oldest stalled queries are handed to the protocol (adopted), never waited for.
    net = FakeNetwork(200, 0.5, seed=3)
    try:
        c = await crawl(net, os.urandom(20), max_inflight=6)
        assert c.peak_inflight <= 6
        assert c.walk.released and c.walk.released <= net.dead
        assert len(net.background) >= len(c.walk.released)
    finally:
        await net.close()
    # Without that cap the same lookup would have kept more in flight.
    net = FakeNetwork(200, 0.5, seed=3)
    try:
        c = await crawl(net, os.urandom(20), max_inflight=100)
        assert c.peak_inflight > 6 and not c.walk.released
    finally:
        await net.close()


async def test_dead_nodes_among_the_k_closest_are_not_waited_for():
    net = FakeNetwork(300, 0.2, seed=4)
    key = os.urandom(20)
    try:
        c = await crawl(net, key)  # finishes although no dead node's call ever ends
        by_distance = sorted(net.nodes, key=Node(key).distance_to)
        dead_near = [n.id for n in by_distance[:20] if n.id in net.dead]
        assert dead_near and set(dead_near) <= set(net.calls)  # asked, passed over
        # Their calls are still out (handed to the protocol): the lookup ended without them.
        assert net.inflight >= len(dead_near)
        assert set(dead_near) <= c.walk.stalled | c.walk.released
    finally:
        await net.close()


def make_protocol() -> DHTProtocol:
    return DHTProtocol(Node(os.urandom(20)), RecordStorage(), 20, diversity=Diversity(loopback_ports_distinct=True))


def test_stall_estimate_follows_recent_rtts_and_forgets_old_ones():
    p = make_protocol()
    assert p.stall_estimate(0.25) == 0.25  # nothing seen yet: the ceiling
    for i in range(20):
        p.observe_rtt(0.2, now=float(i))  # a busy period
    assert p.stall_estimate(0.25, now=19.5) > 0.2
    # Long after: the first new sample replaces the old estimate instead of nudging it.
    p.observe_rtt(0.002, now=20 + RTT_MEMORY + 1)
    assert p.stall_estimate(0.25, now=20 + RTT_MEMORY + 1) == STALL_FLOOR
    for i in range(20):
        p.observe_rtt(0.02, now=30 + i * 0.01)
    assert 0.02 <= p.stall_estimate(0.25, now=30.2) < 0.1


def test_an_idle_nodes_first_queries_stall_at_three_minimum_rtts():
    # A busy past (join under load) leaves a high smoothed estimate; the quiet minimum is 10 ms.
    p = make_protocol()
    p.observe_rtt(0.01, now=0.0)
    for i in range(20):
        p.observe_rtt(0.2, now=1.0 + i * 0.1)
    assert p.stall_estimate(1.0, now=3.1) > 0.2  # still busy: the smoothed estimate
    # Idle for longer than RTT_MEMORY: the next lookup's first queries stall after 3 x 10 ms,
    # not after the stale 200+ ms (nor the ceiling) while they wait for a first answer.
    idle = 3.0 + RTT_MEMORY + 1
    assert abs(p.stall_estimate(1.0, now=idle) - 0.03) < 1e-9
    assert p.stall_estimate(0.02, now=idle) == 0.02  # the ceiling still caps it
    # A minimum taken in a busy past is high too: the stale restart is capped.
    busy = make_protocol()
    for i in range(20):
        busy.observe_rtt(0.15 + i * 0.001, now=i * 0.1)
    assert busy.stall_estimate(1.0, now=2.0) > 0.15
    assert busy.stall_estimate(1.0, now=2.0 + RTT_MEMORY + 1) == STALE_STALL
    p.observe_rtt(0.004, now=idle)  # the first answer restarts the smoothed estimate
    assert abs(p.stall_estimate(1.0, now=idle) - 0.012) < 1e-9  # 4 ms + 4 x 2 ms


def test_dead_contacts_expire_and_are_forgotten_when_heard_from():
    p = make_protocol()
    a, b = os.urandom(20), os.urandom(20)
    p.mark_dead(a, now=100.0)
    p.mark_dead(b, now=100.0)
    assert p.is_dead(a, now=100.0 + DEAD_MEMORY - 1)
    assert not p.is_dead(a, now=100.0 + DEAD_MEMORY)
    p.heard_from(b)
    assert not p.is_dead(b, now=101.0)


def test_timed_out_contact_is_not_handed_out():
    p = make_protocol()
    contacts = [Node(os.urandom(20), "127.0.0.1", 20000 + i) for i in range(10)]
    for n in contacts:
        p.router.add_contact(n)
    victim = contacts[3]
    p.handle_call_response((False, None), victim)  # its query timed out
    assert p.is_dead(victim.id)
    # Even if it comes back into a bucket (say as a promoted replacement), it is not handed out.
    p.router.add_contact(victim)
    asker, key = os.urandom(20), os.urandom(20)
    reply = p.rpc_find_node(("127.0.0.1", 30000), asker, key)
    assert reply is not None and victim.id not in {n[0] for n in reply}
    assert len(reply) == 9  # the other nine (never the asker itself)
    # Once it answers again it is handed out again.
    p.handle_call_response((True, victim.id), victim)
    reply = p.rpc_find_node(("127.0.0.1", 30000), asker, key)
    assert victim.id in {n[0] for n in reply}
