from cobox.folders.merge import FolderState, Version
from cobox.folders.paths import conflict_path
from cobox.folders.plan import (
    Download,
    Forget,
    LocalFile,
    MarkSynced,
    MoveLocal,
    RecordDelete,
    RecordPut,
    RemoveLocal,
    Synced,
    plan,
)

from .helpers import A, B, delete, put, rename

OLD = LocalFile(3, 111)
EDITED = LocalFile(9, 222)


def synced(v: Version, stat: LocalFile = OLD) -> Synced:
    return Synced(v.stamp, stat.size, stat.mtime, v.content)


def test_in_sync_does_nothing() -> None:
    s = FolderState.merge([put("f", b"abc", 1, A)])
    assert plan(s, {"f": OLD}, {"f": synced(s.files["f"])}) == []


def test_remote_new_and_updated_files_are_downloaded() -> None:
    v1 = put("f", b"abc", 1, A)
    s1 = FolderState.merge([v1])
    assert plan(s1, {}, {}) == [Download("f", s1.files["f"], None)]
    s2 = s1.add([put("f", b"newer", 2, B, v1.stamp)])
    assert plan(s2, {"f": OLD}, {"f": synced(s1.files["f"])}) == [Download("f", s2.files["f"], OLD)]


def test_remote_delete_removes_an_unchanged_file() -> None:
    v1 = put("f", b"abc", 1, A)
    s = FolderState.merge([v1, delete("f", 2, B, v1.stamp)])
    syn = Synced(v1.stamp, OLD.size, OLD.mtime, b"c" * 32)
    assert plan(s, {"f": OLD}, {"f": syn}) == [RemoveLocal("f", OLD)]
    assert plan(s, {}, {"f": syn}) == [Forget("f")]


def test_local_changes_are_recorded() -> None:
    v1 = put("f", b"abc", 1, A)
    s = FolderState.merge([v1])
    syn = {"f": synced(s.files["f"])}
    assert plan(s, {"f": EDITED}, syn) == [RecordPut("f", v1.stamp, EDITED)]
    assert plan(s, {}, syn) == [RecordDelete("f", v1.stamp)]
    assert plan(s, {"f": OLD, "new": EDITED}, syn) == [RecordPut("new", None, EDITED)]


def test_new_file_where_one_was_deleted_names_the_deletion() -> None:
    v1 = put("f", b"abc", 1, A)
    rm = delete("f", 2, A, v1.stamp)
    s = FolderState.merge([v1, rm])
    assert plan(s, {"f": EDITED}, {}) == [RecordPut("f", rm.stamp, EDITED)]


def test_touch_without_change_is_not_an_edit() -> None:
    s = FolderState.merge([put("f", b"abc", 1, A)])
    v = s.files["f"]
    touched = LocalFile(3, 999, content=v.content)
    assert plan(s, {"f": touched}, {"f": synced(v)}) == [MarkSynced("f", v)]


def test_both_changed_records_ours_against_the_synced_base() -> None:
    v1 = put("f", b"abc", 1, A)
    theirs = put("f", b"theirs", 2, B, v1.stamp)
    s = FolderState.merge([v1, theirs])
    syn = {"f": Synced(v1.stamp, OLD.size, OLD.mtime, b"x" * 32)}
    assert plan(s, {"f": EDITED}, syn) == [RecordPut("f", v1.stamp, EDITED)]  # never overwritten
    # same content on both sides converges without a conflict
    same = LocalFile(9, 222, content=s.files["f"].content)
    assert plan(s, {"f": same}, syn) == [MarkSynced("f", s.files["f"])]
    # deleted here, edited there: the edit comes back
    assert plan(s, {}, syn) == [Download("f", s.files["f"], None)]


def test_edited_here_deleted_there_keeps_the_edit() -> None:
    v1 = put("f", b"abc", 1, A)
    s = FolderState.merge([v1, delete("f", 2, B, v1.stamp)])
    syn = {"f": Synced(v1.stamp, OLD.size, OLD.mtime, b"x" * 32)}
    assert plan(s, {"f": EDITED}, syn) == [RecordPut("f", v1.stamp, EDITED)]


def test_a_conflict_lost_here_moves_the_local_file_to_the_conflict_copy() -> None:
    v1 = put("f.txt", b"base", 1, A)
    mine = put("f.txt", b"mine", 2, A, v1.stamp)
    theirs = put("f.txt", b"theirs", 2, B, v1.stamp)
    s = FolderState.merge([v1, mine, theirs])
    cp = conflict_path("f.txt", A, mine.mtime)
    local = {"f.txt": EDITED}
    syn = {"f.txt": Synced(mine.stamp, EDITED.size, EDITED.mtime, mine.content)}
    assert plan(s, local, syn) == [MoveLocal("f.txt", cp, EDITED, s.files[cp]),
                                   Download("f.txt", s.files["f.txt"], None)]


def test_a_remote_rename_moves_the_local_file() -> None:
    v1 = put("a/x", b"data", 1, A)
    s = FolderState.merge([v1, rename(v1, "b/y", 2, B)])
    syn = {"a/x": Synced(v1.stamp, OLD.size, OLD.mtime, v1.content)}
    assert plan(s, {"a/x": OLD}, syn) == [MoveLocal("a/x", "b/y", OLD, s.files["b/y"])]


def test_ignored_paths_are_left_alone() -> None:
    s = FolderState.merge([put("x.tmp", b"abc", 1, A)])
    assert plan(s, {"y.tmp": EDITED}, {}, ignored=lambda p: p.endswith(".tmp")) == []


def test_order_moves_downloads_removals_records() -> None:
    v1, v2 = put("gone", b"1", 1, A), put("changed", b"2", 2, A)
    s = FolderState.merge([v1, v2, delete("gone", 3, B, v1.stamp), put("changed", b"3", 4, B, v2.stamp),
                           put("fresh", b"4", 5, B)])
    local = {"gone": OLD, "changed": OLD, "mine": EDITED}
    syn = {"gone": Synced(v1.stamp, 3, 111, b"g" * 32), "changed": Synced(v2.stamp, 3, 111, b"c" * 32)}
    kinds = [type(a).__name__ for a in plan(s, local, syn)]
    assert kinds == ["Download", "Download", "RemoveLocal", "RecordPut"]
