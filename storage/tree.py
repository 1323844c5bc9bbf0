"""Flat-tree Merkle math: pure functions, no I/O.

Theory of operation
-------------------
Entries are the leaves of a binary Merkle tree laid out "flat", in-order, as in Hypercore:
leaf ``k`` (entry ``seq == k``) has index ``2k``; a parent sits between its children at odd
indices. A node at ``depth`` d and ``offset`` o has index ``(o << (d + 1)) | ((1 << d) - 1)`` and
spans leaves ``[o * 2**d, (o + 1) * 2**d)``::

        3
      1   5
     0 2 4 6 ...

A feed of length ``n`` is summarised by its *roots*: the maximal complete subtrees covering
``[0, n)``, left to right, one per set bit of ``n``. A node's hash never changes once its span
is complete, so stored nodes stay valid as the feed grows.

Hashes (BLAKE3, domain-separated by a leading type byte):

- leaf:   ``H(0x00 || u64le(len(data)) || data)``
- parent: ``H(0x01 || left || right)``
- tree:   ``H(0x02 || (u64le(root_index) || root_hash)...)``, over the roots left to right.

The writer signs ``SIGN_CONTEXT || feed_key || u64le(length) || tree_hash``.

A proof for leaves ``[start, end)`` at ``length`` is the hashes of the nodes that lie entirely
outside the range but are needed to rebuild every root: :func:`proof_nodes` lists them, in a
deterministic order, and :func:`resolve_roots` rebuilds the roots from the range's leaf hashes
plus those nodes, returning every node it touched.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from blake3 import blake3

HASH_BYTES = 32
LEAF_TYPE = b"\x00"
PARENT_TYPE = b"\x01"
TREE_TYPE = b"\x02"
SIGN_CONTEXT = b"cobox feed tree v1\x00"

_U64 = struct.Struct("<Q")


# -- index arithmetic -------------------------------------------------------------------------


def index(depth: int, offset: int) -> int:
    """The flat index of the node at ``depth`` and ``offset``."""
    return (offset << (depth + 1)) | ((1 << depth) - 1)


def depth(i: int) -> int:
    """How many levels above the leaves node ``i`` sits (leaves are depth 0)."""
    return ((~i) & (i + 1)).bit_length() - 1


def offset(i: int) -> int:
    """The position of node ``i`` among the nodes of its depth."""
    return i >> (depth(i) + 1)


def parent(i: int) -> int:
    d = depth(i)
    return index(d + 1, offset(i) >> 1)


def sibling(i: int) -> int:
    d = depth(i)
    return index(d, offset(i) ^ 1)


def children(i: int) -> tuple[int, int] | None:
    """The left and right children of ``i``, or ``None`` for a leaf."""
    d = depth(i)
    if d == 0:
        return None
    o = offset(i) * 2
    return index(d - 1, o), index(d - 1, o + 1)


def leaf_span(i: int) -> tuple[int, int]:
    """The half-open range of leaf numbers (entry seqs) that node ``i`` covers."""
    d = depth(i)
    o = i >> (d + 1)
    return o << d, (o + 1) << d


def full_roots(length: int) -> list[int]:
    """The root indices of a tree of ``length`` leaves, left to right."""
    if length < 0:
        raise ValueError("length must be >= 0")
    roots = []
    start = 0
    for d in range(length.bit_length() - 1, -1, -1):
        size = 1 << d
        if length & size:
            roots.append(index(d, start >> d))
            start += size
    return roots


# -- hashing ----------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    h = blake3(LEAF_TYPE)
    h.update(_U64.pack(len(data)))
    h.update(data)
    return h.digest()


def parent_hash(left: bytes, right: bytes) -> bytes:
    return blake3(PARENT_TYPE + left + right).digest()


def tree_hash(roots: Sequence[tuple[int, bytes]]) -> bytes:
    """The hash that summarises a whole tree: its roots, in order, with their indices."""
    h = blake3(TREE_TYPE)
    for i, root in roots:
        h.update(_U64.pack(i))
        h.update(root)
    return h.digest()


def signable(feed_key: bytes, length: int, root_hash: bytes) -> bytes:
    """The exact bytes the writer signs for a tree of ``length`` entries."""
    return SIGN_CONTEXT + feed_key + _U64.pack(length) + root_hash


# -- appending --------------------------------------------------------------------------------


def append_leaves(
    roots: Sequence[tuple[int, bytes]], length: int, leaves: Iterable[bytes]
) -> tuple[list[tuple[int, bytes]], int, list[tuple[int, bytes]]]:
    """Grow a tree of ``length`` leaves with ``roots`` by the given leaf hashes.

    Returns ``(new_roots, new_length, new_nodes)`` where ``new_nodes`` lists every node that
    became complete (the new leaves and the parents they closed). ``roots`` is not modified.
    """
    # The roots of a tree have strictly decreasing depths, so after pushing a leaf the top two
    # roots merge exactly while they have equal depth; a left child's parent is at i + 2**d.
    stack = [(i, h, depth(i)) for i, h in roots]
    nodes: list[tuple[int, bytes]] = []
    add = nodes.append
    for h in leaves:
        i = 2 * length
        length += 1
        d = 0
        add((i, h))
        while stack and stack[-1][2] == d:
            li, lh, _ = stack.pop()
            i = li + (1 << d)
            h = blake3(PARENT_TYPE + lh + h).digest()
            d += 1
            add((i, h))
        stack.append((i, h, d))
    return [(i, h) for i, h, _ in stack], length, nodes


# -- proofs -----------------------------------------------------------------------------------


def _check_range(start: int, end: int, length: int) -> None:
    if not 0 <= start < end <= length:
        raise ValueError(f"range [{start}, {end}) is not inside a tree of length {length}")


def proof_nodes(start: int, end: int, length: int) -> list[int]:
    """Indices of the nodes a verifier needs, besides the leaves ``[start, end)``, to rebuild
    every root of a tree of ``length`` leaves. Ordered left to right, top-down per root."""
    _check_range(start, end, length)
    needed: list[int] = []

    def walk(i: int) -> None:
        lo, hi = leaf_span(i)
        if hi <= start or lo >= end:
            needed.append(i)
        elif start <= lo and hi <= end:
            return
        else:
            left, right = children(i)  # type: ignore[misc]  # a partial overlap is never a leaf
            walk(left)
            walk(right)

    for root in full_roots(length):
        walk(root)
    return needed


def resolve_roots(
    start: int,
    leaves: Sequence[bytes],
    length: int,
    proof: Sequence[tuple[int, bytes]],
) -> tuple[list[tuple[int, bytes]], dict[int, bytes]]:
    """Rebuild the roots of a tree of ``length`` leaves from the leaf hashes of
    ``[start, start + len(leaves))`` and the proof nodes.

    Returns ``(roots, nodes)`` where ``nodes`` maps every index touched (leaves, computed
    parents, proof nodes, roots) to its hash. Raises ``ValueError`` when the proof does not hold
    exactly the nodes :func:`proof_nodes` names, in that order.
    """
    end = start + len(leaves)
    _check_range(start, end, length)
    expected = proof_nodes(start, end, length)
    if [i for i, _ in proof] != expected:
        raise ValueError("proof nodes do not match the range and length")
    nodes: dict[int, bytes] = dict(proof)
    frontier = []
    for k, h in enumerate(leaves):
        nodes[2 * (start + k)] = h
        frontier.append(2 * (start + k))
    # Climb level by level from the range's leaves. Every sibling a climb needs is either
    # in the range (computed one level below) or a proof node, because the proof matched.
    roots = full_roots(length)
    is_root = set(roots)
    d = 0
    while frontier:
        above: list[int] = []
        for i in frontier:
            if i in is_root:
                continue
            if (i >> (d + 1)) & 1:  # a right child
                p, left, right = i - (1 << d), i - (2 << d), i
            else:
                p, left, right = i + (1 << d), i, i + (2 << d)
            if above and above[-1] == p:
                continue
            nodes[p] = blake3(PARENT_TYPE + nodes[left] + nodes[right]).digest()
            above.append(p)
        frontier = above
        d += 1
    return [(r, nodes[r]) for r in roots], nodes


# -- upgrades -----------------------------------------------------------------------------------


def upgrade_nodes(old: int, new: int) -> list[int]:
    """The maximal complete subtrees covering leaves ``[old, new)`` in a tree of ``new`` leaves,
    left to right. With the roots of the tree of ``old`` leaves they tile ``[0, new)``, so they
    prove that the longer tree extends the shorter one."""
    if not 0 < old < new:
        raise ValueError(f"no upgrade from length {old} to {new}")
    out: list[int] = []

    def walk(i: int) -> None:
        lo, hi = leaf_span(i)
        if lo >= old:
            out.append(i)
        elif hi > old:  # straddles the old end; a node wholly before it is an old root
            left, right = children(i)  # type: ignore[misc]
            walk(left)
            walk(right)

    for root in full_roots(new):
        walk(root)
    return out


def resolve_tiling(nodes: dict[int, bytes], length: int) -> list[tuple[int, bytes]]:
    """The roots of a tree of ``length`` leaves from ``nodes`` that tile it (adds every parent it
    computes to ``nodes``); raises ``ValueError`` when they do not cover it."""

    def resolve(i: int) -> bytes:
        h = nodes.get(i)
        if h is None:
            kids = children(i)
            if kids is None:
                raise ValueError(f"node {i} is missing")
            h = parent_hash(resolve(kids[0]), resolve(kids[1]))
            nodes[i] = h
        return h

    return [(r, resolve(r)) for r in full_roots(length)]
