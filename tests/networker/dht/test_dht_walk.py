"""The lookup's decisions (:class:`networker.dht.walk.Walk`) driven by a fake clock: no sockets,
no tasks, no sleeps. A dead node's query ends only by its RPC timeout, a fake second after it
was sent; a lookup that finishes before that (in fake time) cannot have waited for one."""

from __future__ import annotations

import heapq
import random

from kademlia.node import Node

from networker.dht.limits import Diversity
from networker.dht.records import PeerRecord
from networker.dht.walk import Walk

RTT = 0.001
STALL = 0.01
RPC_TIMEOUT = 1.0
K = 8


class Net:
    """Nodes that all know each other; ``dead`` never answer, ``slow`` answer after ``slow_rtt``."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.key = rng.randbytes(20)
        self.own = rng.randbytes(20)
        self.nodes = [Node(rng.randbytes(20), "127.0.0.1", 10000 + i) for i in range(n)]
        self.by_id = {n.id: n for n in self.nodes}
        self.ranked = sorted(self.nodes, key=Node(self.key).distance_to)
        self.dead: set[bytes] = set()
        self.slow: dict[bytes, float] = {}
        self.records: dict[bytes, list[PeerRecord]] = {}
        self.asked: list[bytes] = []

    def reply(self, node_id: bytes):
        closest = [n for n in self.ranked if n.id != node_id][:30]
        return self.records.get(node_id, []), closest, b"t" * 20

    def walk(self, peers: list[Node], **kwargs) -> Walk:
        args = {"ksize": K, "alpha": 3, "max_inflight": 12, "diversity": Diversity(loopback_ports_distinct=True)}
        return Walk(self.key, peers, own_id=self.own, **{**args, **kwargs})

    def run(self, walk: Walk, max_steps: int = 1000, stall: float = STALL) -> float:
        """Drive ``walk`` to the end; return the fake time it took. Answers arrive in time order;
        a dead node's query ends only by its RPC timeout, ``RPC_TIMEOUT`` after it was sent."""
        now = 0.0
        pending: list[tuple[float, bytes]] = []  # (when it answers or times out, node id)
        for _ in range(max_steps):
            step = walk.step(now, stall)
            for nid in step.release:
                pending = [(t, p) for t, p in pending if p != nid]
                heapq.heapify(pending)
            for node in step.ask:
                self.asked.append(node.id)
                delay = RPC_TIMEOUT if node.id in self.dead else self.slow.get(node.id, RTT)
                heapq.heappush(pending, (now + delay, node.id))
            if step.done:
                return now
            if step.wake is None:  # only stalled queries are out and nobody is left to ask
                assert pending and not walk.inflight.keys() - walk.stalled
            else:
                assert step.wake <= now + stall
            if pending and (step.wake is None or pending[0][0] <= step.wake):
                now, nid = heapq.heappop(pending)
                walk.on_answer(nid, None if nid in self.dead else self.reply(nid))
            else:
                now = step.wake
        raise AssertionError("the walk did not finish")

    def closest_live(self, k: int = K) -> list[bytes]:
        return [n.id for n in self.ranked if n.id not in self.dead][:k]


def test_unresponsive_nodes_among_the_k_closest_are_passed_over():
    net = Net(200, seed=1)
    # Three of the eight closest never answer.
    net.dead = {net.ranked[i].id for i in (0, 3, 5)}
    walk = net.walk(random.Random(2).sample(net.nodes, 10))
    took = net.run(walk)
    assert [n.id for n, _ in walk.closest()] == net.closest_live()
    # They were asked (they are among the closest), then counted as failed for finishing:
    # the confirmation went on to the next live candidates (9th to 11th closest) instead.
    assert net.dead <= set(net.asked)
    assert {n.id for n in net.ranked[8:11]} <= set(net.asked)
    # Finished without any of their queries ending: still in flight, stalled, never waited for.
    assert net.dead <= set(walk.inflight) and net.dead <= walk.stalled
    assert took < RPC_TIMEOUT  # fake time: no timeout was ever delivered, none was waited out


