"""Signed trees and range proofs: what a replica needs to verify entries it did not write.

Pure functions over :mod:`storage.tree`; no I/O. A :class:`Proof` for entries ``[start, end)``
carries the tree ``length`` it is relative to, the writer's signature over that tree, and the
hashes of the nodes outside the range that rebuild every root (see ``tree.proof_nodes``).
:func:`verify_range` rebuilds the roots from the entries and the proof, checks the signature,
and returns every node it touched so that a replica can store them and later prove the same
entries to others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from . import tree
from .errors import BadSignatureError, BadUpgradeError, MalformedProofError

SIGNATURE_BYTES = 64
MAX_LENGTH = 1 << 40  # no feed grows past a trillion entries; keeps the store's keys in range


@dataclass(frozen=True, slots=True)
class SignedTree:
    """The writer's signature over the tree of its first ``length`` entries."""

    length: int
    tree_hash: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Proof:
    """Proof nodes for a range at ``length`` and the writer's signature over that tree; when
    ``upgrade_from`` is set, also the nodes that show this tree extends the (shorter) tree of
    ``upgrade_from`` entries the receiver holds (``tree.upgrade_nodes``)."""

    length: int
    signature: bytes
    nodes: tuple[tuple[int, bytes], ...]
    upgrade_from: int = 0
    upgrade: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Verified:
    """A proof that checked out: the signed tree and every node hash it established."""

    signed: SignedTree
    roots: list[tuple[int, bytes]]
    nodes: dict[int, bytes]


def verify_range(
    feed_key: bytes, start: int, entries: Sequence[bytes], proof: Proof
) -> Verified:
    """Verify ``entries`` as the feed's entries ``start, start + 1, ...`` under ``proof``.

    Raises :class:`MalformedProofError` or :class:`BadSignatureError`; returns the
    established nodes on success.
    """
    if not entries:
        raise MalformedProofError("a proof must cover at least one entry")
    end = start + len(entries)
    if start < 0 or not end <= proof.length <= MAX_LENGTH:
        raise MalformedProofError(
            f"entries [{start}, {end}) do not fit a tree of length {proof.length}"
        )
    if len(proof.signature) != SIGNATURE_BYTES:
        raise MalformedProofError("signature has the wrong size")
    for _, h in (*proof.nodes, *proof.upgrade):
        if len(h) != tree.HASH_BYTES:
            raise MalformedProofError("a proof node hash has the wrong size")
    leaves = [tree.leaf_hash(e) for e in entries]
    try:
        roots, nodes = tree.resolve_roots(start, leaves, proof.length, proof.nodes)
    except ValueError as e:
        raise MalformedProofError(str(e)) from None
    root_hash = tree.tree_hash(roots)
    check_signature(feed_key, proof.length, root_hash, proof.signature)
    return Verified(SignedTree(proof.length, root_hash, proof.signature), roots, nodes)


def check_signature(feed_key: bytes, length: int, root_hash: bytes, signature: bytes) -> None:
    try:
        nacl.signing.VerifyKey(feed_key).verify(
            tree.signable(feed_key, length, root_hash), signature
        )
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise BadSignatureError("the tree signature does not verify under the feed key") from None


def verify_upgrade(
    old_length: int, old_roots: Sequence[tuple[int, bytes]], proof: Proof,
    new_roots: Sequence[tuple[int, bytes]],
) -> dict[int, bytes]:
    """Check that the (already verified) tree with ``new_roots`` extends the trusted tree of
    ``old_length`` entries with ``old_roots``, using ``proof.upgrade``; return the nodes that
    establishes.

    The upgrade nodes are covered by no signature of their own: they count only when, with the
    trusted roots, they rebuild exactly the roots the signature covers (as Hypercore rebuilds the
    tree from its roots plus the upgrade and checks the signature over the result). When they do
    not, the proof is bad (:class:`BadUpgradeError`), never evidence of a fork: whoever sent it
    can put anything there. Raises :class:`MalformedProofError` when the upgrade nodes are not
    the ones the lengths require."""
    expected = tree.upgrade_nodes(old_length, proof.length)
    if proof.upgrade_from != old_length or [i for i, _ in proof.upgrade] != expected:
        raise MalformedProofError("upgrade nodes do not match the lengths")
    nodes = dict(old_roots)
    nodes.update(proof.upgrade)
    if tree.resolve_tiling(nodes, proof.length) != list(new_roots):
        raise BadUpgradeError(
            f"the upgrade nodes do not rebuild the signed tree of length {proof.length} "
            f"from the trusted tree of length {old_length}"
        )
    return nodes
