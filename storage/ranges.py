"""A set of non-negative integers kept as sorted, disjoint, half-open ranges.

Used for "which entries of a feed are stored here" (the replica bitfield) and, by the network
layer, for what a peer has and what is in flight. Pure; no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class RangeSet:
    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Add ``[start, end)``, merging with touching or overlapping ranges."""
        if start >= end:
            return
        lo = bisect_left(self._ends, start)  # first range that ends at or after start
        hi = bisect_right(self._starts, end)  # ranges starting after end stay apart
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def remove(self, start: int, end: int) -> None:
        """Remove ``[start, end)``."""
        if start >= end:
            return
        lo = bisect_right(self._ends, start)
        hi = bisect_left(self._starts, end)
        if lo >= hi:
            return
        keep: list[tuple[int, int]] = []
        if self._starts[lo] < start:
            keep.append((self._starts[lo], start))
        if self._ends[hi - 1] > end:
            keep.append((end, self._ends[hi - 1]))
        self._starts[lo:hi] = [s for s, _ in keep]
        self._ends[lo:hi] = [e for _, e in keep]

    def __contains__(self, i: int) -> bool:
        k = bisect_right(self._starts, i) - 1
        return k >= 0 and i < self._ends[k]

    def contains_range(self, start: int, end: int) -> bool:
        if start >= end:
            return True
        k = bisect_right(self._starts, start) - 1
        return k >= 0 and end <= self._ends[k]

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The sub-ranges of ``[start, end)`` not in the set, in order."""
        gaps = []
        cursor = start
        k = max(bisect_right(self._starts, start) - 1, 0)
        while cursor < end and k < len(self._starts):
            s, e = self._starts[k], self._ends[k]
            if e <= cursor:
                k += 1
                continue
            if s >= end:
                break
            if s > cursor:
                gaps.append((cursor, s))
            cursor = max(cursor, e)
            k += 1
        if cursor < end:
            gaps.append((cursor, end))
        return gaps

    def intersection(self, start: int, end: int) -> list[tuple[int, int]]:
        """The sub-ranges of ``[start, end)`` that are in the set, in order."""
        out = []
        k = max(bisect_right(self._starts, start) - 1, 0)
        while k < len(self._starts) and self._starts[k] < end:
            s, e = max(self._starts[k], start), min(self._ends[k], end)
            if s < e:
                out.append((s, e))
            k += 1
        return out

    def contiguous_from(self, start: int = 0) -> int:
        """The first number at or after ``start`` that is not in the set."""
        k = bisect_right(self._starts, start) - 1
        if k >= 0 and start < self._ends[k]:
            return self._ends[k]
        return start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends))

    def __len__(self) -> int:
        """How many numbers the set holds."""
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def copy(self) -> RangeSet:
        r = RangeSet()
        r._starts = list(self._starts)
        r._ends = list(self._ends)
        return r