def test_a_stalled_query_that_answers_late_is_still_used():
    net = Net(200, seed=3)
    slow = net.ranked[1]
    net.slow[slow.id] = 5 * STALL  # stalls, then answers while the walk goes on
    record = object()
    net.records[slow.id] = [record]  # type: ignore[list-item]
    # Plenty of dead far candidates keep the walk busy past the slow node's answer.
    net.dead = {n.id for n in net.ranked[8:]} - {n.id for n in net.ranked[150:]}
    walk = net.walk([net.ranked[150], net.ranked[160], slow, *net.ranked[9:40]], max_inflight=100)
    seen_stalled = set()
    original = walk.on_answer

    def on_answer(node_id, reply):
        seen_stalled.update(walk.stalled)
        original(node_id, reply)

    walk.on_answer = on_answer  # type: ignore[method-assign]
    net.run(walk)
    assert slow.id in seen_stalled  # it was passed over when it answered
    assert slow.id in walk.responders
    assert record in walk.records


def test_with_nobody_else_to_ask_stalled_queries_are_waited_for():
    # Only two slow nodes know anything; everyone else is dead. Passing the slow ones over
    # would end the lookup with nothing: with nobody left to ask, the walk waits for them.
    net = Net(60, seed=4)
    live = net.ranked[10:12]
    net.dead = {n.id for n in net.nodes} - {n.id for n in live}
    for n in live:
        net.slow[n.id] = 20 * STALL
    walk = net.walk(net.nodes[:30], max_inflight=100)
    took = net.run(walk)
    assert {n.id for n, _ in walk.closest()} == {n.id for n in live}
    # It ended once the dead ones' timeouts came in (fewer than k will ever answer).
    assert took >= RPC_TIMEOUT and not walk.inflight


def test_a_full_cap_of_stalled_queries_releases_the_oldest_instead_of_waiting():
    net = Net(200, seed=5)
    # Half the nodes dead: stalled queries pile up to the cap.
    net.dead = {n.id for n in random.Random(6).sample(net.nodes, 100)}
    walk = net.walk(random.Random(7).sample(net.nodes, 20), max_inflight=4)
    inflight_seen = []
    original = walk.step

    def step(now: float, stall: float):
        result = original(now, stall)
        inflight_seen.append(len(walk.inflight))
        return result

    walk.step = step  # type: ignore[method-assign]
    took = net.run(walk)
    assert [n.id for n, _ in walk.closest()] == net.closest_live()
    assert max(inflight_seen) <= 4 and walk.peak_inflight <= 4
    assert walk.released and walk.released <= net.dead  # only stalled (here: dead) ones
    assert took < RPC_TIMEOUT


def test_known_dead_own_and_failed_nodes_are_never_candidates():
    net = Net(50, seed=8)
    known_dead = net.ranked[0].id
    walk = net.walk([*net.nodes, Node(net.own, "127.0.0.1", 1)], is_dead=lambda nid: nid == known_dead)
    step = walk.step(0.0, STALL)
    failed = step.ask[0]
    walk.on_answer(failed.id, None)
    walk.add([failed, net.ranked[0]])
    net.run(walk)
    assert known_dead not in net.asked and net.own not in net.asked
    assert failed.id not in walk.responders


def test_once_converged_the_rest_of_the_k_closest_are_asked_at_once():
    net = Net(200, seed=9)
    walk = net.walk(net.ranked[:24], ksize=20, max_inflight=20)  # the closest are known from the start
    widths = []
    original = walk.step

    def step(now: float, stall: float):
        result = original(now, stall)
        widths.append(len(result.ask))
        return result

    walk.step = step  # type: ignore[method-assign]
    net.run(walk)
    assert walk.converged  # the three closest answered
    assert widths[0] == 3 and max(widths[1:]) > 3  # alpha at first, then the rest in one go
    assert [n.id for n, _ in walk.closest()] == net.closest_live(20)
    assert walk.peak_inflight <= 20


def test_dead_nodes_overtaken_by_later_answers_stall_before_the_time_estimate():
    # The time estimate is inflated (0.5 s: say a burst of queries slowed every answer), but
    # once three queries asked no earlier than a dead node's have answered, it is passed over.
    net = Net(200, seed=10)
    net.dead = {net.ranked[i].id for i in (1, 4, 6)}
    walk = net.walk(net.ranked[:K + 4], max_inflight=K + 4)
    took = net.run(walk, stall=0.5)
    assert [n.id for n, _ in walk.closest()] == net.closest_live()
    assert net.dead <= walk.stalled
    assert took < 0.5  # fake time: no dead node was waited for until the time-based stall
