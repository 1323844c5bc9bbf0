"""The gate between a folder's plan and what its round carries out (cobox.folders.gate):
requests are checked against the folder's type, carried out by the next round, answered at
its end, and retried by the round after when one fails midway."""

import asyncio

import pytest

from cobox.errors import UsageError
from cobox.folders.gate import Gate, ask
from cobox.folders.kinds import FolderKind
from cobox.folders.merge import FolderState
from cobox.folders.plan import LocalFile, RecordPut, Synced

from .helpers import B, put

A1 = put("a", b"one", 1, B)
STATE = FolderState.merge([A1])
SYNCED = {"a": Synced(A1.stamp, 3, A1.mtime, A1.content)}
EDITED = {"a": LocalFile(5, 9, content=b"\x01" * 32)}


async def test_requests_are_checked_against_the_type():
    woken = []
    gate = Gate(lambda: woken.append(1))
    for what in ("override", "revert"):
        with pytest.raises(UsageError, match=f"{what} is for a"):
            gate.request(what)
    with pytest.raises(UsageError):
        gate.request("explode")
    gate.request("rescan")
    assert woken == [1]


async def test_an_override_is_carried_out_by_the_next_round_and_retried_after_a_failed_one():
    gate = Gate(lambda: None, kind=FolderKind.SEND_ONLY)
    newer = put("a", b"remote", 2, B, A1.stamp)
    state = FolderState.merge([A1, newer])  # a remote edit, held back by send-only
    assert gate.admit(state, {"a": LocalFile(3, A1.mtime)}, SYNCED, []) == [] and gate.held == []
    fut = gate.request("override")
    override = [RecordPut("a", newer.stamp, LocalFile(3, A1.mtime))]
    assert gate.admit(state, {"a": LocalFile(3, A1.mtime)}, SYNCED, []) == override
    assert not fut.done()  # the round has not ended
    # that round failed: the next one carries the override out again, then answers
    assert gate.admit(state, {"a": LocalFile(3, A1.mtime)}, SYNCED, []) == override
    gate.round_done()
    assert fut.done()


async def test_receive_only_holds_local_changes_back_and_ask_answers_after_the_round():
    gate = Gate(lambda: None, kind=FolderKind.RECEIVE_ONLY)
    assert gate.admit(STATE, EDITED, SYNCED, [RecordPut("a", A1.stamp, EDITED["a"])]) == []
    assert gate.status() == {"type": "receive-only", "out_of_sync": 1, "out_of_sync_paths": ["a"],
                             "waiting_stable": 0}
    asked = asyncio.ensure_future(ask(gate, "revert", 10))
    await asyncio.sleep(0)
    actions = gate.admit(STATE, EDITED, SYNCED, [])
    assert [type(a).__name__ for a in actions] == ["Download"]
    gate.round_done()
    assert await asked is True
    assert await ask(gate, "rescan", 0.01) is False  # no round came: still asked


async def test_a_file_waiting_to_be_stable_gets_a_round_of_its_own():
    woken = asyncio.Event()
    gate = Gate(woken.set, stable_wait=0.05)
    fresh = LocalFile(1, 10**30)  # an mtime in the future: only two looks decide
    assert gate.admit(STATE, {"b": fresh}, SYNCED, [RecordPut("b", None, fresh)]) == []
    assert gate.status()["waiting_stable"] == 1
    await asyncio.wait_for(woken.wait(), 10)  # the gate asked for a round: nothing else would come
    assert gate.admit(STATE, {"b": fresh}, SYNCED, [RecordPut("b", None, fresh)]) == [RecordPut("b", None, fresh)]
