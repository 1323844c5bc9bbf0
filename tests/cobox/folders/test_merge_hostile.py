"""The incremental merge under hostility: honest histories interleaved with a hostile member's
ops (clashing stamps, huge clocks, bases pointing at nothing or at themselves, renames onto
themselves and in chains, squatting on conflict names, 255-byte names), merged on "devices"
that receive them in different orders and batches. Asserts: no exception, one state
everywhere, equal to the from-scratch oracle (``reference_merge``), every honest op kept."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cobox.folders.merge import FolderState, fingerprint, versions_of
from cobox.folders.model import Delete, Mkdir, Op, Put, Rename, Stamp
from cobox.folders.paths import conflict_path

from .helpers import T0, A, B, C, delete, put, ref
from .reference_merge import reference
from .test_merge import simulate, step

H, H2 = b"\x66" * 32, b"\x67" * 32  # the hostile member's devices
LONG = "n" * 251 + ".txt"
PATHS = ("a.txt", "b.txt", "dir/c", "dir", conflict_path("a.txt", A, T0 + 2 * 10**9),
         conflict_path("a.txt", B, T0 + 2 * 10**9), LONG, conflict_path(LONG, H, T0), "a." + "x" * 250)
CLOCKS = st.one_of(st.integers(1, 6), st.sampled_from([2**62, 2**63 - 1]))
AUTHORS = st.sampled_from([H, H2])
MTIMES = st.sampled_from([0, T0, T0 + 2 * 10**9, 2**63 - 1])
REFS = st.sampled_from([(), (ref(b"x"),), (ref(b"y", 7),), (ref(b"x"), ref(b"y", 3))])


def stamps() -> st.SearchStrategy[Stamp | None]:
    return st.one_of(st.none(), st.builds(Stamp, CLOCKS, st.sampled_from([A, B, C, H, H2])))


@st.composite
def hostile_op(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from(["put", "delete", "rename", "self-rename", "self-base", "dir"]))
    clock, author, path = draw(CLOCKS), draw(AUTHORS), draw(st.sampled_from(PATHS))
    chunks, mtime = draw(REFS), draw(MTIMES)
    size = sum(c.size for c in chunks)
    if kind == "put":
        return Put(path, size, 0o644, mtime, chunks, clock, author, draw(stamps()))
    if kind == "delete":
        return Delete(path, clock, author, draw(stamps()))
    if kind == "dir":
        return Mkdir(path, draw(st.sampled_from([0o755, 0o700])), clock, author, draw(stamps()))
    if kind == "self-base":
        return Put(path, size, 0o644, mtime, chunks, clock, author, Stamp(clock, author))
    dst = path if kind == "self-rename" else draw(st.sampled_from(PATHS))
    return Rename(path, dst, size, 0o644, mtime, chunks, clock, author, draw(stamps()), draw(stamps()))


def batches(ops: list[Op], cuts: list[int]) -> list[list[Op]]:
    out, start = [], 0
    for c in sorted({c % (len(ops) + 1) for c in cuts}):
        out.append(ops[start:c])
        start = c
    out.append(ops[start:])
    return out


def same(x: FolderState, y: FolderState) -> None:
    assert x.files == y.files and x.versions == y.versions and x.clock == y.clock
    assert x.conflicts() == y.conflicts()
    for path in x.versions:
        assert x.head(path) == y.head(path)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=20), st.lists(hostile_op(), max_size=25), st.randoms(use_true_random=False),
       st.lists(st.integers(0, 100), max_size=6))
def test_hostile_ops_never_break_or_split_the_merge(steps, hostile, rnd, cuts) -> None:
    honest = simulate(steps)
    ops = honest + hostile
    one = list(ops)
    rnd.shuffle(one)
    first = FolderState.merge(one)
    two = list(ops)
    rnd.shuffle(two)
    second = FolderState()
    for batch in batches(two, cuts):
        second.update(batch)
    same(first, second)
    same(first, FolderState.merge([]).add(ops))  # add() on a copy, in the order written

    files, versions = reference(ops)
    assert first.versions == versions
    assert dict(first.files) == files
    # every honest op is kept as written (the hostile member cannot claim an honest device's stamps)
    for op in honest:
        for v in versions_of(op):
            assert first.versions[v.path][v.stamp] == v


def test_one_author_reusing_its_clock_is_resolved_alike_everywhere() -> None:
    x = Put("f", 1, 0o644, T0, (ref(b"x"),), 5, H, None)
    y = Put("f", 1, 0o600, T0, (ref(b"y"),), 5, H, None)  # the same stamp, another content
    z = Rename("g", "f", 1, 0o644, T0, (ref(b"z"),), 5, H, None, None)  # and a rename onto it
    winner = max((versions_of(o)[-1] for o in (x, y, z)), key=fingerprint)
    orders = [[x, y, z], [z, y, x], [y, z, x]]
    states = [FolderState.merge(o) for o in orders]
    for s in states:
        assert s.files["f"] == winner and len(s.history("f")) == 1
    incremental = FolderState()
    for o in (y, x, z):
        incremental.update([o])
    assert incremental.files == states[0].files and incremental.versions == states[0].versions


def test_a_huge_clock_and_dangling_bases_are_harmless() -> None:
    v1 = put("f", b"one", 1, A)
    huge = Put("g", 0, 0o644, 2**63 - 1, (), 2**63 - 1, H, Stamp(2**62, B))  # base: nothing
    s = FolderState.merge([v1, huge, delete("f", 9, H, Stamp(8, C))])
    assert s.files["f"].stamp == v1.stamp and s.files["g"].stamp == huge.stamp  # a dangling delete loses
    assert s.next_clock() == 2**63


def test_a_conflict_on_a_name_with_a_huge_extension_terminates() -> None:
    name = "a." + "x" * 250  # conflict_path used to loop forever on this
    s = FolderState.merge([put(name, b"1", 1, A), put(name, b"2", 1, B)])
    assert len(s.files) == 2 and all(len(p.encode()) <= 255 for p in s.files)


@pytest.mark.parametrize("n", [2000])
def test_many_concurrent_heads_on_one_path_cost_one_resolution_per_batch(n) -> None:
    ops = [put("f", str(k).encode(), 1, bytes([k % 251]) * 31 + bytes([k // 251])) for k in range(n)]
    s = FolderState.merge(ops)
    assert len(s.files) == n and len(s.conflicts()) == n - 1
    s.update([put("f", b"on top", 2, A, s.head("f"))])  # the winner edited: one new winner
    assert s.files["f"].stamp == Stamp(2, A) and len(s.files) == n


def test_conflict_names_of_absurd_mtimes_are_still_made() -> None:
    far, before = Put("f", 0, 0o644, 10**40, (), 1, H, None), Put("f", 0, 0o644, -5, (), 1, H2, None)
    s = FolderState.merge([far, before])
    assert sorted(s.files) == ["f", conflict_path("f", H, 253_402_300_799 * 10**9)]
