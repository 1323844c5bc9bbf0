"""The folder merge off the event loop: a device catching up on 100,000 operations (read from
its group's feed, decrypted, decoded and merged by ``FolderSync.read_ops``) never stalls the
event loop by more than 100 ms (issue 11, item 9, asks for exactly this measurement).

A ticker task sleeps 5 ms at a time while ``read_ops`` runs and measures, per tick:

- the CPU time the loop thread itself used between two ticks (``time.thread_time``): work
  done *on* the loop;
- the *lag*: how much later than asked it woke, counted only as far as this process's own
  threads were computing meanwhile (``time.process_time``): the loop thread's own work plus
  the worker holding the GIL. On a shared machine (2 cores, other processes) the raw gap also
  holds stretches in which no thread of this process ran at all, which no folder work can
  cause or cure.

Both must stay under 100 ms. The raw wall-clock gap is printed beside them.

The ticker itself must not let go of the GIL between its readings: each call that does (a file
read) waits up to a switch interval (5 ms) to have it back from the busy worker, and reading
``/proc/self/task/*/schedstat`` for the CPU time took 20-180 ms of wall time a tick that way
(measured), which the test then counted as the merge's stall (CI failed at 113 ms).
``clock_gettime`` keeps the GIL, so the readings bracket the sleep alone."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from pathlib import Path

from cobox.entries import encode_op
from cobox.folders.merge import FolderState
from cobox.folders.model import Op, Put
from cobox.folders.sync import FolderSync
from cobox.groups import Group
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from storage import Store

from .helpers import T0, ref

N = 100_000
TICK = 0.005


def history(author: bytes, n: int) -> list[Op]:
    """``n`` puts: 4 of 5 create a file, the fifth edits the file created just before."""
    ops: list[Op] = []
    for k in range(n):
        if k % 5 == 4:
            prev = ops[-1]
            ops.append(Put(prev.path, 3, 0o644, T0 + k, (ref(b"new", k),), k + 1, author, prev.stamp))
        else:
            ops.append(Put(f"d{k // 500}/f{k}", 3, 0o644, T0 + k, (ref(b"abc", k),), k + 1, author, None))
    return ops


async def max_lag(work: Awaitable[object], limit: float = 100.0) -> tuple[float, float, float]:
    """Run ``work`` beside a ticker: the worst (lag, loop CPU, raw gap) of a tick, in seconds."""
    task = asyncio.ensure_future(work)
    lag = cpu = raw = 0.0
    deadline = time.monotonic() + limit
    while not task.done():
        assert time.monotonic() < deadline, "the merge did not finish"
        last, last_cpu, last_busy = time.perf_counter(), time.thread_time(), time.process_time()
        await asyncio.sleep(TICK)
        now, now_cpu, now_busy = time.perf_counter(), time.thread_time(), time.process_time()
        gap = now - last - TICK
        raw = max(raw, gap)
        lag = max(lag, min(gap, now_busy - last_busy))
        cpu = max(cpu, now_cpu - last_cpu)
    await task
    return lag, cpu, raw


def check(lag: float, cpu: float, raw: float) -> None:
    print(f"worst tick: lag {lag * 1000:.0f} ms, loop CPU {cpu * 1000:.0f} ms, raw gap {raw * 1000:.0f} ms")
    assert cpu < 0.1, f"folder work ran {cpu * 1000:.0f} ms on the event loop"
    assert lag < 0.1, f"the event loop stalled {lag * 1000:.0f} ms (raw gap {raw * 1000:.0f} ms)"


async def test_catching_up_on_100k_ops_never_stalls_the_loop_100ms(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "home")
    try:
        group = Group(store, "g", GroupKeys.from_address(os.urandom(32)), DeviceIdentity.generate(), 0.0)
        await group.load()
        ops = history(group.device_id, N)
        for k in range(0, N, 5000):
            await group.append_records([encode_op(op) for op in ops[k:k + 5000]])
        del ops  # what the device holds is its feeds, not the writer's objects
        (tmp_path / "folder").mkdir()
        sync = FolderSync(group, tmp_path / "folder")

        lag = await max_lag(sync.read_ops())

        check(*lag)
        expected = FolderState.merge(history(group.device_id, N))
        assert len(sync.state.files) == len(expected.files) == N * 4 // 5
        assert sync.state.files == expected.files
        # a few more ops later: merged incrementally, on top
        more = [Put("late", 3, 0o644, T0, (ref(b"abc", 1),), N + 1, group.device_id, None)]
        await group.append_records([encode_op(op) for op in more])
        assert (await sync.read_ops()).files["late"].stamp == more[0].stamp
    finally:
        await store.close()


async def test_merging_100k_decoded_ops_in_one_batch_never_stalls_the_loop_100ms(tmp_path: Path) -> None:
    """The same code path fed already-decoded ops (what ``_take`` leaves for the merge)."""
    store = await Store.open(tmp_path / "home")
    try:
        group = Group(store, "g", GroupKeys.from_address(os.urandom(32)), DeviceIdentity.generate(), 0.0)
        (tmp_path / "folder").mkdir()
        sync = FolderSync(group, tmp_path / "folder")
        sync._ops.extend(history(group.device_id, N))
        lag = await max_lag(sync.read_ops())
        assert len(sync.state.files) == N * 4 // 5 and not sync._ops
        check(*lag)
    finally:
        await store.close()
