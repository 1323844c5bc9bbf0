"""Flat-tree index math, appending, and range proofs, checked against brute-force references."""

from __future__ import annotations

import random

import pytest
from blake3 import blake3

from storage import tree


def build_levels(n: int) -> list[list[int]]:
    """The flat indices of a complete tree over ``n`` leaves, level by level, built by hand:
    level 0 are the leaves 0, 2, 4, ...; a parent sits exactly between its two children."""
    levels = [[2 * k for k in range(n)]]
    while len(levels[-1]) >= 2:
        below = levels[-1]
        levels.append([(below[2 * k] + below[2 * k + 1]) // 2 for k in range(len(below) // 2)])
    return levels


def ref_leaf_hash(data: bytes) -> bytes:
    return blake3(b"\x00" + len(data).to_bytes(8, "little") + data).digest()


def ref_roots(leaves: list[bytes]) -> list[bytes]:
    """Merkle roots the slow way: split the leaves by the binary decomposition of their count
    and hash each power-of-two block pairwise up to one hash."""
    out = []
    pos = 0
    n = len(leaves)
    for d in range(n.bit_length() - 1, -1, -1):
        if n & (1 << d):
            level = leaves[pos:pos + (1 << d)]
            while len(level) > 1:
                level = [blake3(b"\x01" + level[k] + level[k + 1]).digest()
                         for k in range(0, len(level), 2)]
            out.append(level[0])
            pos += 1 << d
    return out


def test_index_math_matches_explicit_tree() -> None:
    for n in range(1, 71):
        levels = build_levels(n)
        seen = set()
        for d, level in enumerate(levels):
            for o, i in enumerate(level):
                seen.add(i)
                assert tree.depth(i) == d
                assert tree.offset(i) == o
                assert tree.index(d, o) == i
                span = 1 << d
                assert tree.leaf_span(i) == (o * span, (o + 1) * span)
                if d == 0:
                    assert tree.children(i) is None
                else:
                    assert tree.children(i) == (levels[d - 1][2 * o], levels[d - 1][2 * o + 1])
                if o ^ 1 < len(level):
                    assert tree.sibling(i) == level[o ^ 1]
                if d + 1 < len(levels) and o // 2 < len(levels[d + 1]):
                    p = levels[d + 1][o // 2]
                    assert tree.parent(i) == p
                    assert i in tree.children(p)  # type: ignore[operator]
        # Every node of a complete tree has a distinct index, all below 2n.
        assert len(seen) == sum(len(level) for level in levels)
        assert max(seen) < 2 * n


def test_full_roots_follow_binary_decomposition() -> None:
    assert tree.full_roots(0) == []
    for n in range(301):
        roots = tree.full_roots(n)
        spans = [tree.leaf_span(r) for r in roots]
        sizes = [hi - lo for lo, hi in spans]
        assert sizes == [1 << d for d in range(n.bit_length() - 1, -1, -1) if n & (1 << d)]
        # Left to right, contiguous, covering [0, n).
        pos = 0
        for lo, hi in spans:
            assert lo == pos
            pos = hi
        assert pos == n
    with pytest.raises(ValueError):
        tree.full_roots(-1)


def test_append_leaves_batches_match_reference() -> None:
    rng = random.Random(1)
    for n in range(0, 80):
        data = [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]
        leaves = [tree.leaf_hash(d) for d in data]
        assert leaves == [ref_leaf_hash(d) for d in data]
        one_roots, one_len, one_nodes = tree.append_leaves([], 0, leaves)
        assert one_len == n
        assert [i for i, _ in one_roots] == tree.full_roots(n)
        assert [h for _, h in one_roots] == ref_roots(leaves)
        # The same leaves in random batches.
        roots: list[tuple[int, bytes]] = []
        length = 0
        nodes: list[tuple[int, bytes]] = []
        pos = 0
        while pos < n:
            k = rng.randrange(1, n - pos + 1)
            roots, length, new = tree.append_leaves(roots, length, leaves[pos:pos + k])
            nodes.extend(new)
            pos += k
        assert (roots, length) == (one_roots, one_len)
        assert sorted(nodes) == sorted(one_nodes)
        # Every node of the complete subtrees is produced, once.
        expected = {i for level in build_levels(n) for i in level if _inside_some_root(i, n)}
        assert len(one_nodes) == len({i for i, _ in one_nodes}) == len(expected)
        assert {i for i, _ in one_nodes} == expected


def _inside_some_root(i: int, n: int) -> bool:
    lo, hi = tree.leaf_span(i)
    return any(tree.leaf_span(r)[0] <= lo and hi <= tree.leaf_span(r)[1]
               for r in tree.full_roots(n))


def test_append_leaves_does_not_mutate_roots() -> None:
    leaves = [tree.leaf_hash(bytes([k])) for k in range(3)]
    roots, length, _ = tree.append_leaves([], 0, leaves)
    saved = list(roots)
    tree.append_leaves(roots, length, [tree.leaf_hash(b"x")])
    assert roots == saved


def _tree(n: int) -> tuple[list[bytes], dict[int, bytes], list[tuple[int, bytes]]]:
    leaves = [tree.leaf_hash(k.to_bytes(2, "little")) for k in range(n)]
    roots, _, nodes = tree.append_leaves([], 0, leaves)
    return leaves, dict(nodes), roots


def test_proofs_rebuild_roots_for_every_range() -> None:
    for n in range(1, 41):
        leaves, nodes, roots = _tree(n)
        for start in range(n):
            for end in range(start + 1, n + 1):
                wanted = tree.proof_nodes(start, end, n)
                # No proof node overlaps the range; all are real nodes of the tree.
                for i in wanted:
                    lo, hi = tree.leaf_span(i)
                    assert hi <= start or lo >= end
                    assert i in nodes
                proof = [(i, nodes[i]) for i in wanted]
                got_roots, touched = tree.resolve_roots(start, leaves[start:end], n, proof)
                assert got_roots == roots
                for i, h in touched.items():
                    assert nodes[i] == h


def test_proof_nodes_rejects_bad_ranges() -> None:
    for start, end, n in [(0, 0, 4), (3, 2, 4), (-1, 1, 4), (0, 5, 4), (0, 1, 0)]:
        with pytest.raises(ValueError):
            tree.proof_nodes(start, end, n)


def _bad_proofs(proof: list[tuple[int, bytes]], extra: tuple[int, bytes]):
    if proof:
        for k in range(len(proof)):
            yield "missing", proof[:k] + proof[k + 1:]
            i, h = proof[k]
            yield "wrong index", [*proof[:k], (i + 2, h), *proof[k + 1:]]
            yield "wrong index", [*proof[:k], (i - 1, h), *proof[k + 1:]]
        if len(proof) >= 2:
            yield "reordered", proof[::-1]
            yield "reordered", proof[1:] + proof[:1]
    for k in range(len(proof) + 1):
        yield "extra", [*proof[:k], extra, *proof[k:]]
    yield "duplicated", proof + proof[-1:] if proof else [extra, extra]


def test_malformed_proofs_raise_value_error() -> None:
    for n in range(1, 24):
        leaves, nodes, _ = _tree(n)
        for start in range(n):
            for end in range(start + 1, n + 1):
                proof = [(i, nodes[i]) for i in tree.proof_nodes(start, end, n)]
                extra = (2 * start, leaves[start])
                for what, bad in _bad_proofs(proof, extra):
                    if bad == proof:
                        continue
                    with pytest.raises(ValueError):
                        tree.resolve_roots(start, leaves[start:end], n, bad)
                        pytest.fail(f"{what} proof for [{start}, {end}) of {n} accepted")


def test_wrong_hash_changes_roots() -> None:
    n = 13
    leaves, nodes, roots = _tree(n)
    proof = [(i, nodes[i]) for i in tree.proof_nodes(4, 7, n)]
    for k, (i, h) in enumerate(proof):
        bad = list(proof)
        bad[k] = (i, bytes([h[0] ^ 1]) + h[1:])
        got, _ = tree.resolve_roots(4, leaves[4:7], n, bad)
        assert tree.tree_hash(got) != tree.tree_hash(roots)


def test_hash_domain_separation() -> None:
    assert tree.leaf_hash(b"") != tree.leaf_hash(b"\x00")
    a, b = tree.leaf_hash(b"a"), tree.leaf_hash(b"b")
    assert tree.parent_hash(a, b) != tree.parent_hash(b, a)
    assert tree.tree_hash([(0, a)]) != tree.tree_hash([(2, a)])
    assert tree.signable(b"k" * 32, 1, a) != tree.signable(b"k" * 32, 2, a)
