import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cobox.errors import UnknownVersionError
from cobox.folders.merge import FolderState, heads
from cobox.folders.model import Op, Stamp
from cobox.folders.paths import conflict_path

from .helpers import T0, A, B, C, delete, put, rename


def merged(*ops: Op) -> FolderState:
    return FolderState.merge(ops)


def content_at(state: FolderState, path: str) -> bytes | None:
    v = state.files.get(path)
    return None if v is None else v.chunks[0].id if v.chunks else b""


def test_sequential_edits_take_the_latest() -> None:
    v1 = put("a.txt", b"one", 1, A)
    v2 = put("a.txt", b"two", 2, B, v1.stamp)
    v3 = put("a.txt", b"three", 3, A, v2.stamp)
    s = merged(v3, v1, v2)
    assert s.files["a.txt"].stamp == v3.stamp
    assert s.conflicts() == {}
    assert s.next_clock() == 4


def test_concurrent_edits_keep_both() -> None:
    v1 = put("doc.txt", b"base", 1, A)
    a = put("doc.txt", b"A's edit", 2, A, v1.stamp)
    b = put("doc.txt", b"B's edit", 2, B, v1.stamp)
    s = merged(v1, a, b)
    assert s.files["doc.txt"].stamp == b.stamp  # equal clocks: the author breaks the tie
    cp = conflict_path("doc.txt", A, a.mtime)
    assert cp.startswith("doc.conflict-aaaaaaaa-") and cp.endswith(".txt")
    assert s.files[cp].chunks == a.chunks and s.files[cp].origin == "doc.txt"
    assert set(s.files) == {"doc.txt", cp}


def test_higher_clock_wins_a_conflict() -> None:
    v1 = put("f", b"base", 1, A)
    a = put("f", b"a", 5, A, v1.stamp)
    b = put("f", b"b", 2, B, v1.stamp)
    s = merged(v1, a, b)
    assert s.files["f"].stamp == a.stamp and conflict_path("f", B, b.mtime) in s.files


def test_concurrent_creations_keep_both() -> None:
    a, b = put("new", b"a", 1, A), put("new", b"b", 1, B)
    s = merged(a, b)
    assert s.files["new"].stamp == b.stamp and len(s.files) == 2


def test_editing_after_seeing_the_conflict_resolves_it_without_flipping() -> None:
    v1 = put("f", b"base", 1, A)
    a, b = put("f", b"a", 9, A, v1.stamp), put("f", b"b", 2, B, v1.stamp)
    s = merged(v1, a, b)
    cp = conflict_path("f", B, b.mtime)
    # C saw everything (clock 10) and edits the winner; the loser copy stays until deleted
    c = put("f", b"c", s.next_clock(), C, s.head("f"))
    s2 = s.add([c])
    assert s2.files["f"].stamp == c.stamp and cp in s2.files
    gone = s2.add([delete(cp, s2.next_clock(), A, b.stamp)])
    assert cp not in gone.files and gone.files["f"].stamp == c.stamp


def test_delete_vs_concurrent_edit_keeps_the_edit() -> None:
    v1 = put("f", b"base", 1, A)
    edit = put("f", b"edited", 2, A, v1.stamp)
    rm = delete("f", 3, B, v1.stamp)  # higher clock, but it did not see the edit
    s = merged(v1, edit, rm)
    assert s.files["f"].stamp == edit.stamp and len(s.files) == 1


def test_delete_of_the_current_version_removes_the_file() -> None:
    v1 = put("f", b"base", 1, A)
    v2 = put("f", b"v2", 2, B, v1.stamp)
    rm = delete("f", 3, A, v2.stamp)
    s = merged(v1, v2, rm)
    assert "f" not in s.files and s.head("f") == rm.stamp
    again = put("f", b"again", 4, B, s.head("f"))
    assert s.add([again]).files["f"].stamp == again.stamp


def test_concurrent_deletes() -> None:
    v1 = put("f", b"x", 1, A)
    s = merged(v1, delete("f", 2, A, v1.stamp), delete("f", 2, B, v1.stamp))
    assert s.files == {}


def test_rename() -> None:
    v1 = put("old/name.txt", b"content", 1, A)
    mv = rename(v1, "new/name.txt", 2, B)
    s = merged(v1, mv)
    assert set(s.files) == {"new/name.txt"}
    assert s.files["new/name.txt"].chunks == v1.chunks and s.files["new/name.txt"].kind == "rename-to"
    assert [v.kind for v in s.history("old/name.txt")] == ["put", "rename-from"]
    # a concurrent edit of the source survives the rename (delete vs edit), nothing lost
    edit = put("old/name.txt", b"edit", 2, C, v1.stamp)
    s2 = merged(v1, mv, edit)
    assert set(s2.files) == {"new/name.txt", "old/name.txt"}
    assert s.rename("new/name.txt", "x.txt", A).base == mv.stamp


