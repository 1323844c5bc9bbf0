"""Fixtures of the end-to-end tests: daemon processes, stopped at the end of each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.daemons import NO_DISCOVERY, Daemon


@pytest.fixture
async def daemons(tmp_path) -> AsyncIterator:
    """``await daemons("a")`` starts a daemon with home ``tmp_path / "a"`` (no DHT, no LAN)."""
    started: list[Daemon] = []

    async def start(name: str, extra: list[str] | None = None) -> Daemon:
        d = await Daemon(tmp_path / name, extra if extra is not None else NO_DISCOVERY).start()
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop()
