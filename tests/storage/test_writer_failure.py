"""A writer task that fails (here: an ``on_abort`` callback raising) fails loudly: the jobs it
held and every later submit fail at once with ``WriterFailedError``; ``watch()`` raises it."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from storage.db import WriteJob
from storage.errors import StoreClosedError, WriterFailedError

BAD = "INSERT INTO no_such_table VALUES (?)"  # makes the transaction fail, so on_abort runs


async def test_a_raising_on_abort_fails_pending_and_later_submits_fast(open_store):
    store = await open_store()
    feed = await store.create_feed()
    writer = store.writer
    aborted: list[str] = []

    def raising_abort() -> None:
        aborted.append("raising")
        raise RuntimeError("abort callback bug")

    bad = WriteJob(statements=[(BAD, [(1,)])], on_abort=raising_abort)
    neighbour = WriteJob(statements=[(BAD, [(2,)])], on_abort=lambda: aborted.append("neighbour"))
    async with asyncio.timeout(10):
        results = await asyncio.gather(writer.submit(bad), writer.submit(neighbour), return_exceptions=True)
    # Both jobs of the failed batch were finished with the storage error, both aborts ran.
    assert all(isinstance(r, Exception) for r in results), results
    assert sorted(aborted) == ["neighbour", "raising"]
    async with asyncio.timeout(10):
        with pytest.raises(WriterFailedError, match="abort callback raised RuntimeError: abort callback bug"):
            await writer.watch()
    # Every later write fails at once instead of hanging.
    async with asyncio.timeout(10):
        with pytest.raises(WriterFailedError):
            await feed.append([b"after"])
        with pytest.raises(StoreClosedError):  # WriterFailedError is a StoreClosedError
            await store.put_record("scope", "k", b"v")
    assert writer.failure is not None and writer.failure.code == "writer_failed"


async def test_jobs_queued_behind_a_dying_writer_are_failed_not_left_waiting(open_store, monkeypatch):
    store = await open_store()
    writer = store.writer
    feed = await store.create_feed()
    await feed.append([b"first"])  # the writer works

    async def broken_commit(jobs):
        raise sqlite3.InterfaceError("a bug in the writer")  # not a mapped error: the task dies

    monkeypatch.setattr(writer, "_commit", broken_commit)
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(feed.append([b"x"]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, WriterFailedError) for r in results), results
    async with asyncio.timeout(10):
        with pytest.raises(WriterFailedError, match="InterfaceError"):
            await writer.watch()


async def test_watch_returns_when_the_store_closes(open_store):
    store = await open_store()
    watching = asyncio.create_task(store.writer.watch())
    await store.close()
    async with asyncio.timeout(10):
        await watching  # no error: a closed writer is not a failure
