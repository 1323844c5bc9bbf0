"""The merge is incremental: a new op touches its own path (and the paths of conflict copies it
moves), never the whole state; ``known_chunks`` is a live view, not a scan."""

from __future__ import annotations

import pytest

from cobox.folders.merge import FolderState
from cobox.folders.model import ChunkRef

from .helpers import FEED, A, B, C, delete, put, ref, rename


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``FolderState`` resolves, in order."""
    seen: list[str] = []
    original = FolderState._resolve

    def spy(self: FolderState, path: str) -> None:
        seen.append(path)
        original(self, path)

    monkeypatch.setattr(FolderState, "_resolve", spy)
    return seen


def test_one_new_op_resolves_its_path_only(resolved: list[str]) -> None:
    ops = [put(f"d/{k}", str(k).encode(), k + 1, A) for k in range(5000)]
    s = FolderState.merge(ops)
    assert len(resolved) == 5000  # a batch resolves each path once
    resolved.clear()
    s.update([put("d/17", b"edit", s.next_clock(), B, s.head("d/17"))])
    assert resolved == ["d/17"]
    resolved.clear()
    s.update([rename(s.files["d/18"], "e/18", s.next_clock(), C)])  # type: ignore[arg-type]
    assert sorted(resolved) == ["d/18", "e/18"] and "e/18" in s.files and "d/18" not in s.files


def test_a_conflict_resolves_the_path_and_its_copy(resolved: list[str]) -> None:
    v1 = put("f.txt", b"base", 1, A)
    s = FolderState.merge([put(f"x{k}", b"x", 1, C) for k in range(100)] + [v1])
    resolved.clear()
    s.update([put("f.txt", b"a", 2, A, v1.stamp), put("f.txt", b"b", 2, B, v1.stamp)])
    assert len(resolved) == 2 and resolved[0] == "f.txt" and set(s.conflicts()) == {resolved[1]}
    resolved.clear()
    cp = next(iter(s.conflicts()))
    s.update([delete(cp, s.next_clock(), C, s.files[cp].stamp)])  # someone deletes the copy
    assert resolved == [cp] and s.conflicts() == {}


def test_known_chunks_is_a_live_view_with_the_lowest_place() -> None:
    s = FolderState()
    known = s.known_chunks()
    s.update([put("a", b"same", 5, A)])
    cid = ref(b"same").id
    assert known[cid].seq == 5
    s.update([put("b", b"same", 3, B)])  # the same chunk stored earlier: the lower seq is kept
    assert known[cid] == ChunkRef(cid, FEED, 3, 4) and len(known) == 1
    with pytest.raises(TypeError):
        known[cid] = known[cid]  # type: ignore[index]


def test_add_leaves_the_old_state_as_it_was() -> None:
    v1 = put("f", b"one", 1, A)
    s1 = FolderState.merge([v1])
    s2 = s1.add([put("f", b"two", 2, B, v1.stamp)])
    assert s1.files["f"].stamp == v1.stamp and s2.files["f"].stamp.clock == 2
    assert len(s1.history("f")) == 1 and len(s2.history("f")) == 2
