"""The decisions of one iterative lookup, without IO: whom to ask next and when it is finished.

Theory of operation
-------------------
A :class:`Walk` holds the candidates of a lookup (every contact heard of, ranked by XOR
distance to the key) and the state of each: *not asked*, *in flight* (an *active* query, or a
*stalled* one), *answered* or *failed*. :class:`~.crawl.TopicCrawl` drives it: it calls
:meth:`Walk.step` with the time and the stall threshold, sends the queries the step names, hands
the released ones to the protocol, and waits for the next answer *but never past*
``step.wake`` (the moment the oldest active query stalls); each answer or failure goes to
:meth:`Walk.on_answer`. So the walk itself has no clock and no tasks, and tests drive it with
made-up times.

The rules, per step:

1. a query in flight for ``stall`` seconds (the protocol's adaptive estimate, SRTT + 4 RTTVAR of
   recent answers), or *overtaken* by :data:`OVERTAKEN` answers to queries asked no earlier
   than it (TCP's fast retransmit: three later segments acknowledged mean a loss, without
   waiting for the timer; here it catches dead nodes in a burst of queries whose answers were
   all slowed by the burst itself, which also inflates the time estimate), is *stalled*, for
   good: it counts as failed for finishing and for choosing (it is passed over, never waited
   for while someone else can be asked), but it stays in flight, and if it answers late its
   answer is used like any other;
2. walk the candidates from the closest, counting at most ``ksize`` that answered, are being
   asked (active) or are not asked yet, as far as :class:`~.limits.Diversity` lets them count
   (two per host, four per network: the eclipse defence), passing over stalled and failed
   ones. The not-asked ones among them are *eligible*;
3. the walk is **done** when nothing is eligible and either the ``ksize`` counted have all
   answered, or nothing at all is in flight (fewer than k ever answer). When nobody is left to
   ask but stalled queries are still out, the walk waits for them (their answers, or their RPC
   timeouts): passing a stalled query over is for asking someone else, and when there is no
   one else, giving up on it would end a lookup on a busy machine with nothing found;
4. otherwise ask the closest eligible candidates, so that ``alpha`` queries are active. At most
   ``max_inflight`` queries (stalled ones included; the crawl's default is k or 4 alpha, the
   larger, so all of the k closest can be out at once) are kept; when a candidate is to be
   asked and that many are in flight, the oldest stalled queries are *released* (no longer the
   walk's: the crawl hands them to the protocol, which still times them out and drops the
   node from its routing table).
   Once the ``alpha`` closest counted candidates have all answered, the walk has *converged*
   near the key (Kademlia's own rule, "resend the FIND_NODE to all of the k closest nodes it
   has not already queried", read per answer rather than per round): every eligible candidate
   is then asked at once, as far as ``max_inflight`` has room (no release for these), so the
   k-closest confirmation takes about one round trip instead of k / alpha. A closer candidate
   handed out later puts the walk back to ``alpha`` at a time;
5. ``wake``: the earliest time an active query stalls; None only when no query is active and
   nobody is left to ask (then only an answer or a timeout can change anything). So while a
   candidate can be asked, the driver never waits longer than one stall threshold: a lookup
   never waits out an RPC timeout while someone else could answer.

Candidates the protocol knows to be dead (``is_dead``), this node itself and nodes that failed
in this walk are never added.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kademlia.node import Node

from .limits import Diversity, DiversityCount
from .protocol import LookupReply
from .records import PeerRecord

OVERTAKEN = 3


@dataclass(frozen=True, slots=True)
class Step:
    """What the driver does now: send ``ask``, give up ``release`` (node ids), stop if ``done``,
    else wait for an answer until ``wake`` at the latest."""

    ask: tuple[Node, ...] = ()
    release: tuple[bytes, ...] = ()
    done: bool = False
    wake: float | None = None


@dataclass(slots=True)
class _Plan:
    eligible: list[Node] = field(default_factory=list)
    active: int = 0
    waiting: bool = False
    counted: int = 0
    converged: bool = True  # the alpha closest counted have all answered


class Walk:
    def __init__(
        self,
        key: bytes,
        peers: Iterable[Node],
        *,
        own_id: bytes,
        ksize: int,
        alpha: int,
        max_inflight: int,
        diversity: Diversity,
        is_dead: Callable[[bytes], bool] = lambda _id: False,
    ) -> None:
        self.target = Node(key)
        self.own_id = own_id
        self.ksize = ksize
        self.alpha = alpha
        self.max_inflight = max(alpha, max_inflight)
        self.diversity = diversity
        self.is_dead = is_dead
        self._ranked: list[tuple[int, bytes]] = []  # (distance, id), sorted
        self._nodes: dict[bytes, Node] = {}
        self.inflight: dict[bytes, float] = {}  # node id -> when it was asked
        self.stalled: set[bytes] = set()
        self._overtaken: dict[bytes, int] = {}  # in-flight id -> answers of queries asked no earlier
        self.failed: set[bytes] = set()
        self.released: set[bytes] = set()
        self.responders: dict[bytes, tuple[Node, bytes]] = {}
        self.records: list[PeerRecord] = []
        self.queries = 0
        self.peak_inflight = 0
        self.converged = False  # whether the walk ever asked the rest of the k closest at once
        self.add(peers)

    # -- candidates -----------------------------------------------------------------------

    def add(self, nodes: Iterable[Node]) -> bool:
        """Add contacts as candidates (those not known yet, not dead, not failed, not us);
        return whether one is closer than every candidate seen so far."""
        best = next((d for d, nid in self._ranked if nid not in self.failed), None)
        fresh = []
        for node in nodes:
            nid = node.id
            if nid in self._nodes or nid == self.own_id or nid in self.failed or self.is_dead(nid):
                continue
            self._nodes[nid] = node
            fresh.append((self.target.distance_to(node), nid))
        if not fresh:
            return False
        fresh.sort()
        self._ranked = list(heapq.merge(self._ranked, fresh))
        return best is None or fresh[0][0] < best

    def on_answer(self, node_id: bytes, reply: LookupReply | None) -> None:
        """A query ended: ``reply`` is None for a timeout or a bad reply. Late answers of
        stalled queries are used too; answers of released queries are not expected here."""
        started = self.inflight.pop(node_id, None)
        self.stalled.discard(node_id)
        self._overtaken.pop(node_id, None)
        if started is not None and reply is not None:
            for nid, since in self.inflight.items():
                if since <= started:  # asked no later than this one, still unanswered
                    self._overtaken[nid] = count = self._overtaken.get(nid, 0) + 1
                    if count >= OVERTAKEN:
                        self.stalled.add(nid)
        if reply is None:
            self.failed.add(node_id)
            return
        records, nodes, token = reply
        self.responders[node_id] = (self._nodes[node_id], token)
        self.records.extend(records)
        self.add(nodes)

    # -- deciding -------------------------------------------------------------------------

    def step(self, now: float, stall: float) -> Step:
        for nid, started in self.inflight.items():
            if now >= started + stall:  # the same sum as `wake`, so waking at it stalls it
                self.stalled.add(nid)
        plan = self._plan(now)
        if not plan.eligible and (not self.inflight or (plan.counted >= self.ksize and not plan.waiting)):
            return Step(done=True)
        ask = plan.eligible[: max(0, self.alpha - plan.active)]
        release = self._make_room(len(ask))
        if plan.converged:  # the rest of the k closest at once, as far as the cap has room
            self.converged = True
            room = self.max_inflight - len(self.inflight) - len(ask)
            ask += plan.eligible[len(ask): len(ask) + max(0, room)]
        for node in ask:
            self.inflight[node.id] = now
        self.queries += len(ask)
        self.peak_inflight = max(self.peak_inflight, len(self.inflight))
        active = [s for nid, s in self.inflight.items() if nid not in self.stalled]
        return Step(ask=tuple(ask), release=release, wake=min(active) + stall if active else None)

    def _make_room(self, asking: int) -> tuple[bytes, ...]:
        excess = len(self.inflight) + asking - self.max_inflight
        if excess <= 0:
            return ()
        oldest = sorted((s, nid) for nid, s in self.inflight.items() if nid in self.stalled)[:excess]
        for _, nid in oldest:
            del self.inflight[nid]
            self.stalled.discard(nid)
            self._overtaken.pop(nid, None)
            self.released.add(nid)
        return tuple(nid for _, nid in oldest)

    def _plan(self, now: float) -> _Plan:
        plan = _Plan()
        diverse = DiversityCount(self.diversity)
        for _, nid in self._ranked:
            if plan.counted >= self.ksize:
                break
            if nid in self.failed or nid in self.stalled or nid in self.released:
                continue
            node = self._nodes[nid]
            if not diverse.fits(node.ip, node.port):
                continue
            if nid in self.inflight:
                plan.waiting = True
            elif nid not in self.responders:
                plan.eligible.append(node)
            if plan.counted < self.alpha and nid not in self.responders:
                plan.converged = False
            plan.counted += 1
            diverse.add(node.ip, node.port)
        plan.active = sum(1 for nid in self.inflight if nid not in self.stalled)
        plan.converged = plan.converged and plan.counted >= self.alpha
        return plan

    # -- the result -----------------------------------------------------------------------

    def closest(self) -> list[tuple[Node, bytes]]:
        """The k closest responders (with their tokens), as diverse as the walk counts them."""
        count = DiversityCount(self.diversity)
        ranked = sorted(self.responders.values(), key=lambda nt: self.target.distance_to(nt[0]))
        return [nt for nt in ranked if count.admit(nt[0].ip, nt[0].port)][: self.ksize]
