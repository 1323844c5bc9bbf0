"""Fixtures of the end-to-end tests: daemon processes, stopped at the end of each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.daemons import NO_DISCOVERY, Daemon


@pytest.fixture
async def daemons(tmp_path) -> AsyncIterator:
    """``await daemons("a")`` starts a daemon with home ``tmp_path / "a"`` (no DHT, no LAN)."""
    started: list[Daemon] = []

    async def start(name: str, extra: list[str] | None = None, *, config: list[str] | None = None,
                    **kw: object) -> Daemon:
        """``config``: lines of the home's config.toml; ``kw``: Daemon's ``host``/``wrap``."""
        home = tmp_path / name
        if config:
            home.mkdir(parents=True, exist_ok=True)
            (home / "config.toml").write_text("".join(f"{line}\n" for line in config))
        d = await Daemon(home, extra if extra is not None else NO_DISCOVERY, **kw).start()  # type: ignore[arg-type]
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop()
