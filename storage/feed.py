"""A feed: a single-writer, append-only log signed with Ed25519 and hashed into a BLAKE3
Merkle tree.

Theory of operation
-------------------
A *writable* feed holds its secret key. ``append(entries)`` hashes the entries as new leaves,
closes the parents they complete (``tree.append_leaves``), signs the new tree once for the whole
batch, and hands the entries, the new nodes and the signature to the store's writer as one job.
The in-memory tree (``_pending``) moves forward at once so that the next append can be built
while this one commits; the *committed* tree (``_committed``), the length readers see, moves only
when the commit is done. If a commit fails, the pending tree falls back to the committed one and
the feed's epoch is bumped, which aborts every queued append built on the failed batch.

A *replica* holds only the public key. ``put_range(start, entries, proof)`` verifies the entries
against the proof and the signature before anything is written (``proof.verify_range``), then
compares every node it established with the nodes already stored: two valid signatures
that disagree on a node are a fork, which is recorded with its evidence and raised, and nothing
of the new tree is stored. Only nodes a signature covers are evidence: the roots rebuilt from
the entries and the range proof (checked against the new signature) and the nodes of our own
signed tree. The upgrade nodes that connect a longer tree to ours are covered by no signature;
when they and our roots do not rebuild the signed roots, the proof is bad (``BadUpgradeError``,
that peer is dropped), never a fork. So a fork is recorded only for two signed trees of the same
length with different hashes, or a signed node of the new tree that differs from ours.
Puts of one feed are serialized, so a fork cannot slip in between
the check and the commit. Entries may arrive in any order and any subset; ``have`` tracks which
are stored.

A feed holds no SQL and builds no row keys: it reads and writes through the store's
:class:`~storage.rows.Rows` (``storage/rows.py``), and it does not know the :class:`Store`.

Clearing (``clear``, :mod:`storage.clearing`) drops the data of a range and keeps what proofs
need; ``cleared`` remembers the range so that the replicator does not fetch it back.
Releasing (``release``, :mod:`storage.outside`) drops the data of held entries that the
namespace's rebuilder reproduces; they stay in ``have`` (``outside``) and reads rebuild them.

Listeners registered with :meth:`Feed.listen` are called after each commit with a
:class:`FeedEvent`; :meth:`Feed.wait_change` awaits the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nacl.signing

from . import clearing, forks, outside, tree
from .errors import (
    BadUpgradeError,
    EntryMissingError,
    EntryTooLargeError,
    ForkError,
    MalformedProofError,
    NotWritableError,
    ProofUnavailableError,
    StaleProofError,
    StoreCorruptError,
)
from .events import FeedEvent
from .lownodes import RECOMPUTED_DEPTH, recomputable
from .proof import MAX_LENGTH, Proof, SignedTree, verify_range, verify_upgrade
from .ranges import RangeSet
from .recent import Recent
from .rows import FeedRow, Rows

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES = 4 * 1024 * 1024
MAX_PUT_ENTRIES = 16384



@dataclass(frozen=True, slots=True)
class _Tree:
    roots: tuple[tuple[int, bytes], ...]
    length: int


class Feed:
    def __init__(self, rows: Rows, row: FeedRow, rebuilders: outside.Rebuilders | None = None) -> None:
        """A feed as stored in ``row``; it reads and writes through ``rows``; ``rebuilders``
        (the store's) holds its namespace's rebuilder of entries held outside the store."""
        self._rows = rows
        self.id = row.id
        self.key = row.public_key
        self.namespace = row.namespace
        self._signer = nacl.signing.SigningKey(row.secret_key) if row.secret_key is not None else None
        signed = self._signed = row.signed
        self.have = row.have
        self.stored_bytes = row.stored_bytes  # total size of the entries stored here
        self.cleared = row.cleared  # ranges cleared on purpose (not to be downloaded again)
        self.outside: RangeSet = row.outside  # held entries released to the rebuilder (storage.outside)
        self.outside_bytes = row.outside_bytes
        self._rebuilders = rebuilders
        self._clear_lock = asyncio.Lock()
        self.forked = row.forked
        self._committed = _Tree((), 0)
        self._pending = self._committed
        self._epoch = 0
        self._put_lock = asyncio.Lock()
        self._uncommitted: dict[int, bytes] = {}  # nodes of puts checked but not yet committed
        self._seen = signed  # the longest signed tree checked, committed or not
        self._seen_roots: tuple[tuple[int, bytes], ...] = ()
        self._listeners: list[Callable[[FeedEvent], None]] = []
        self._recent = Recent()  # the nodes a writer's latest commits completed, for its proofs
        self._change: asyncio.Future[FeedEvent] | None = None

    def __repr__(self) -> str:
        kind = "writable" if self.writable else "replica"
        return f"<Feed {self.key.hex()[:16]} {kind} length={self.length} have={len(self.have)}>"

    # -- state ------------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._signer is not None

    def sign_statement(self, statement: bytes) -> bytes:
        """Sign ``statement`` with the feed's key (a writable feed only), for a layer above that
        binds something to this feed (cobox: the device that owns it). A statement can never
        pass for a tree signature: those start with ``tree.SIGN_CONTEXT``, which is refused."""
        if self._signer is None:
            raise NotWritableError(f"feed {self.key.hex()[:16]} is a replica: it cannot sign")
        if statement.startswith(tree.SIGN_CONTEXT):
            raise ValueError("a statement may not look like a tree signature")
        return self._signer.sign(statement).signature

    @property
    def length(self) -> int:
        """The length of the longest signed tree this store holds for the feed."""
        return self._signed.length if self._signed else 0

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended entry gets (appends still committing count)."""
        return self._pending.length

    @property
    def known_length(self) -> int:
        """The length of the longest signed tree checked here, including one whose entries are
        still being committed: what a proof sent to this replica should upgrade from."""
        return self._seen.length if self._seen else 0

    @property
    def signed(self) -> SignedTree | None:
        return self._signed

    @property
    def contiguous_length(self) -> int:
        """How many entries from the start are stored without a gap."""
        return self.have.contiguous_from(0)

    @property
    def rebuilder(self) -> outside.Rebuilder | None:
        return self._rebuilders.get(self.namespace) if self._rebuilders is not None else None

    def has(self, seq: int) -> bool:
        return seq in self.have

    async def forks(self) -> list[dict[str, object]]:
        """The fork evidence recorded for this feed, oldest first."""
        return await self._rows.forks(self.id)

    async def load_roots(self) -> None:
        """Load the roots of the signed tree (a writer needs them to append)."""
        length = self.length
        wanted = tree.full_roots(length)
        got = await self.node_hashes(wanted)
        roots = tuple((i, got[i]) for i in wanted if i in got)
        if len(roots) != len(wanted):
            raise StoreCorruptError(f"feed {self.key.hex()[:16]}: the roots of its signed tree are missing")
        self._committed = self._pending = _Tree(roots, length)
        self._seen_roots = roots

    async def tree_hash_at(self, length: int) -> bytes:
        """The hash of this feed's tree of its first ``length`` entries (needs its roots)."""
        wanted = tree.full_roots(length)
        got = await self.node_hashes(wanted)
        if len(got) != len(wanted):
            raise ProofUnavailableError(f"the roots of length {length} are not known here")
        return tree.tree_hash([(i, got[i]) for i in wanted])

    async def node_store_hashes(self, indices: Sequence[int]) -> dict[int, bytes]:
        """The hashes of the given tree nodes as stored (none recomputed)."""
        return await self._rows.nodes(self.id, indices)

    async def node_hashes(self, indices: Sequence[int]) -> dict[int, bytes]:
        """The hashes of the given tree nodes that this store knows. Nodes up to
        ``RECOMPUTED_DEPTH`` over stored small entries are not kept; they are recomputed from
        the entries (one or two reads)."""
        found = await self._rows.nodes(self.id, indices)
        for i in indices:
            if i in found or tree.depth(i) > RECOMPUTED_DEPTH:
                continue
            lo, hi = tree.leaf_span(i)
            if self.have.contains_range(lo, hi) and not outside.overlaps(self.outside, lo, hi):
                hashes = [tree.leaf_hash(e) for e in await self.get_range(lo, hi)]
            else:
                leaves = await clearing.leaves(self, lo, hi)  # a cleared entry's leaf is stored instead
                if leaves is None:
                    continue
                hashes = leaves
            while len(hashes) > 1:
                hashes = [tree.parent_hash(hashes[k], hashes[k + 1]) for k in range(0, len(hashes), 2)]
            found[i] = hashes[0]
        return found

    # -- events -----------------------------------------------------------------------------

    def listen(self, callback: Callable[[FeedEvent], None]) -> Callable[[], None]:
        """Call ``callback`` after every committed append or put; returns an unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    async def wait_change(self) -> FeedEvent:
        """Wait for the next committed append or put."""
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._change)

    def _emit(self, event: FeedEvent) -> None:
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("a listener of feed %s failed", self.key.hex()[:16])
        if self._change is not None and not self._change.done():
            self._change.set_result(event)

    # -- writing ----------------------------------------------------------------------------

    async def append(self, entries: Sequence[bytes], *, outside: Sequence[int] = ()) -> int:
        """Append a batch of entries under one signature; return the new length. ``outside``:
        positions in ``entries`` the namespace's rebuilder holds already, appended as outside
        rows (:mod:`storage.outside`); without a rebuilder they are stored like the rest."""
        if self._signer is None:
            raise NotWritableError(f"feed {self.key.hex()[:16]} is a replica")
        if not entries:
            return self._pending.length
        for e in entries:
            if len(e) > MAX_ENTRY_BYTES:
                raise EntryTooLargeError(f"entry of {len(e)} bytes exceeds {MAX_ENTRY_BYTES}")
        self._rows.check_writable()
        before = self._pending
        entries = [e if type(e) is bytes else bytes(e) for e in entries]
        leaves = [tree.leaf_hash(e) for e in entries]
        roots, length, nodes = tree.append_leaves(list(before.roots), before.length, leaves)
        root_hash = tree.tree_hash(roots)
        signature = self._signer.sign(tree.signable(self.key, length, root_hash)).signature
        after = _Tree(tuple(roots), length)
        signed = SignedTree(length, root_hash, signature)
        self._pending = after
        epoch = self._epoch

        aside = sorted({k for k in outside if 0 <= k < len(entries)}) if self.rebuilder is not None else []
        aside_bytes = sum(len(entries[k]) for k in aside)

        def on_commit() -> None:
            self._committed = after
            self._signed = signed
            self.have.add(before.length, length)
            for k in aside:
                self.outside.add(before.length + k, before.length + k + 1)
            self.outside_bytes += aside_bytes
            self.stored_bytes += sum(map(len, entries)) - aside_bytes
            self._recent.remember_nodes([*nodes, *roots])
            self._emit(FeedEvent("append", before.length, length, length))

        def on_abort() -> None:
            self._pending = self._committed
            self._epoch += 1

        # Leaves and their parents over small entries are not stored: the entries are, and those
        # hashes are cheap to recompute (node_hashes); that halves the node rows.
        # An outside entry keeps its leaf and pair hashes, as a release keeps them.
        held = {before.length + k for k in aside}
        kept = [(i, h) for i, h in nodes if not recomputable(i, before.length, entries, within=False)
                or (held and any(k in held for k in range(*tree.leaf_span(i))))]
        await self._rows.write_tree(
            self.id, before.length, entries, kept,
            signed, on_commit=on_commit, on_abort=on_abort, is_current=lambda: self._epoch == epoch,
            outside=aside,
        )
        return length

    async def put(self, seq: int, data: bytes, proof: Proof) -> None:
        """Verify and store one entry of a replica."""
        await self.put_range(seq, [data], proof)

    async def put_range(self, start: int, entries: Sequence[bytes], proof: Proof) -> None:
        """Verify ``entries`` as ``start, start + 1, ...`` against ``proof`` and store them.

        Raises a ``VerificationError`` (nothing stored) when they do not verify, and
        ``ForkError`` when they verify under a tree that contradicts one already stored.
        """
        if self._signer is not None:
            raise NotWritableError("a writable feed takes its entries from append(), not put()")
        self._rows.check_writable()  # a read-only or closed store refuses before any work
        if len(entries) > MAX_PUT_ENTRIES:
            raise MalformedProofError(f"more than {MAX_PUT_ENTRIES} entries in one put")
        for e in entries:
            if len(e) > MAX_ENTRY_BYTES:
                raise EntryTooLargeError(f"entry of {len(e)} bytes exceeds {MAX_ENTRY_BYTES}")
        entries = [e if type(e) is bytes else bytes(e) for e in entries]
        verified = verify_range(self.key, start, entries, proof)
        end = start + len(entries)
        signed = verified.signed
        async with self._put_lock:
            # Check against what is stored and what earlier puts are committing, then claim
            # this put's nodes, so that puts can be checked one by one but commit together.
            if self.forked:
                raise ForkError(f"feed {self.key.hex()[:16]} is marked forked")
            established = dict(verified.nodes)
            established.update(await self._connect(signed, verified.roots, proof, established))
            await self._check_fork(signed, established, start, end)
            # Every node established, except the low ones over the small entries stored here,
            # whose hashes are recomputed from the entries when needed (node_hashes).
            nodes = {i: h for i, h in established.items() if not recomputable(i, start, entries)}
            claimed = {i: h for i, h in nodes.items() if i not in self._uncommitted}
            self._uncommitted.update(claimed)
            seen_before = (self._seen, self._seen_roots)
            if self._seen is None or signed.length > self._seen.length:
                self._seen, self._seen_roots = signed, tuple(verified.roots)
        def release() -> None:
            for i in claimed:
                del self._uncommitted[i]

        def on_abort() -> None:
            release()
            if self._seen is signed:
                self._seen, self._seen_roots = seen_before

        def on_commit() -> None:
            release()
            if signed.length > self.length:
                self._signed = signed
            self.stored_bytes += sum(len(e) for k, e in enumerate(entries) if start + k not in self.have)
            self.have.add(start, end)
            self._emit(FeedEvent("download", start, end, self.length))

        await self._rows.write_tree(self.id, start, entries, nodes.items(), signed,
                                    on_commit=on_commit, on_abort=on_abort)

    async def _connect(
        self, signed: SignedTree, roots: Sequence[tuple[int, bytes]], proof: Proof,
        established: dict[int, bytes],
    ) -> dict[int, bytes]:
        """Check that a newly verified tree and the longest one known here are one history: the
        same tree, a longer one whose upgrade nodes extend ours, or a shorter one whose roots
        are nodes of ours. Returns the nodes this establishes; records and raises a fork when
        signed nodes disagree; raises ``BadUpgradeError`` when the upgrade nodes do not rebuild
        the signed tree and ``StaleProofError`` when the trees cannot be connected."""
        ours = self._seen
        if ours is None:
            return {}
        if signed.length == ours.length:
            if signed.tree_hash != ours.tree_hash:
                await forks.record_fork(self._rows, self, ours, signed, None, None, None)
            return {}
        if signed.length > ours.length:
            if proof.upgrade_from != ours.length:
                raise StaleProofError(
                    f"proof upgrades from length {proof.upgrade_from}, this replica holds {ours.length}"
                )
            try:
                return verify_upgrade(ours.length, self._seen_roots, proof, roots)
            except BadUpgradeError:
                # The upgrade nodes are covered by no signature, so a tiling that does not
                # rebuild the signed roots proves nothing but a bad proof. Only nodes that the
                # new signature does cover (the range proof's) can show a fork.
                await forks.fork_by_signed_nodes(self._rows, self, ours, signed, established, self._seen_roots,
                                                 self._uncommitted)
                raise
        # A shorter tree: its roots must be nodes of ours.
        wanted = [i for i, _ in roots]
        known = await self.node_hashes(wanted)
        known.update((i, self._uncommitted[i]) for i in wanted if i in self._uncommitted)
        for i, h in roots:
            if i not in known:
                raise StaleProofError(
                    f"cannot connect a tree of length {signed.length} to this replica's {ours.length}"
                )
            if known[i] != h:
                await forks.record_fork(self._rows, self, ours, signed, i, known[i], h)
        return {}

    async def _check_fork(
        self, signed: SignedTree, nodes: dict[int, bytes], start: int, end: int
    ) -> None:
        """Raise ``ForkError`` (after recording the evidence) if any node established by a new
        proof differs from one already known."""
        ours = self._seen
        if ours is None:
            return  # nothing known yet, nothing to contradict
        if ours.length == signed.length and ours.tree_hash != signed.tree_hash:
            await forks.record_fork(self._rows, self, ours, signed, None, None, None)
        # Nodes under the range are read with one index seek (usually finding none); the few
        # outside it (proof nodes and the path to the roots) by key, in the same read.
        lo, hi = 2 * start, 2 * end - 2
        stored = await self._rows.nodes_between(self.id, lo, hi, [i for i in nodes if not lo <= i <= hi])
        stored = {i: h for i, h in stored.items() if i in nodes}
        stored.update((i, self._uncommitted[i]) for i in nodes if i in self._uncommitted)
        for i, h in stored.items():
            if nodes[i] != h:
                assert ours is not None  # known nodes always come with a known signature
                await forks.record_fork(self._rows, self, ours, signed, i, h, nodes[i])

    # -- clearing ---------------------------------------------------------------------------

    async def clear(self, start: int, end: int) -> int:
        """Drop the data of entries ``[start, end)`` (see "Clearing" above); return how many
        bytes of entry data were dropped."""
        return await clearing.clear(self, start, end)

    async def release(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Drop the stored data of the held entries of ``ranges`` that the rebuilder reproduces
        exactly; they stay held (see :mod:`storage.outside`). Returns the bytes no longer stored."""
        return await outside.release(self, ranges)

    async def restore(self, seqs: Sequence[int]) -> int:
        """Store released entries ``seqs`` again, rebuilt and verified (:mod:`storage.outside`)."""
        return await outside.restore(self, seqs)

    # -- reading ----------------------------------------------------------------------------

    async def get(self, seq: int) -> bytes:
        """The entry at ``seq``; raises ``EntryMissingError`` if it is not stored here."""
        data = await self._rows.entry(self.id, seq)
        if data is None and seq in self.have:
            return (await outside.read(self, seq, seq + 1, await self._rows.slots(self.id, seq, seq + 1)))[0]
        if data is None:
            raise EntryMissingError(f"entry {seq} of feed {self.key.hex()[:16]} is not stored")
        return data

    async def prefixes(self, start: int, end: int, n: int) -> list[tuple[int, bytes]]:
        """``(seq, its first n bytes)`` of the entries of ``[start, end)`` held here, in order,
        without reading the rest (what a scan for a magic needs); b"" for an entry held outside
        the store (it is rebuilt only when read)."""
        if start >= end:
            return []
        return await self._rows.prefixes(self.id, start, end, n)

    async def entry_sizes(self, start: int, end: int) -> list[int]:
        """The stored sizes of entries ``[start, end)`` (all of them must be stored), without
        reading their bytes."""
        if start >= end:
            return []
        if not self.have.contains_range(start, end):
            raise EntryMissingError(f"entries [{start}, {end}) are not all stored")
        return await self._rows.entry_sizes(self.id, start, end)

    async def get_range(self, start: int, end: int, *, max_bytes: int | None = None) -> list[bytes]:
        """Entries ``[start, end)``; all of them must be stored. With ``max_bytes``, only the
        longest prefix (of at least one entry) whose total size fits is returned."""
        if start >= end:
            return []
        if not self.have.contains_range(start, end):
            raise EntryMissingError(f"entries [{start}, {end}) are not all stored")
        if outside.overlaps(self.outside, start, end):
            if max_bytes is not None:
                total = 0
                for k, size in enumerate(await self._rows.entry_sizes(self.id, start, end)):
                    total += size
                    if total > max_bytes and k > 0:
                        end = start + k
                        break
            if outside.overlaps(self.outside, start, end):
                return await outside.read(self, start, end, await self._rows.slots(self.id, start, end))
            max_bytes = None  # the cut prefix holds no outside entry
        entries, complete = await self._rows.entries(self.id, start, end, max_bytes)  # one round trip
        if not complete:
            raise EntryMissingError(f"entries [{start}, {end}) are not all stored")
        return entries

    async def proof(self, start: int, end: int | None = None, *, upgrade_from: int = 0) -> Proof:
        """A proof for entries ``[start, end)`` (one entry when ``end`` is omitted), relative to
        the longest signed tree stored here. ``upgrade_from`` is the length the receiver holds:
        when it is shorter than ours, the proof also shows that our tree extends it."""
        end = start + 1 if end is None else end
        signed = self._signed
        if signed is None or not 0 <= start < end <= signed.length or end > MAX_LENGTH:
            raise ProofUnavailableError(
                f"no signed tree covers [{start}, {end}) of feed {self.key.hex()[:16]}"
            )
        wanted = tree.proof_nodes(start, end, signed.length)
        upgrade: list[int] = []
        if 0 < upgrade_from < signed.length:
            upgrade = tree.upgrade_nodes(upgrade_from, signed.length)
        else:
            upgrade_from = 0
        stored = self._recent.nodes(wanted + upgrade)  # a writer's recent ranges: no query
        if len(stored) < len(set(wanted + upgrade)):
            stored.update(await self.node_hashes([i for i in wanted + upgrade if i not in stored]))
        if len(stored) != len(set(wanted + upgrade)):
            raise ProofUnavailableError(f"tree nodes needed to prove [{start}, {end}) are missing")
        return Proof(signed.length, signed.signature, tuple((i, stored[i]) for i in wanted),
                     upgrade_from, tuple((i, stored[i]) for i in upgrade))
