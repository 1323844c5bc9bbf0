"""Child process for test_daemon_lifecycle.py: the real daemon (``cobox.cli daemon ARGS``), with
one fault injected into the store writer: once the file ``<home>/trip`` exists, every commit fails
and every job's ``on_abort`` callback raises (a bug in a callback, as the issue saw it).

Usage: python -m tests.integration.fatal_writer --home HOME daemon [daemon options]
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from cobox import cli
from storage import db


class FailingConnection:
    """The writer's connection, failing every statement (the rollback still goes through)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def execute(self, *_a: object) -> None:
        raise sqlite3.OperationalError("disk I/O error (injected by the test)")

    async def _execute(self, *_a: object) -> None:  # what storage.db.in_thread calls: a transaction
        raise sqlite3.OperationalError("disk I/O error (injected by the test)")

    async def rollback(self) -> None:
        await self.real.rollback()


def main() -> int:
    trip = Path(sys.argv[sys.argv.index("--home") + 1]) / "trip"
    original = db.Writer._commit

    async def commit(self: db.Writer, jobs: list[db.WriteJob]) -> None:
        if not trip.exists():
            return await original(self, jobs)

        def raising_abort() -> None:
            raise RuntimeError("the abort callback has a bug")

        for job in jobs:
            job.on_abort = raising_abort
        real, self._conn = self._conn, FailingConnection(self._conn)  # type: ignore[assignment]
        try:
            return await original(self, jobs)
        finally:
            self._conn = real

    db.Writer._commit = commit  # type: ignore[method-assign]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
