"""Fixtures for storage tests: stores in a temp dir that are always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest_asyncio

from storage import Store
from storage.feed import Feed

OpenStore = Callable[..., Awaitable[Store]]


@pytest_asyncio.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """``await open_store("name", readonly=False)``: a store under tmp_path, closed at teardown
    (an aiosqlite connection left open hangs the interpreter at exit)."""
    opened: list[Store] = []

    async def open_(name: str = "a", **kwargs: object) -> Store:
        store = await Store.open(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


async def deliver(src: Feed, dst: Feed, start: int, end: int) -> None:
    """Copy entries [start, end) with their proof from ``src`` to the replica ``dst``."""
    entries = await src.get_range(start, end)
    proof = await src.proof(start, end, upgrade_from=dst.known_length)
    await dst.put_range(start, entries, proof)
