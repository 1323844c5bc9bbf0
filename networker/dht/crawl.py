"""The iterative lookup: find the k closest live nodes to a key and the records they hold.

Theory of operation
-------------------
kademlia's ``SpiderCrawl`` queries alpha nodes per round and waits for the whole round, so one
dead contact costs a full RPC timeout per round. :class:`TopicCrawl` subclasses it (keeping its
``NodeHeap`` of the k nearest candidates) and replaces the loop:

1. keep up to ``alpha`` queries *active*, always to the closest candidates not yet asked
   (never to contacts the protocol saw time out recently, :meth:`DHTProtocol.is_dead`);
   candidates being asked are passed over when choosing (a slow or dead one never holds the
   walk back), and a query unanswered after the protocol's stall estimate (SRTT + 4 RTTVAR of
   recent answers, at most ``stall_after`` seconds) is *stalled*: it stops counting as active,
   so the next candidate is asked at once (it stays in flight until its own timeout and is
   still used if it answers). At most ``max_inflight`` (default 4 alpha) queries, stalled
   ones included, are in flight at once;
2. as soon as *any* answer arrives: remember the responder (and its announce token), merge the
   valid records, push the returned contacts (less those known dead) into the candidate heap
   and refill the slots;
   a query that times out removes its node from the candidates (and, in the protocol, from the
   routing table);
   Candidates are counted towards the k closest only as far as :class:`~.limits.Diversity`
   allows (two per host, four per network): the others are passed over, never asked. So 20
   node ids chosen near the key and run from one machine take two of the k places, and the
   walk goes on to the honest nodes behind them (the eclipse attack);
3. stop when the k closest candidates, passing over stalled queries (but waiting for active
   ones), have all answered (or,
   if fewer than k ever answer, when nothing is left to ask or in flight); queries
   still in flight are left to time out in the background (the protocol owns them), so a dead
   node is still dropped from the routing table.

The result is the k closest nodes that answered (with their tokens, which an announce needs),
the union of the valid records they returned, and ``queries``: how many RPCs were sent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kademlia.crawling import SpiderCrawl
from kademlia.node import Node

from .limits import DiversityCount
from .protocol import DHTProtocol, LookupReply
from .records import PeerRecord


class TopicCrawl(SpiderCrawl):
    def __init__(
        self,
        protocol: DHTProtocol,
        key: bytes,
        peers: list[Node],
        ksize: int,
        alpha: int,
        stall_after: float,
        max_inflight: int | None = None,
    ) -> None:
        own = protocol.source_node.id
        peers = [p for p in peers if p.id != own and not protocol.is_dead(p.id)]
        super().__init__(protocol, Node(key), peers, ksize, alpha)
        self.protocol: DHTProtocol = protocol
        self.key = key
        self.stall_after = stall_after
        self.max_inflight = max(alpha, max_inflight if max_inflight is not None else 4 * alpha)
        self.peak_inflight = 0
        self.records: list[PeerRecord] = []
        self.responders: dict[bytes, tuple[Node, bytes]] = {}
        self.queries = 0
        self._failed: set[bytes] = set()

    async def find(self) -> list[tuple[Node, bytes]]:
        """Run the lookup; return the k closest responders with their announce tokens."""
        inflight: dict[asyncio.Task[tuple[bool, LookupReply | None]], tuple[Node, float]] = {}
        try:
            while True:
                now = time.monotonic()
                stall = self.protocol.stall_estimate(self.stall_after)
                eligible, active, enough = self._plan(inflight, now, stall)
                if not eligible and (enough or not inflight):
                    break
                room = min(self.alpha - len(active), self.max_inflight - len(inflight))
                for node in eligible[: max(0, room)]:
                    self.nearest.mark_contacted(node)
                    task = asyncio.create_task(self.protocol.call_lookup(node, self.key))
                    inflight[task] = (node, now)
                    self.queries += 1
                self.peak_inflight = max(self.peak_inflight, len(inflight))
                deadlines = [s + stall - now for _, s in inflight.values()]
                pending = [d for d in deadlines if d > 0]
                done, _ = await asyncio.wait(
                    inflight,
                    timeout=min(pending) if pending else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    node, _ = inflight.pop(task)
                    self._on_answer(node, *task.result())
        finally:
            # Abandoned queries run out in the background, so that a dead node's timeout
            # still removes it from the routing table.
            for task in inflight:
                self.protocol.adopt(task)
        return self.closest()

    def closest(self) -> list[tuple[Node, bytes]]:
        """The k closest responders (with their tokens), as diverse as :meth:`_plan` counts them."""
        target = self.node
        count = DiversityCount(self.protocol.diversity)
        ranked = sorted(self.responders.values(), key=lambda nt: nt[0].distance_to(target))
        return [nt for nt in ranked if count.admit(nt[0].ip, nt[0].port)][: self.ksize]

    def _plan(
        self, inflight: dict[Any, tuple[Node, float]], now: float, stall: float
    ) -> tuple[list[Node], list[Node], bool]:
        """Walk the candidates from the closest until k that answered, are being asked or are
        not asked yet are counted; stalled queries are passed over (never waited for while
        there is someone else to ask). Return (not asked yet, active queries, whether the k
        counted have all answered)."""
        asking = {n.id: now - started < stall for n, started in inflight.values()}
        active = [n for n, _ in inflight.values() if asking[n.id]]
        eligible: list[Node] = []
        counted = 0
        waiting = False
        diverse = DiversityCount(self.protocol.diversity)
        for _, node in sorted(self.nearest.heap, key=lambda dn: dn[0]):
            if counted >= self.ksize:
                break
            if not diverse.fits(node.ip, node.port):
                continue
            if node.id in self.responders:
                counted += 1
            elif node.id in asking:
                if not asking[node.id]:
                    continue
                counted += 1
                waiting = True
            elif node.id not in self.nearest.contacted:
                eligible.append(node)
                counted += 1
            else:
                continue
            diverse.add(node.ip, node.port)
        return eligible, active, counted >= self.ksize and not waiting

    def _on_answer(self, node: Node, ok: bool, reply: LookupReply | None) -> None:
        if not ok or reply is None:
            self._failed.add(node.id)
            self.nearest.remove([node.id])
            return
        records, nodes, token = reply
        self.responders[node.id] = (node, token)
        self.records.extend(records)
        dead = self.protocol.is_dead
        self.nearest.push([n for n in nodes if n.id not in self._failed and not dead(n.id)])

    async def _nodes_found(self, responses: object) -> None:  # pragma: no cover - unused
        raise NotImplementedError("TopicCrawl.find replaces the round-based crawl")