def test_history_and_restore() -> None:
    v1 = put("f", b"one", 1, A)
    v2 = put("f", b"two", 2, B, v1.stamp)
    rm = delete("f", 3, A, v2.stamp)
    s = merged(rm, v2, v1)
    assert [v.stamp for v in s.history("f")] == [v1.stamp, v2.stamp, rm.stamp]
    op = s.restore("f", v1.stamp, C)
    assert op.chunks == v1.chunks and op.base == rm.stamp and op.clock == 4 and op.author == C
    s2 = s.add([op])
    assert s2.files["f"].chunks == v1.chunks and len(s2.history("f")) == 4
    with pytest.raises(UnknownVersionError):
        s.restore("f", rm.stamp, C)
    with pytest.raises(UnknownVersionError):
        s.restore("f", Stamp(99, A), C)


def test_duplicates_and_empty_files() -> None:
    v = put("empty", b"", 1, A)
    s = merged(v, v, put("empty", b"", 1, A))
    assert s.files["empty"].size == 0 and len(s.history("empty")) == 1


def test_clashing_records_resolve_deterministically() -> None:
    x, y = put("f", b"x", 1, A), put("f", b"y", 1, A)  # one stamp, two contents: a bad writer
    assert merged(x, y).files == merged(y, x).files


def test_known_chunks() -> None:
    v1 = put("a", b"same", 1, A)
    v2 = put("b", b"same", 2, B)
    known = merged(v2, v1).known_chunks()
    assert list(known) == [v1.chunks[0].id] and known[v1.chunks[0].id].seq == 1


# -- order independence: devices that edit, delete, rename and sync at random ------------------

DEVICES = (A, B, C)
PATHS = ("a.txt", "b.txt", "dir/c")

step = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(range(3)), st.sampled_from(PATHS), st.binary(max_size=3)),
    st.tuples(st.just("del"), st.sampled_from(range(3)), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("mv"), st.sampled_from(range(3)), st.sampled_from(PATHS), st.sampled_from(PATHS)),
    st.tuples(st.just("sync"), st.sampled_from(range(3)), st.sampled_from(range(3)), st.none()),
)


def simulate(steps: list) -> list[Op]:
    known: list[list[Op]] = [[], [], []]
    for kind, d, x, y in steps:
        s = FolderState.merge(known[d])
        author = DEVICES[d]
        if kind == "put":
            known[d].append(put(x, y, s.next_clock(), author, s.head(x), mtime=T0))
        elif kind == "del" and x in s.files:
            known[d].append(delete(x, s.next_clock(), author, s.head(x)))
        elif kind == "mv" and x in s.files and y != x:
            known[d].append(s.rename(x, y, author))
        elif kind == "sync":
            merged_ops = list({id(o): o for o in known[d] + known[x]}.values())
            known[d], known[x] = list(merged_ops), list(merged_ops)
    return list({id(o): o for ops in known for o in ops}.values())


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=25), st.randoms(use_true_random=False))
def test_merge_is_order_independent_and_loses_nothing(steps, rnd) -> None:
    ops = simulate(steps)
    first = FolderState.merge(ops)
    for _ in range(3):
        shuffled = list(ops)
        rnd.shuffle(shuffled)
        other = FolderState.merge(shuffled)
        assert other.files == first.files and other.versions == first.versions and other.clock == first.clock
    # every put head is shown somewhere, at its path or as a conflict copy (no step here deletes a copy)
    shown = {(v.stamp, v.chunks) for v in first.files.values()}
    for versions in first.versions.values():
        for h in heads(versions.values()):
            if not h.deleted:
                assert (h.stamp, h.chunks) in shown


def test_conflict_copies_of_long_names_never_land_on_a_resolved_path() -> None:
    name = "n" * 251 + ".txt"
    a, b = put(name, b"a", 1, A), put(name, b"b", 1, B)
    cp = conflict_path(name, A, a.mtime)
    assert len(cp) <= len(name)  # shortened: would be resolved before its origin
    squatter = put(cp, b"squatter", 1, C)
    s = merged(a, b, squatter)
    assert s.files[cp].stamp == squatter.stamp
    assert s.files[conflict_path(name, A, a.mtime, 2)].stamp == a.stamp
    assert merged(squatter, b, a).files == s.files
