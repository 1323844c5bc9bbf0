"""The rate limiter behind key recovery logins: growing lockouts, a window that decays, and a
bounded table (the service-level attacks are in test_recovery_service.py)."""

from __future__ import annotations

import pytest

from cobox.backup.keyring import RateLimiter
from cobox.errors import RateLimitedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_locks_out_with_growing_delays():
    clock = Clock()
    rl = RateLimiter(max_failures=5, window=600, base_lockout=60, max_lockout=3600, clock=clock)
    for _ in range(4):
        rl.check("alice")
        rl.failure("alice")
    rl.check("alice")
    rl.failure("alice")
    with pytest.raises(RateLimitedError) as e:
        rl.check("alice")
    assert e.value.retry_after == 60
    rl.check("bob")  # other names are not affected
    delays = []
    for _ in range(4):
        clock.now += rl.retry_after("alice")
        rl.check("alice")
        for _ in range(5):
            rl.failure("alice")
        delays.append(rl.retry_after("alice"))
    assert delays == [120, 240, 480, 960]
    for _ in range(3):
        clock.now += rl.retry_after("alice")
        for _ in range(5):
            rl.failure("alice")
    assert rl.retry_after("alice") == 3600  # capped
    clock.now += 3600
    rl.success("alice")
    rl.check("alice")
    rl.failure("alice")
    assert rl.retry_after("alice") == 0


def test_rate_limiter_window_and_decay():
    clock = Clock()
    rl = RateLimiter(max_failures=5, window=600, base_lockout=60, max_lockout=3600, clock=clock)
    for _ in range(4):
        rl.failure("alice")
    clock.now += 600  # the old failures leave the window
    for _ in range(4):
        rl.failure("alice")
    rl.check("alice")
    rl.failure("alice")
    assert rl.retry_after("alice") == 60
    clock.now += 3601 + 60  # quiet for longer than max_lockout: the level starts over
    for _ in range(5):
        rl.failure("alice")
    assert rl.retry_after("alice") == 60


def test_rate_limiter_bounds_its_memory():
    clock = Clock()
    rl = RateLimiter(max_names=10, clock=clock)
    for i in range(100):
        clock.now += 1
        rl.failure(f"user{i}")
    assert len(rl._entries) <= 10
