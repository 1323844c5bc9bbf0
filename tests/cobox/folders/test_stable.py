"""The stable-file wait (cobox.folders.stable): a file is recorded only once its size and mtime
held still over two looks ``interval`` apart, or its mtime is ``interval`` old. Fake clocks, no
sleeps."""

import pytest

from cobox.folders.model import Stamp
from cobox.folders.plan import Download, LocalFile, RecordDelete, RecordPut
from cobox.folders.stable import StableFiles

from .helpers import A

S = 10**9
NOW = 1_700_000_000 * S  # the wall clock, ns


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = NOW

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += int(seconds * S)


def make(interval: float = 1.0) -> tuple[StableFiles, Clocks]:
    c = Clocks()
    return StableFiles(interval, monotonic=lambda: c.mono, wall=lambda: c.wall), c


def put(path: str, size: int, mtime: int) -> RecordPut:
    return RecordPut(path, None, LocalFile(size, mtime))


def test_a_file_being_written_is_recorded_only_once_it_holds_still():
    s, c = make()
    # just created, 0 bytes: not recorded, look again in one interval
    assert s.admit([put("f", 0, c.wall)]) == ([], 1.0)
    c.advance(0.5)
    grown = put("f", 4096, c.wall)  # being written: size and mtime moved, the wait starts again
    assert s.admit([grown]) == ([], 1.0)
    c.advance(0.6)
    assert s.admit([grown]) == ([], pytest.approx(0.4))  # unchanged, but not an interval since first seen so
    c.advance(0.4)
    assert s.admit([grown]) == ([grown], None)  # two looks an interval apart saw the same file
    assert s.waiting == 0


def test_an_old_mtime_is_stable_at_once_and_other_actions_never_wait():
    s, c = make()
    old = put("old", 10, c.wall - 5 * S)
    others = [RecordDelete("gone", Stamp(1, A)), Download("d", None, None)]  # type: ignore[arg-type]
    assert s.admit([old, *others]) == ([old, *others], None)


def test_no_wait_when_turned_off_and_forgotten_files_do_not_pile_up():
    off, c = make(0.0)
    fresh = put("f", 1, c.wall)
    assert off.admit([fresh]) == ([fresh], None)
    s, c = make()
    assert s.admit([put("a", 1, c.wall), put("b", 1, c.wall)]) == ([], 1.0)
    assert s.waiting == 2
    assert s.admit([put("a", 1, c.wall)]) == ([], 1.0)  # b was recorded elsewhere or vanished
    assert s.waiting == 1 and set(s.looks) == {"a"}


def test_two_looks_decide_when_the_mtime_cannot_a_future_mtime_from_a_skewed_clock():
    s, c = make()
    future = put("f", 7, c.wall + 3600 * S)
    assert s.admit([future]) == ([], 1.0)
    c.advance(0.999)
    assert s.admit([future])[0] == []
    c.advance(0.001)
    assert s.admit([future]) == ([future], None)
