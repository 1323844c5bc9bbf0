"""RangeSet against a plain Python set of integers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.ranges import RangeSet

N = 60
bounds = st.tuples(st.integers(0, N), st.integers(0, N))
ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), bounds), max_size=30)


def model_ranges(model: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(model):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def clip(model: set[int], start: int, end: int) -> set[int]:
    return {i for i in model if start <= i < end}


@settings(max_examples=300, deadline=None)
@given(ops, st.lists(bounds, min_size=1, max_size=8))
def test_rangeset_matches_set_model(operations, queries) -> None:
    rs = RangeSet()
    model: set[int] = set()
    for op, (start, end) in operations:
        if op == "add":
            rs.add(start, end)
            model |= set(range(start, end))
        else:
            rs.remove(start, end)
            model -= set(range(start, end))
        # Canonical form: sorted, disjoint, non-touching, non-empty ranges.
        assert list(rs) == model_ranges(model)
        assert len(rs) == len(model)
        assert bool(rs) == bool(model)
    for i in range(N + 2):
        assert (i in rs) == (i in model)
        expected = i
        while expected in model:
            expected += 1
        assert rs.contiguous_from(i) == expected
    assert rs.contiguous_from() == rs.contiguous_from(0)
    for start, end in queries:
        inside = clip(model, start, end)
        assert rs.contains_range(start, end) == (inside == set(range(start, end)))
        assert rs.missing(start, end) == model_ranges(set(range(start, end)) - inside)
        assert rs.intersection(start, end) == model_ranges(inside)
    copy = rs.copy()
    assert copy == rs
    copy.add(N + 5, N + 6)
    assert copy != rs
    assert RangeSet(list(rs)) == rs


def test_rangeset_basics() -> None:
    rs = RangeSet([(5, 10), (0, 2), (2, 3)])
    assert list(rs) == [(0, 3), (5, 10)]
    assert repr(rs) == "RangeSet([(0, 3), (5, 10)])"
    rs.add(3, 5)
    assert list(rs) == [(0, 10)]
    rs.remove(4, 6)
    assert list(rs) == [(0, 4), (6, 10)]
    assert rs.contains_range(7, 7)
    assert rs != [(0, 4), (6, 10)]
    assert not RangeSet()
