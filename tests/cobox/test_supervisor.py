"""The supervisor's logic with fake services, a fake sleep and a fake clock (no sockets, no timing)."""

from __future__ import annotations

import asyncio

import pytest

from cobox.errors import FatalServiceError
from cobox.supervisor import Backoff, Supervisor, hold


class FakeTime:
    """A clock that only moves when the supervisor sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


def make(t: FakeTime, **kw: object) -> Supervisor:
    return Supervisor(backoff=Backoff(base=1.0, factor=2.0, cap=5.0, jitter=0.5, reset_after=100.0),
                      sleep=t.sleep, clock=t.clock, rand=lambda: 0.0, **kw)  # type: ignore[arg-type]


async def settle(sup: Supervisor, name: str, state: str, rounds: int = 200) -> None:
    for _ in range(rounds):
        info = sup.get(name)
        if info is not None and info.state == state:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{name} never reached {state}: {sup.get(name)}")


def test_backoff_delays_are_exponential_capped_and_jittered():
    b = Backoff(base=1.0, factor=2.0, cap=5.0, jitter=0.5)
    assert [b.delay(n, 0.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.delay(3, 0.999) == pytest.approx(4.0 * 0.5005)
    assert all(2.0 <= b.delay(3, r / 10) <= 4.0 for r in range(10))


async def test_a_failing_service_restarts_with_backoff_and_keeps_last_error():
    t = FakeTime()
    calls = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise OSError(f"disk gone #{calls}")
        healthy.set()
        await asyncio.Event().wait()

    async with make(t) as sup:
        sup.spawn("folder:g", flaky, restart="backoff")
        async with asyncio.timeout(10):
            await healthy.wait()
        info = sup.get("folder:g")
        assert info is not None
        assert (info.state, info.restarts) == ("running", 4)
        assert info.last_error == "OSError: disk gone #4"
        assert t.sleeps == [1.0, 2.0, 4.0, 5.0]  # exponential, capped at 5
        assert sup.fatal is None
    assert sup.get("folder:g").state == "stopped"  # type: ignore[union-attr]


async def test_a_long_healthy_run_resets_the_failure_count():
    t = FakeTime()
    calls = 0
    done = asyncio.Event()

    async def service() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            t.now += 500.0  # this run lasts longer than reset_after before it fails
        if calls == 5:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError("boom")

    async with make(t) as sup:
        sup.spawn("s", service, restart="backoff")
        async with asyncio.timeout(10):
            await done.wait()
    assert t.sleeps == [1.0, 2.0, 1.0, 2.0]


async def test_restart_never_leaves_the_service_failed_and_the_others_running():
    t = FakeTime()
    other_cancelled = asyncio.Event()

    async def broken() -> None:
        raise ValueError("bad")

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            other_cancelled.set()

    async with make(t) as sup:
        sup.spawn("other", other)
        sup.spawn("broken", broken)
        await settle(sup, "broken", "failed")
        assert sup.get("broken").last_error == "ValueError: bad"  # type: ignore[union-attr]
        assert sup.get("other").state == "running"  # type: ignore[union-attr]
        assert not other_cancelled.is_set()
        assert sup.fatal is None
    assert other_cancelled.is_set()
    assert t.sleeps == []


async def test_a_fatal_failure_fails_the_supervisor_and_calls_on_fatal():
    t = FakeTime()
    seen: list[FatalServiceError] = []

    async def writer() -> None:
        raise RuntimeError("on_abort raised")

    async with make(t, on_fatal=seen.append) as sup:
        sup.spawn("store", writer, restart="backoff", fatal=True)  # fatal wins over restart
        async with asyncio.timeout(10):
            error = await sup.wait_failed()
    assert seen == [error]
    assert str(error) == "store failed: RuntimeError: on_abort raised; the daemon stopped"
    assert "\n" not in str(error)
    assert sup.get("store").state == "failed"  # type: ignore[union-attr]
    assert t.sleeps == []


async def test_a_fatal_service_that_ends_by_itself_is_a_failure():
    async def watcher() -> None:
        return

    async with make(FakeTime()) as sup:
        sup.spawn("store", watcher, fatal=True)
        async with asyncio.timeout(10):
            error = await sup.wait_failed()
    assert "store failed: ended unexpectedly" in str(error)


async def test_stop_cancels_in_reverse_order_and_leaves_no_task():
    before = asyncio.all_tasks()
    order: list[str] = []

    def service(name: str):
        async def close() -> None:
            order.append(name)
            await asyncio.sleep(0)  # a close that awaits runs to its end before the next one starts

        return lambda: hold(close)

    sup = make(FakeTime())
    await sup.start()
    for name in ("store", "node", "swarm", "api"):
        sup.spawn(name, service(name))
    assert len(asyncio.all_tasks() - before) == 5  # four guards and the runner
    await sup.stop()  # at once: services spawned but not yet started are closed too
    assert order == ["api", "swarm", "node", "store"]
    assert asyncio.all_tasks() - before == set()
    assert [i.state for i in sup.status()] == ["stopped"] * 4
    with pytest.raises(RuntimeError):
        sup.spawn("late", service("late"))


async def test_a_service_in_backoff_is_stopped_without_waiting_out_its_delay():
    before = asyncio.all_tasks()
    sleeping = asyncio.Event()

    async def never_wakes(_delay: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    async def broken() -> None:
        raise OSError("no")

    sup = Supervisor(sleep=never_wakes)
    await sup.start()
    sup.spawn("s", broken, restart="backoff")
    async with asyncio.timeout(10):
        await sleeping.wait()
    assert sup.get("s").state == "backoff"  # type: ignore[union-attr]
    await sup.stop()
    assert sup.get("s").state == "stopped"  # type: ignore[union-attr]
    assert asyncio.all_tasks() - before == set()


async def test_cancel_one_service_and_reuse_its_name():
    closed: list[int] = []

    def gen(n: int):
        async def close() -> None:
            closed.append(n)

        return lambda: hold(close)

    async with make(FakeTime()) as sup:
        sup.spawn("folder:g", gen(1))
        with pytest.raises(ValueError):
            sup.spawn("folder:g", gen(2))
        await sup.cancel("folder:g")  # cancelled before its first step: it still closes
        assert closed == [1] and sup.get("folder:g") is None
        sup.spawn("folder:g", gen(2))
        await asyncio.sleep(0)
    assert closed == [1, 2]


async def test_a_close_that_fails_while_stopping_is_recorded_not_raised():
    async def close() -> None:
        raise OSError("socket already gone")

    async with make(FakeTime()) as sup:
        sup.spawn("api", lambda: hold(close))
        await asyncio.sleep(0)
    info = sup.get("api")
    assert info is not None and (info.state, info.last_error) == ("stopped", "OSError: socket already gone")
    assert sup.fatal is None


async def test_hold_closes_when_its_watch_fails():
    closed = asyncio.Event()

    async def watch() -> None:
        raise RuntimeError("writer died")

    async def close() -> None:
        closed.set()

    with pytest.raises(RuntimeError):
        await hold(close, watch)
    assert closed.is_set()


async def test_a_service_that_swallows_its_cancellation_is_cancelled_again():
    before = asyncio.all_tasks()
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed += 1  # as asyncio.wait_for on 3.11 can: the cancellation is lost
        await asyncio.Event().wait()  # the second cancellation ends it

    sup = Supervisor(cancel_grace=0.01)
    await sup.start()
    sup.spawn("stubborn", stubborn)
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await sup.stop()
    assert swallowed == 1
    assert sup.get("stubborn").state == "stopped"  # type: ignore[union-attr]
    assert asyncio.all_tasks() - before == set()
