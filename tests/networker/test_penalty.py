"""The penalty box without sockets: a fake clock, offences, refusals."""

from __future__ import annotations

import pytest

from networker.penalty import PenaltyBox, PenaltyPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_offence_is_free_then_refusals_double_up_to_the_cap():
    clock = Clock()
    box: PenaltyBox[bytes] = PenaltyBox(PenaltyPolicy(base=10, cap=600), clock=clock)
    peer = b"p" * 32
    assert box.offend(peer) == 0 and box.refused_for(peer) == 0
    refusals = []
    for _ in range(9):
        refusals.append(box.offend(peer))
        clock.now += refusals[-1]  # comes back exactly when the refusal ends
        assert box.refused_for(peer) == 0
    assert refusals == [10, 20, 40, 80, 160, 320, 600, 600, 600]


def test_refused_while_the_refusal_runs_and_only_that_key():
    clock = Clock()
    box: PenaltyBox[str] = PenaltyBox(PenaltyPolicy(base=10, cap=600), clock=clock)
    box.offend("192.0.2.1")
    box.offend("192.0.2.1")
    assert box.refused_for("192.0.2.1") == 10
    assert box.refused_for("192.0.2.2") == 0
    clock.now += 9.5
    assert box.refused_for("192.0.2.1") == pytest.approx(0.5)
    clock.now += 0.5
    assert box.refused_for("192.0.2.1") == 0
    assert box.offences("192.0.2.1") == 2


def test_an_offence_during_a_refusal_never_shortens_it():
    clock = Clock()
    box: PenaltyBox[str] = PenaltyBox(PenaltyPolicy(base=100, cap=100, free=0), clock=clock)
    box.offend("a")
    clock.now += 90
    box.offend("a")  # capped at 100 from now: ends later, not earlier
    assert box.refused_for("a") == 100


def test_offences_are_forgotten_after_a_quiet_while():
    clock = Clock()
    box: PenaltyBox[str] = PenaltyBox(PenaltyPolicy(base=10, cap=600, forget=3600), clock=clock)
    for _ in range(4):
        box.offend("a")
    clock.now += 3600
    assert box.offences("a") == 0
    assert box.offend("a") == 0  # a free one again
    assert box.offend("a") == 10


def test_memory_is_bounded_least_recent_offender_first():
    clock = Clock()
    box: PenaltyBox[int] = PenaltyBox(PenaltyPolicy(max_keys=100), clock=clock)
    box.offend(-1)
    box.offend(-1)
    for k in range(1000):
        box.offend(k)
        if k == 50:
            box.offend(-1)  # refreshed: stays while older keys are dropped
    assert len(box) == 100
    assert box.offences(0) == 0
    assert box.offences(999) == 1


def test_free_zero_refuses_at_the_first_offence_and_bad_policies_are_refused():
    clock = Clock()
    box: PenaltyBox[str] = PenaltyBox(PenaltyPolicy(base=0.5, cap=2, free=0), clock=clock)
    assert box.offend("a") == 0.5
    for bad in (dict(base=0), dict(base=10, cap=5), dict(free=-1), dict(forget=0), dict(max_keys=0)):
        with pytest.raises(ValueError):
            PenaltyPolicy(**bad)
