"""Folder types (cobox.folders.kinds), on exact action lists: send-only holds back remote
changes and its override makes the group take the local state; receive-only holds back local
changes and its revert makes the disk take the group's."""

import pytest

from cobox.errors import UsageError
from cobox.folders.kinds import FolderKind, override, restrict, revert
from cobox.folders.merge import FolderState
from cobox.folders.plan import Download, LocalFile, RecordDelete, RecordPut, RemoveLocal, Synced, plan

from .helpers import A, B, delete, put

A1 = put("a", b"one", 1, B)
A2 = put("a", b"two", 3, B, A1.stamp)  # a remote edit not applied here yet
B1 = put("b", b"bee", 1, B)
D1 = put("d", b"dee", 2, B)  # a remote new file
STATE = FolderState.merge([A1, A2, B1, D1])
SYNCED = {"a": Synced(A1.stamp, 3, A1.mtime, A1.content), "b": Synced(B1.stamp, 3, B1.mtime, B1.content)}
LOCAL = {
    "a": LocalFile(3, A1.mtime),  # unchanged since synced (content not hashed)
    "b": LocalFile(9, 5, content=b"\x01" * 32),  # edited here
    "c": LocalFile(4, 6, content=b"\x02" * 32),  # new here
}


def test_the_plan_both_ways_and_what_each_type_holds_back():
    actions = plan(STATE, LOCAL, SYNCED)
    assert actions == [Download("a", STATE.files["a"], LOCAL["a"]), Download("d", STATE.files["d"], None),
                       RecordPut("b", B1.stamp, LOCAL["b"]), RecordPut("c", None, LOCAL["c"])]
    assert restrict(FolderKind.SEND_RECEIVE, actions) == (actions, [])
    assert restrict(FolderKind.SEND_ONLY, actions) == (actions[2:], ["a", "d"])
    assert restrict(FolderKind.RECEIVE_ONLY, actions) == (actions[:2], ["b", "c"])


def test_override_records_the_local_state_on_top_of_the_groups():
    actions = override(STATE, LOCAL, SYNCED)
    assert actions == [RecordPut("a", A2.stamp, LOCAL["a"]), RecordPut("b", B1.stamp, LOCAL["b"]),
                       RecordPut("c", None, LOCAL["c"]), RecordDelete("d", D1.stamp)]
    # carried out (as the daemon would record them), the group shows exactly the local files, no conflicts
    state = STATE.copy()
    contents = {"a": b"one", "b": b"local b", "c": b"new"}
    ops = []
    for k, act in enumerate(actions):
        clock = state.next_clock() + k
        if isinstance(act, RecordPut):
            ops.append(put(act.path, contents[act.path], clock, A, act.base))
        else:
            ops.append(delete(act.path, clock, A, act.base))
    state.update(ops)
    assert sorted(state.files) == ["a", "b", "c"] and not state.conflicts()
    assert state.files["a"].content == A1.content  # the local (old) content won over the remote edit


def test_revert_brings_the_disk_back_to_the_groups_state():
    assert revert(STATE, LOCAL, SYNCED) == [
        Download("a", STATE.files["a"], LOCAL["a"]), Download("b", STATE.files["b"], LOCAL["b"]),
        Download("d", STATE.files["d"], None), RemoveLocal("c", LOCAL["c"])]


def test_nothing_to_do_when_disk_and_group_agree_and_ignored_paths_are_left_alone():
    state = FolderState.merge([A1, B1])
    local = {"a": LocalFile(3, A1.mtime), "b": LocalFile(3, B1.mtime), "x.tmp": LocalFile(1, 1, content=b"\x03" * 32)}
    ignored = lambda p: p.endswith(".tmp")  # noqa: E731
    assert override(state, local, SYNCED, ignored) == []
    assert revert(state, local, SYNCED, ignored) == []


def test_a_type_is_parsed_strictly():
    assert FolderKind.parse("send-only") is FolderKind.SEND_ONLY
    with pytest.raises(UsageError, match="send-receive, send-only, receive-only"):
        FolderKind.parse("sendonly")
