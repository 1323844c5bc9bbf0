"""The iterative lookup's asyncio shell: find the k closest live nodes to a key and the records
they hold.

Theory of operation
-------------------
kademlia's ``SpiderCrawl`` queries alpha nodes per round and waits for the whole round, so one
dead contact costs a full RPC timeout per round. :class:`TopicCrawl` keeps none of that: every
decision (whom to ask, which queries stalled, when the lookup is finished) is made by a pure
:class:`~.walk.Walk`; this module only carries them out:

1. ``step = walk.step(now, stall)``, with ``stall`` the protocol's adaptive estimate (SRTT + 4
   RTTVAR of recent answers, at most ``stall_after`` seconds; :meth:`DHTProtocol.stall_estimate`);
2. start a ``call_lookup`` task per node in ``step.ask``; hand the tasks of ``step.release`` to
   the protocol (:meth:`DHTProtocol.adopt`: they run out there, so a dead node's timeout still
   drops it from the routing table); stop if ``step.done``;
3. wait for the first query to end, but no later than ``step.wake`` (when the oldest active query
   stalls, within one stall threshold), feed what ended to :meth:`Walk.on_answer`, and go to 1.

So a lookup never waits for a stalled query while someone else can be asked: it asks the next
candidates, its k-closest confirmation passes over stalled nodes (and uses their answers if they
come while it runs), and it ends while stalled queries are still out; those are left to time out
in the background. Only when nobody is left to ask does it wait for stalled queries to end.

The result is the k closest nodes that answered (with their tokens, which an announce needs),
the union of the valid records they returned, and ``queries``: how many RPCs were sent.
``trace`` (a list, if given) receives one line per query sent, answer and wait, for
``bench/dht.py --trace-slow``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kademlia.node import Node

from .protocol import DHTProtocol, LookupReply
from .records import PeerRecord
from .walk import Walk

Clock = Callable[[], float]


class TopicCrawl:
    def __init__(
        self,
        protocol: DHTProtocol,
        key: bytes,
        peers: list[Node],
        ksize: int,
        alpha: int,
        stall_after: float,
        max_inflight: int | None = None,
        trace: list[str] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.protocol: DHTProtocol = protocol
        self.key = key
        self.stall_after = stall_after
        self.clock = clock
        self.walk = Walk(
            key, peers, own_id=protocol.source_node.id, ksize=ksize, alpha=alpha,
            max_inflight=max_inflight if max_inflight is not None else max(4 * alpha, ksize),
            diversity=protocol.diversity, is_dead=protocol.is_dead,
        )
        self.trace = trace
        self._t0 = clock()

    @property
    def records(self) -> list[PeerRecord]:
        return self.walk.records

    @property
    def responders(self) -> dict[bytes, tuple[Node, bytes]]:
        return self.walk.responders

    @property
    def queries(self) -> int:
        return self.walk.queries

    @property
    def peak_inflight(self) -> int:
        return self.walk.peak_inflight

    def closest(self) -> list[tuple[Node, bytes]]:
        """The k closest responders (with their tokens)."""
        return self.walk.closest()

    def _note(self, what: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{(self.clock() - self._t0) * 1000:7.1f} ms {what}")

    async def find(self) -> list[tuple[Node, bytes]]:
        """Run the lookup; return the k closest responders with their announce tokens."""
        tasks: dict[bytes, asyncio.Task[tuple[bool, LookupReply | None]]] = {}
        try:
            while True:
                now = self.clock()
                step = self.walk.step(now, self.protocol.stall_estimate(self.stall_after))
                for node_id in step.release:
                    self.protocol.adopt(tasks.pop(node_id))
                for node in step.ask:
                    tasks[node.id] = asyncio.create_task(self.protocol.call_lookup(node, self.key))
                if self.trace is not None:
                    self._note_step(step, now)
                if step.done:
                    break
                # No wake: only stalled queries are out and nobody is left to ask; each of them
                # ends by its answer or by the protocol's RPC timeout.
                timeout = None if step.wake is None else max(0.0, step.wake - now)
                done, _ = await asyncio.wait(tasks.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for node_id in [nid for nid, task in tasks.items() if task in done]:
                    ok, reply = tasks.pop(node_id).result()
                    self._note(f"answer {node_id[:3].hex()} ok={ok}")
                    self.walk.on_answer(node_id, reply if ok else None)
        finally:
            # Queries still out run to their end in the background, so that a dead node's
            # timeout still removes it from the routing table.
            for task in tasks.values():
                self.protocol.adopt(task)
        return self.closest()

    def _note_step(self, step: Any, now: float) -> None:
        for node in step.ask:
            self._note(f"ask {node.id[:3].hex()}")
        for node_id in step.release:
            self._note(f"release {node_id[:3].hex()}")
        walk = self.walk
        stalled = ",".join(nid[:3].hex() for nid in walk.stalled)
        self._note(f"{'done' if step.done else 'wait'} inflight={len(walk.inflight)} stalled=[{stalled}] "
                   f"answered={len(walk.responders)} wake_in="
                   f"{(step.wake - now) * 1000 if step.wake is not None else 0:.1f} ms")
