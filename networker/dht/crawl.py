"""The iterative lookup: find the k closest live nodes to a key and the records they hold.

Theory of operation
-------------------
kademlia's ``SpiderCrawl`` queries alpha nodes per round and waits for the whole round, so one
dead contact costs a full RPC timeout per round. :class:`TopicCrawl` subclasses it (keeping its
``NodeHeap`` of the k nearest candidates) and replaces the loop:

1. keep up to ``alpha`` queries *active*, always to the closest uncontacted candidates;
   a query still unanswered after ``stall_after`` seconds stops counting as active (it stays in
   flight until its own timeout), so slow or dead peers never hold the lookup back;
2. as soon as *any* answer arrives: remember the responder (and its announce token), merge the
   valid records, push the returned contacts into the candidate heap and refill the slots;
   a query that times out removes its node from the candidates (and, in the protocol, from the
   routing table);
3. stop when no candidate among the k nearest is uncontacted and either nothing is in flight or
   at least k nodes have answered (queries still in flight are then abandoned: cancelled).

The result is the k closest nodes that answered (with their tokens, which an announce needs),
the union of the valid records they returned, and ``queries``: how many RPCs were sent.
"""

from __future__ import annotations

import asyncio
import time

from kademlia.crawling import SpiderCrawl
from kademlia.node import Node

from .protocol import DHTProtocol, LookupReply, cancel_all
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
    ) -> None:
        own = protocol.source_node.id
        super().__init__(protocol, Node(key), [p for p in peers if p.id != own], ksize, alpha)
        self.protocol: DHTProtocol = protocol
        self.key = key
        self.stall_after = stall_after
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
                active = sum(1 for _, started in inflight.values() if now - started < self.stall_after)
                uncontacted = self.nearest.get_uncontacted()
                if not uncontacted and (not inflight or len(self.responders) >= self.ksize):
                    break
                for node in uncontacted[: max(0, self.alpha - active)]:
                    self.nearest.mark_contacted(node)
                    task = asyncio.create_task(self.protocol.call_lookup(node, self.key))
                    inflight[task] = (node, now)
                    self.queries += 1
                if not inflight:
                    break
                deadlines = [s + self.stall_after - now for _, s in inflight.values()]
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
            await cancel_all(list(inflight))
        target = self.node
        closest = sorted(self.responders.values(), key=lambda nt: nt[0].distance_to(target))
        return closest[: self.ksize]

    def _on_answer(self, node: Node, ok: bool, reply: LookupReply | None) -> None:
        if not ok or reply is None:
            self._failed.add(node.id)
            self.nearest.remove([node.id])
            return
        records, nodes, token = reply
        self.responders[node.id] = (node, token)
        self.records.extend(records)
        self.nearest.push([n for n in nodes if n.id not in self._failed])

    async def _nodes_found(self, responses: object) -> None:  # pragma: no cover - unused
        raise NotImplementedError("TopicCrawl.find replaces the round-based crawl")
