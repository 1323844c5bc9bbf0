"""Custody audits: a member checks that a backup peer really holds what its receipts claim.

Theory of operation
-------------------
A receipt (:mod:`cobox.backup.receipts`) is only a signed claim: "I hold the first N entries of
feed F". A backup peer that kept 1 entry of 300 can sign one for 300. So members audit, as
proof-of-retrievability verifiers (Storj's audits, Tahoe-LAFS's verifier) do:

1. The member picks ``k`` samples, with replacement and uniformly, over every entry that the
   backup peer claims (its latest receipts) *and* that the member holds itself, across all
   feeds audited (:func:`choose_samples`); fewer entries than ``k``: all of them, once each.
2. It sends a :class:`Challenge` (the group's discovery key, a fresh random 32-byte nonce, the
   feeds and the ``(feed, seq)`` samples) as a ``networker`` service call ``audit``, with a
   deadline.
3. The backup peer reads each sampled entry it holds and answers, per sample,
   ``keyed_blake3(nonce, entry)`` (32 bytes), or an empty answer for an entry it does not hold
   (:func:`answer`, :meth:`AuditServer.handle`). The nonce is fresh, so answers cannot be kept
   from an earlier audit instead of the data, nor computed from the hashes in the tree.
4. The member computes the same from its own copy and compares (:func:`judge`): every answer
   right is a pass; a wrong, empty or malformed answer, a refusal, a closed connection or a
   missed deadline is a failure with its reason (:class:`AuditResult`).

Sizing: a peer that holds a fraction ``h`` of what it claims passes one audit with probability
``h**k``. With ``k = 90``, ``0.95**90 < 0.01``: holding under 95% is caught with probability at
least 99% in one audit. It costs the backup peer ``k`` entry reads and the wire about
``k * 34`` bytes of answers (and about ``k * 6`` bytes of challenge plus 32 per feed), far under
1% of what it holds for any feed of more than a few entries.

Scheduling (:class:`Auditor`, one per group on a member): each backup peer that sent receipts is
audited at jittered times (``interval`` times a random factor in [0.5, 1.5)) and soon after new
receipts arrive (``after_receipt`` seconds times [1, 2)), while it has a live channel with us.
The task runs only while some audited peer is connected and stops when none is. Results are kept
in the store (scope ``audits:<namespace>``), so ``backup status`` shows them after a restart;
``backed_up`` is true for a feed only when the latest audit of that peer passed and covered the
feed up to its current length.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
from blake3 import blake3

from networker import NetworkError, Peer, ServiceError
from storage import Feed, Store
from storage.errors import StorageError

from .. import netview
from ..errors import CoboxError
from .receipts import Receipt

log = logging.getLogger(__name__)

SERVICE = "audit"
SAMPLES = 90            # 0.95 ** 90 < 0.01
MAX_SAMPLES = 256       # the most a backup peer reads for one audit
MAX_FEEDS = 256
NONCE_BYTES = 32
ANSWER_BYTES = 32
KEY_BYTES = 32
INTERVAL = 3600.0       # seconds between audits of one backup peer, on average
MIN_INTERVAL = 10.0     # a configured interval below this is raised to it; a peer's audits are answered this far apart
MAX_AUDITED_PEERS = 4096  # (peer, group) pairs whose last audit time is kept
AFTER_RECEIPT = 2.0     # seconds after new receipts before an audit (times [1, 2))
TIMEOUT = 30.0          # seconds a backup peer has to answer


class MalformedAuditError(CoboxError):
    """An audit challenge or answer from another device is not well formed."""

    code = "malformed_audit"


Sample = tuple[bytes, int]  # (feed key, sequence number)


# -- the wire -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """What the member asks: answer ``keyed_blake3(nonce, entry)`` for each sample, a sample
    being ``(index into feeds, seq)``."""

    discovery_key: bytes
    nonce: bytes
    feeds: tuple[bytes, ...]
    samples: tuple[tuple[int, int], ...]

    @classmethod
    def make(cls, discovery_key: bytes, nonce: bytes, samples: Sequence[Sample]) -> Challenge:
        feeds = tuple(sorted({f for f, _ in samples}))
        index = {f: k for k, f in enumerate(feeds)}
        return cls(discovery_key, nonce, feeds, tuple((index[f], s) for f, s in samples))

    def sample_list(self) -> list[Sample]:
        return [(self.feeds[i], s) for i, s in self.samples]

    def encode(self) -> bytes:
        return msgpack.packb([self.discovery_key, self.nonce, list(self.feeds),
                              [list(s) for s in self.samples]], use_bin_type=True)

    @classmethod
    def decode(cls, body: bytes) -> Challenge:
        try:
            obj = msgpack.unpackb(body, raw=False, max_bin_len=64, max_str_len=0, max_array_len=MAX_SAMPLES + 4,
                                  max_map_len=0, max_ext_len=0)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise MalformedAuditError(f"audit challenge: not msgpack ({e})") from None
        if type(obj) is not list or len(obj) != 4:
            raise MalformedAuditError("audit challenge: expected 4 fields")
        dk, nonce, feeds, samples = obj
        _check(type(dk) is bytes and len(dk) == KEY_BYTES, "discovery key")
        _check(type(nonce) is bytes and len(nonce) == NONCE_BYTES, "nonce")
        _check(type(feeds) is list and 0 < len(feeds) <= MAX_FEEDS, "feeds")
        _check(all(type(f) is bytes and len(f) == KEY_BYTES for f in feeds), "feed key")
        _check(type(samples) is list and 0 < len(samples) <= MAX_SAMPLES, "samples")
        out = []
        for s in samples:
            _check(type(s) is list and len(s) == 2 and all(type(x) is int for x in s), "sample")
            i, seq = s
            _check(0 <= i < len(feeds) and 0 <= seq < 1 << 40, "sample")
            out.append((i, seq))
        return cls(dk, nonce, tuple(feeds), tuple(out))


def encode_answers(answers: Sequence[bytes]) -> bytes:
    return msgpack.packb(list(answers), use_bin_type=True)


def decode_answers(body: bytes, expected: int) -> list[bytes]:
    """The backup peer's answers: ``expected`` items of 32 bytes (or empty: not held)."""
    try:
        obj = msgpack.unpackb(body, raw=False, max_bin_len=ANSWER_BYTES, max_str_len=0,
                              max_array_len=MAX_SAMPLES, max_map_len=0, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise MalformedAuditError(f"audit answer: not msgpack ({e})") from None
    if type(obj) is not list or len(obj) != expected:
        raise MalformedAuditError(f"audit answer: expected {expected} answers")
    for a in obj:
        _check(type(a) is bytes and len(a) in (0, ANSWER_BYTES), "answer")
    return obj


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise MalformedAuditError(f"audit message: bad {what}")


# -- the pure core ----------------------------------------------------------------------------


def answer(nonce: bytes, entry: bytes) -> bytes:
    """What proves holding ``entry`` for this audit: ``keyed_blake3(nonce, entry)``."""
    return blake3(entry, key=nonce).digest()


def choose_samples(eligible: Mapping[bytes, Sequence[tuple[int, int]]], k: int,
                   rng: random.Random) -> list[Sample]:
    """``k`` samples, with replacement and uniformly, over the entries in ``eligible`` (per feed,
    ranges ``[start, end)`` that are claimed and held here). With ``k`` or fewer entries in all,
    every entry once, in order."""
    spans = [(f, a, b) for f in sorted(eligible) for a, b in eligible[f] if b > a]
    total = sum(b - a for _, a, b in spans)
    if total <= k:
        return [(f, s) for f, a, b in spans for s in range(a, b)]
    starts: list[int] = []  # where each span begins among all eligible entries
    acc = 0
    for _, a, b in spans:
        starts.append(acc)
        acc += b - a
    out = []
    for _ in range(k):
        n = rng.randrange(total)
        j = bisect.bisect_right(starts, n) - 1
        f, a, _ = spans[j]
        out.append((f, a + n - starts[j]))
    return out


@dataclass(frozen=True)
class AuditResult:
    """One audit of one backup peer: when, whether it passed (else why), how many samples, and
    per feed the length claimed at the time and the samples that fell in it."""

    peer: bytes
    time: float
    passed: bool
    reason: str | None
    samples: int
    feeds: tuple[tuple[bytes, int, int], ...]  # (feed, claimed length, samples in it)

    def feed(self, key: bytes) -> tuple[int, int] | None:
        return next(((c, s) for f, c, s in self.feeds if f == key), None)

    def encode(self) -> bytes:
        return msgpack.packb([self.peer, self.time, self.passed, self.reason, self.samples,
                              [list(f) for f in self.feeds]], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> AuditResult:
        try:
            peer, t, passed, reason, samples, feeds = msgpack.unpackb(data, raw=False)
            return cls(bytes(peer), float(t), bool(passed), None if reason is None else str(reason), int(samples),
                       tuple((bytes(f), int(c), int(s)) for f, c, s in feeds))
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise MalformedAuditError(f"stored audit result: {e}") from None


def _per_feed(claims: Mapping[bytes, int], samples: Sequence[Sample]) -> tuple[tuple[bytes, int, int], ...]:
    counts = {f: 0 for f in claims}
    for f, _ in samples:
        counts[f] = counts.get(f, 0) + 1
    return tuple((f, claims.get(f, 0), n) for f, n in sorted(counts.items()))


def judge(peer: bytes, when: float, claims: Mapping[bytes, int], samples: Sequence[Sample],
          answers: Sequence[bytes], expected: Sequence[bytes]) -> AuditResult:
    """Compare the backup peer's ``answers`` with ours (``expected``), sample by sample."""
    if len(answers) != len(samples) or len(expected) != len(samples):
        return failed(peer, when, claims, samples, "answers do not match the samples")
    missing = sum(1 for a in answers if not a)
    wrong = sum(1 for a, e in zip(answers, expected, strict=True) if a and a != e)
    if missing or wrong:
        parts = [f"{n} {what}" for n, what in ((missing, "not held"), (wrong, "wrong")) if n]
        return failed(peer, when, claims, samples, f"{' and '.join(parts)} of {len(samples)} samples")
    return AuditResult(peer, when, True, None, len(samples), _per_feed(claims, samples))


def failed(peer: bytes, when: float, claims: Mapping[bytes, int], samples: Sequence[Sample],
           reason: str) -> AuditResult:
    """A failed audit of ``samples`` over ``claims``, for ``reason``."""
    return AuditResult(peer, when, False, reason, len(samples), _per_feed(claims, samples))


def eligible_ranges(claimed: int, held: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The entries of ``[0, claimed)`` that are also in ``held`` (ranges)."""
    return [(a, min(b, claimed)) for a, b in held if a < claimed]


# -- the backup peer's side -------------------------------------------------------------------


class AuditedGroup(Protocol):
    """What an :class:`Auditor` and an :class:`AuditServer` need of a group."""

    store: Store
    namespace: str
    discovery_key: bytes
    receipts: dict[tuple[bytes, bytes], Receipt]

    def feeds(self) -> list[Feed]: ...


class AuditServer:
    """Answers audits for the groups this device holds, to peers that have a live channel with
    it for that group (others get the same refusal as for an unknown group)."""

    def __init__(self, find_group: Callable[[bytes], AuditedGroup | None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.find_group = find_group
        self._clock = clock
        self._last: dict[tuple[bytes, bytes], float] = {}  # (peer, group) -> when we last answered

    async def handle(self, peer: Peer, body: bytes) -> bytes:
        try:
            challenge = Challenge.decode(body)
        except MalformedAuditError as e:
            raise ServiceError(str(e)) from None
        group = self.find_group(challenge.discovery_key)
        if group is None or not netview.carries_group(peer, group):
            raise ServiceError("no such group on this connection")
        # One audit costs up to MAX samples entry reads here: at most one per peer and group per
        # MIN_INTERVAL (members audit far less often), so a peer cannot turn us into a disk pump.
        now, who = self._clock(), (bytes(peer.remote_peer_id), challenge.discovery_key)
        if now - self._last.get(who, -MIN_INTERVAL) < MIN_INTERVAL:
            raise ServiceError(f"at most one audit per {MIN_INTERVAL:g}s")
        self._last[who] = now
        while len(self._last) > MAX_AUDITED_PEERS:
            self._last.pop(next(iter(self._last)))
        feeds = {f.key: f for f in group.feeds()}
        answers: list[bytes] = []
        memo: dict[Sample, bytes] = {}
        for key, seq in challenge.sample_list():
            if (key, seq) not in memo:
                feed = feeds.get(key)
                data = None
                if feed is not None and feed.has(seq):
                    with contextlib.suppress(StorageError):
                        data = await feed.get(seq)
                memo[(key, seq)] = answer(challenge.nonce, data) if data is not None else b""
            answers.append(memo[(key, seq)])
        return encode_answers(answers)


# -- the member's side ----------------------------------------------------------------------


Call = Callable[[bytes, float], Awaitable[bytes]]


async def run_audit(group: AuditedGroup, peer_id: bytes, call: Call, *, samples: int = SAMPLES,
                    timeout: float = TIMEOUT, rng: random.Random | None = None) -> AuditResult | None:
    """Audit ``peer_id`` once through ``call(body, timeout)``; ``None`` when it claims nothing
    that this device holds (nothing to audit)."""
    rng = rng or random.SystemRandom()
    claims: dict[bytes, int] = {}
    eligible: dict[bytes, list[tuple[int, int]]] = {}
    feeds = {f.key: f for f in group.feeds()}
    for (signer, key), receipt in group.receipts.items():
        feed = feeds.get(key)
        if signer != peer_id or feed is None:
            continue
        ranges = eligible_ranges(receipt.length, list(feed.have))
        if ranges:
            claims[key] = receipt.length
            eligible[key] = ranges
    chosen = choose_samples(eligible, samples, rng)
    if not chosen:
        return None
    nonce = os.urandom(NONCE_BYTES)
    expected = [answer(nonce, await feeds[f].get(s)) for f, s in chosen]
    challenge = Challenge.make(group.discovery_key, nonce, chosen)
    when = time.time()
    try:
        body = await call(challenge.encode(), timeout)
        answers = decode_answers(body, len(chosen))
    except TimeoutError:
        return failed(peer_id, when, claims, chosen, f"no answer within {timeout:g} s")
    except ServiceError as e:
        return failed(peer_id, when, claims, chosen, f"refused: {e}")
    except NetworkError as e:
        return failed(peer_id, when, claims, chosen, f"connection lost during the audit: {e}")
    except MalformedAuditError as e:
        return failed(peer_id, when, claims, chosen, str(e))
    return judge(peer_id, when, claims, chosen, answers, expected)


class Auditor:
    """Audits the backup peers of one group (on a member) at jittered times and after new
    receipts; keeps the latest result per peer, in memory and in the store."""

    def __init__(self, group: AuditedGroup, *, interval: float = INTERVAL, samples: int = SAMPLES,
                 timeout: float = TIMEOUT, after_receipt: float = AFTER_RECEIPT,
                 rng: random.Random | None = None) -> None:
        self.group = group
        self.interval = max(interval, MIN_INTERVAL)
        self.samples = samples
        self.timeout = timeout
        self.after_receipt = after_receipt
        self.rng = rng or random.SystemRandom()
        self.results: dict[bytes, AuditResult] = {}
        self._peers: dict[bytes, Peer] = {}   # audited peers' live connections
        self._due: dict[bytes, float] = {}    # peer -> loop time of its next audit
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def _scope(self) -> str:
        return f"audits:{self.group.namespace}"

    async def load(self) -> None:
        for value in (await self.group.store.records(self._scope)).values():
            try:
                r = AuditResult.decode(value)
            except MalformedAuditError as e:
                log.warning("skipping a stored audit result: %s", e)
                continue
            self.results[r.peer] = r

    # -- hooks from the group ---------------------------------------------------------------

    def on_channel_live(self, peer: Peer) -> None:
        self._peers[peer.remote_peer_id] = peer
        if any(signer == peer.remote_peer_id for signer, _ in self.group.receipts):
            self._schedule(peer.remote_peer_id, self.after_receipt * (1 + self.rng.random()))

    def on_channel_closed(self, peer: Peer) -> None:
        if self._peers.get(peer.remote_peer_id) is peer:
            del self._peers[peer.remote_peer_id]
        self._wake.set()

    def on_receipt(self, peer_id: bytes) -> None:
        self._schedule(peer_id, self.after_receipt * (1 + self.rng.random()))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the audit task and wait until it has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    # -- running ----------------------------------------------------------------------------

    async def audit(self, peer_id: bytes) -> AuditResult | None:
        """Audit ``peer_id`` now over its live connection; keep and return the result."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return None

        async def call(body: bytes, timeout: float) -> bytes:
            return await peer.call(SERVICE, body, timeout=timeout)

        result = await run_audit(self.group, peer_id, call, samples=self.samples, timeout=self.timeout,
                                 rng=self.rng)
        if result is None:
            return None
        if not result.passed:
            log.warning("backup peer %s failed an audit: %s", peer_id.hex()[:16], result.reason)
        self.results[peer_id] = result
        await self.group.store.put_record(self._scope, peer_id.hex(), result.encode())
        return result

    def _schedule(self, peer_id: bytes, delay: float) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + delay
        self._due[peer_id] = min(self._due.get(peer_id, at), at)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"audits-{self.group.namespace[:8]}")
            self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the audit task of %s failed", self.group.namespace[:8], exc_info=task.exception())

    async def _run(self) -> None:
        """Audit each connected peer when it is due; return when no audited peer is connected."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = {p: t for p, t in self._due.items() if p in self._peers}
            if not waiting:
                return
            peer_id, at = min(waiting.items(), key=lambda x: x[1])
            self._wake.clear()
            if at > loop.time():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(at - loop.time()):
                        await self._wake.wait()
                continue
            self._due[peer_id] = loop.time() + self.interval * (0.5 + self.rng.random())
            try:
                await self.audit(peer_id)
            except (StorageError, CoboxError, NetworkError) as e:
                log.warning("could not audit backup peer %s: %s", peer_id.hex()[:16], e)

    # -- status -----------------------------------------------------------------------------

    def feed_status(self, peer_id: bytes, feed: Feed, held: int) -> dict[str, Any]:
        """What ``backup status`` shows for one backup peer and feed: the claim and the audit
        that backs it; ``backed_up`` only with a passed audit covering the feed's length."""
        r = self.results.get(peer_id)
        covered = r.feed(feed.key) if r is not None else None
        if r is None or covered is None:
            audit: dict[str, Any] = {"state": "not audited yet"}
        elif r.passed:
            audit = {"state": "verified", "time": r.time, "samples": covered[1], "claimed": covered[0]}
        else:
            audit = {"state": "failed", "time": r.time, "reason": r.reason, "samples": covered[1],
                     "claimed": covered[0]}
        ok = r is not None and r.passed and covered is not None and covered[0] >= feed.length
        return {"claimed": held, "audit": audit, "backed_up": held >= feed.length and ok}

    def peer_status(self, peer_id: bytes) -> dict[str, Any] | None:
        r = self.results.get(peer_id)
        if r is None:
            return None
        return {"time": r.time, "passed": r.passed, "reason": r.reason, "samples": r.samples}
