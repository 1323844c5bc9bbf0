"""Token buckets and the device's rate limiter on a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from networker.ratelimit import MIN_BURST, DeviceLimit, RateLimiter, RateLimits, TokenBucket

A = bytes([1]) * 32
B = bytes([2]) * 32


def drain(bucket_take: Callable[[int, float], float], seconds: float, chunk: int = 16384) -> int:
    """Bytes a sender that sleeps exactly what the bucket says gets through in ``seconds``."""
    now, sent = 0.0, 0
    for _ in range(10_000_000):
        wait = bucket_take(chunk, now)
        now += wait
        if now > seconds:
            break
        sent += chunk
    return sent


def test_a_bucket_lets_through_its_rate_plus_its_burst() -> None:
    rate = 100_000
    bucket = TokenBucket(rate, 0.0)
    sent = drain(bucket.take, 3.0)
    assert bucket.burst == rate * 0.05
    assert rate * 3 - 16384 <= sent <= rate * 3 + bucket.burst + 16384


def test_zero_is_unlimited_and_counts_nothing() -> None:
    bucket = TokenBucket(0, 0.0)
    assert all(bucket.take(10 ** 9, 0.0) == 0.0 for _ in range(5))


def test_debt_makes_the_next_caller_wait_for_the_first() -> None:
    bucket = TokenBucket(10_000, 0.0)  # burst: MIN_BURST (500 bytes would be less)
    assert bucket.burst == MIN_BURST
    assert bucket.take(MIN_BURST, 0.0) == 0.0
    assert bucket.take(10_000, 0.0) == pytest.approx(1.0)
    assert bucket.take(10_000, 0.0) == pytest.approx(2.0)  # queued behind the first
    assert bucket.take(0, 3.0) == 0.0  # paid off by t=2; credit since then, capped at the burst
    assert bucket.tokens == MIN_BURST


def test_a_bucket_never_saves_more_than_its_burst() -> None:
    bucket = TokenBucket(100_000, 0.0)
    bucket.take(0, 1000.0)
    assert bucket.tokens == bucket.burst
    assert bucket.take(int(bucket.burst) + 100_000, 1000.0) == pytest.approx(1.0)


def test_a_rate_change_keeps_debt_and_caps_credit() -> None:
    bucket = TokenBucket(100_000, 0.0)
    bucket.take(105_000, 0.0)  # 100 000 in debt: 1 s at the old rate
    bucket.set_rate(50_000, 0.0)
    assert bucket.take(0, 0.0) == pytest.approx(2.0)  # the same debt at half the rate
    bucket.set_rate(0, 0.0)
    assert bucket.take(10 ** 9, 0.0) == 0.0
    with pytest.raises(ValueError):
        bucket.set_rate(-1, 0.0)


def test_lan_connections_skip_the_device_wide_limits_unless_limit_lan() -> None:
    limiter = RateLimiter(RateLimits(send=10_000, recv=10_000), 0.0)
    lan, wan = limiter.lane(A, lan=True), limiter.lane(B, lan=False)
    assert all(lan.sending(10 ** 6, 0.0) == 0.0 for _ in range(3))
    assert wan.sending(10_000 + MIN_BURST, 0.0) == pytest.approx(1.0)
    assert wan.received(10_000 + MIN_BURST, 0.0) == pytest.approx(1.0)
    limiter.configure(RateLimits(send=10_000, recv=10_000, limit_lan=True), 0.0)
    assert lan.sending(10_000, 0.0) == pytest.approx(2.0)  # the same bucket as wan's sends now


def test_a_device_limit_applies_on_the_lan_and_on_top_of_the_device_wide_one() -> None:
    limiter = RateLimiter(RateLimits(send=100_000, devices=(DeviceLimit(A, send=10_000),)), 0.0)
    a_lan = limiter.lane(A, lan=True)
    assert a_lan.sending(10_000 + MIN_BURST, 0.0) == pytest.approx(1.0)
    assert a_lan.received(10 ** 6, 0.0) == 0.0  # no receive limit of its own, LAN exempt
    a_wan = limiter.lane(A, lan=False)
    b_wan = limiter.lane(B, lan=False)
    assert b_wan.sending(int(limiter.send.burst), 0.0) == 0.0
    # a_wan pays the slower of the two: its own bucket (1 s more of debt) over the shared one
    assert a_wan.sending(10_000, 0.0) == pytest.approx(2.0)


def test_configure_applies_to_open_lanes_and_drops_removed_devices() -> None:
    limiter = RateLimiter(RateLimits(devices=(DeviceLimit(A, recv=1000),)), 0.0)
    lane = limiter.lane(A, lan=False)
    assert lane.received(MIN_BURST + 1000, 0.0) == pytest.approx(1.0)
    limiter.configure(RateLimits(), 0.0)
    assert lane.received(10 ** 9, 0.0) == 0.0
    limiter.configure(RateLimits(recv=2000), 0.0)
    assert lane.received(MIN_BURST + 2000, 0.0) == pytest.approx(1.0)


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimits(send=-1)
    with pytest.raises(ValueError):
        RateLimits(devices=(DeviceLimit(A, send=1), DeviceLimit(A, recv=1)))
    with pytest.raises(ValueError):
        DeviceLimit(b"short", send=1)
